import ArgumentParser
import EStargzCommands
import EStargzCore
import EStargzRemote
import Foundation

struct ImageConvert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert every layer of an image to eStargz (or zstd:chunked) and push (or write) the new image.",
        discussion: """
            Layers get the annotations containerd.io/snapshot/stargz/toc.digest and \
            io.containers.estargz.uncompressed-size; the config gets the new diffIDs. With --zstdchunked \
            layers are zstd:chunked (media type application/vnd.oci.image.layer.v1.tar+zstd) and also get \
            io.containers.zstd-chunked.manifest-checksum and -position, as ctr-remote and nerdctl write them.

            A multi-platform SRC (an OCI index or Docker manifest list) is converted for every platform \
            and DST gets an OCI index referencing the new manifests (a layer shared by platforms is \
            converted once); with --platform only that platform is converted and DST is a single manifest. \
            Index entries for no platform (build attestations) are left out.

            --estargz-external-toc writes the layers without their TOCs and a TOC image named DST's tag + \
            "-esgztoc" (one layer per TOC, annotated containerd.io/snapshot/stargz/layer.digest), as \
            nerdctl and ctr-remote do; --estargz-keep-diff-id then keeps every layer's uncompressed bytes \
            exactly the source's. --estargz-min-chunk-size lets small files share gzip members.

            Progress lines go to stderr when it is a terminal (--progress: always, --quiet: never); \
            the digest of what DST's tag names (manifest or index) is printed on stdout.
            """
    )

    @OptionGroup var endpoints: ImageEndpoints

    @OptionGroup var registry: RegistryOptions

    @OptionGroup var progress: ProgressOptions

    @OptionGroup var layerFormat: LayerFormatOptions

    @Option(help: "A file listing paths to put first in every layer (one per line).")
    var prioritizedFiles: String?

    @Flag(name: .customLong("estargz-external-toc"),
          help: "Leave the TOCs out of the layers and push them as a second image, DST's tag + \"-esgztoc\" (found by ls, cat, mount and the snapshotter with no flag).")
    var externalTOC = false

    @Flag(name: .customLong("estargz-keep-diff-id"),
          help: "With --estargz-external-toc: keep each layer's uncompressed bytes exactly the source tar's, so diffIDs do not change.")
    var keepDiffID = false

    func validate() throws {
        if keepDiffID && !externalTOC { throw ValidationError("--estargz-keep-diff-id must be used with --estargz-external-toc") }
        if keepDiffID && prioritizedFiles != nil { throw ValidationError("--estargz-keep-diff-id cannot reorder files for --prioritized-files") }
    }

    func run() throws {
        var options = ImageConverter.Options()
        layerFormat.apply(to: &options.layer)
        options.externalTOC = externalTOC
        options.layer.keepDiffID = keepDiffID
        if let prioritizedFiles {
            let text = try readTextFile(prioritizedFiles)
            options.layer.prioritizedFiles = text.split(separator: "\n").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
            // A path absent from some layer is normal in an image of several layers.
            options.layer.allowMissingPrioritizedFiles = true
        }
        options.platform = try registry.platform.map { _ in try registry.parsedPlatform() }
        let (source, destination) = try endpoints.locations()
        let client = registry.makeClient()
        defer { try? client.syncShutdown() }
        let finalOptions = options
        let report = progress.reporter
        let result = try runReportingRemoteErrors {
            try runBlocking {
                try await ImageConverter.convert(source: source, destination: destination, client: client, options: finalOptions,
                                                 progress: report)
            }
        }
        print(result.digest)
    }
}
