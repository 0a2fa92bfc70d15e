import ArgumentParser
import EStargzCore

/// `estargz convert`: a tar or tar.gz layer to an eStargz blob.
public struct Convert: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Convert a tar or tar.gz layer into an eStargz (or, with --zstdchunked, zstd:chunked) blob.",
        discussion: """
            Prints the TOC digest (annotate the layer with it) and the diffID; for zstd:chunked also the \
            io.containers.zstd-chunked.manifest-checksum and -position annotations.
            """
    )

    @Argument(help: "The input layer: a .tar or .tar.gz file ('-' reads standard input).")
    var input: String

    @Argument(help: "Where to write the blob.")
    var output: String

    @OptionGroup var layerFormat: LayerFormatOptions

    @Option(help: "A file listing paths to put first (one per line), so a runtime prefetches them.")
    var prioritizedFiles: String?

    @Flag(help: "Print one JSON object with tocDigest, diffID, uncompressedSize, compressedSize, mediaType and annotations.")
    var json = false

    @Option(name: .customLong("estargz-external-toc"),
            help: ArgumentHelp("Leave the TOC out of the blob (it ends with the external-TOC footer) and write it to TOCFILE, a TOC image layer.",
                               valueName: "TOCFILE"))
    var externalTOC: String?

    @Flag(name: .customLong("estargz-keep-diff-id"),
          help: "With --estargz-external-toc: keep the input tar's bytes exactly (the diffID does not change).")
    var keepDiffID = false

    public init() {}

    public func validate() throws {
        if keepDiffID && externalTOC == nil { throw ValidationError("--estargz-keep-diff-id must be used with --estargz-external-toc") }
        if keepDiffID && prioritizedFiles != nil { throw ValidationError("--estargz-keep-diff-id cannot reorder files for --prioritized-files") }
    }

    public func run() throws {
        var options = LayerWriter.Options()
        layerFormat.apply(to: &options)
        options.externalTOC = externalTOC != nil
        options.keepDiffID = keepDiffID
        if let prioritizedFiles {
            let text = try readTextFile(prioritizedFiles)
            options.prioritizedFiles = text.split(separator: "\n").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
        }
        let progress = Progress(label: "convert")
        let result = try runReportingErrors {
            if input == "-" {
                let fd = try createOutput(output + ".partial")
                defer { _ = closeFile(fd) }
                let result = try LayerWriter.convert(input: 0, inputPath: "stdin", output: fd, outputPath: output, options: options) {
                    progress.update(done: $0, total: $1)
                }
                try renameFile(output + ".partial", output)
                return result
            }
            return try LayerWriter.convert(inputPath: input, outputPath: output, options: options) {
                progress.update(done: $0, total: $1)
            }
        }
        progress.finish()
        if let externalTOC, let toc = result.externalTOC {
            try runReportingErrors {
                let fd = try createOutput(externalTOC)
                defer { _ = closeFile(fd) }
                try writeAll(fd, toc, path: externalTOC)
            }
        }
        if json {
            print(JSONText.object([
                ("tocDigest", .string(result.tocDigest.description)),
                ("diffID", .string(result.diffID.description)),
                ("uncompressedSize", .number(result.uncompressedSize)),
                ("compressedSize", .number(result.compressedSize)),
                ("mediaType", .string(options.compression.mediaType)),
                ("annotations", .object(result.annotations.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })),
            ]))
        } else {
            print("TOC digest:        \(result.tocDigest)")
            print("diffID:            \(result.diffID)")
            print("uncompressed size: \(result.uncompressedSize)")
            print("compressed size:   \(result.compressedSize)")
            for (key, value) in result.annotations.sorted(by: { $0.key < $1.key }) {
                print("\(key): \(value)")
            }
        }
    }
}
