import ArgumentParser
import EStargzCommands
import EStargzCore
import EStargzRemote
import Foundation
import LazyFS

struct ImageOptimize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "optimize",
        abstract: "Convert an image to eStargz (or zstd:chunked) with the files a workload reads put first.",
        discussion: """
            Mounts SRC's layers lazily (merged, with a writable overlay on top) and runs the image's own \
            workload chrooted into that tree, as a runtime would start its container: Entrypoint + Cmd, Env, \
            WorkingDir and User from the image's config (--entrypoint, --args, --env, --cwd, --user override \
            them; `-- COMMAND ARGS...` replaces Entrypoint and Cmd), in its own mount namespace (/proc, /dev, \
            /sys and /tmp set up, --mount binds host paths read-only) and a new network namespace without \
            network (--net host for the host's). It records the files the workload opens in order, stops \
            when it exits or after --period, then converts SRC to DST with those files prioritized in every \
            layer, so runtimes prefetch them. Like `ctr-remote image optimize`, without containerd.

            --estargz-external-toc leaves DST's TOCs out of its layers and pushes them as a TOC image, DST's \
            tag + "-esgztoc", as `image convert` does.
            """
    )

    @OptionGroup var endpoints: ImageEndpoints

    @OptionGroup var registry: RegistryOptions

    @OptionGroup var progress: ProgressOptions

    @Option(help: "Stop the workload after this many seconds.")
    var period: Int = 10

    @Option(help: ArgumentHelp("Replace the image's Entrypoint (a JSON array).", valueName: "JSON"))
    var entrypoint: String?

    @Option(help: ArgumentHelp("Replace the image's Cmd (a JSON array).", valueName: "JSON"))
    var args: String?

    @Option(help: ArgumentHelp("Add an environment variable to the image's Env, or replace it (repeatable).", valueName: "KEY=VALUE"))
    var env: [String] = []

    @Option(help: ArgumentHelp("Add the KEY=VALUE lines of FILE to the image's Env (as --env, before it; # comments and blank lines skipped).", valueName: "FILE"))
    var envFile: String?

    @Option(help: ArgumentHelp("Replace the image's WorkingDir.", valueName: "DIR"))
    var cwd: String?

    @Option(help: ArgumentHelp("Replace the image's User (names looked up in the image's etc/passwd and etc/group).", valueName: "USER[:GROUP]"))
    var user: String?

    @Option(help: ArgumentHelp("Bind a host path read-only into the workload's tree (repeatable).", valueName: "SRC:DST"))
    var mount: [String] = []

    @Option(help: ArgumentHelp("The workload's network: none (a new network namespace, only a loopback device) or host.", valueName: "none|host"))
    var net: NetworkMode = .none

    enum NetworkMode: String, ExpressibleByArgument { case none, host }

    @OptionGroup var layerFormat: LayerFormatOptions

    @Flag(name: .customLong("estargz-external-toc"),
          help: "Leave the TOCs out of DST's layers and push them as a second image, DST's tag + \"-esgztoc\" (found by ls, cat, mount and the snapshotter with no flag).")
    var externalTOC = false

    @Argument(parsing: .postTerminator, help: "The workload: COMMAND ARGS... (after --), instead of the image's Entrypoint and Cmd.")
    var command: [String] = []

    func validate() throws {
        guard command.isEmpty || (entrypoint == nil && args == nil) else {
            throw ValidationError("give either -- COMMAND ARGS... or --entrypoint/--args, not both")
        }
        guard period > 0 else { throw ValidationError("--period must be at least 1 second") }
    }

    func run() throws {
        let work = FileManager.default.temporaryDirectory.path + "/estargz-optimize-\(getpid())"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let (source, destination) = try endpoints.locations()
        let client = registry.makeClient()
        defer { try? client.syncShutdown() }
        var options = ImageConverter.Options()
        layerFormat.apply(to: &options.layer)
        options.platform = try registry.parsedPlatform()

        // 1. eStargz layers in a local layout (whatever SRC's layers were), to mount from. Always
        //    gzip at level 1: quick, and step 3 reads them back as its input whatever DST's format.
        let staging = ImageLocation.layout(directory: work + "/staging", tag: "staging")
        var stagingOptions = options
        stagingOptions.layer.compression = .gzip
        stagingOptions.layer.compressionLevel = 1
        let staged = try convert(source, to: staging, client: client, options: stagingOptions)

        // 2. Run the workload on them and record what it reads.
        let oci = try runReportingRemoteErrors { try OCILayout(directory: work + "/staging") }
        let workload = try Workload.make(imageConfig: try runReportingRemoteErrors { try oci.readBlob(staged.images[0].configDigest) },
                                         command: command, entrypoint: entrypoint, args: args, env: try environmentFile() + env, cwd: cwd, user: user,
                                         mounts: mount, hostNetwork: net == .host)
        let accessed = try record(layers: staged, layout: oci, workload: workload, work: work)
        FileHandle.standardError.write(Data("optimize: the workload read \(accessed.count) files\n".utf8))

        // 3. The final image, with those files first in every layer that has them: what the runtime
        //    reads to start the container, then what the workload read.
        options.layer.prioritizedFiles = Self.containerStartFiles + accessed.filter { !Self.containerStartFiles.contains($0) }
        options.layer.allowMissingPrioritizedFiles = true
        options.externalTOC = externalTOC
        let result = try convert(staging, to: destination, client: client, options: options)
        print(result.digest)
    }

    /// The KEY=VALUE lines of --env-file.
    private func environmentFile() throws -> [String] {
        guard let envFile else { return [] }
        guard let text = try? String(contentsOfFile: envFile, encoding: .utf8) else {
            throw ValidationError("--env-file: cannot read \(envFile)")
        }
        return text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }

    /// Files an OCI runtime reads from the image itself before any workload starts: runc looks the
    /// container's user and its groups up in them. The recorded run does not go through a runtime,
    /// so they are added, first: every cold start waits for them (one round trip each when they sit
    /// outside the prioritized region). Layers without them are unaffected.
    static let containerStartFiles = ["etc/passwd", "etc/group"]

    private func convert(_ source: ImageLocation, to destination: ImageLocation, client: RegistryClient,
                         options: ImageConverter.Options) throws -> ImageConverter.Result {
        try runReportingRemoteErrors {
            try runBlocking {
                try await ImageConverter.convert(source: source, destination: destination, client: client, options: options,
                                                 progress: progress.reporter)
            }
        }
    }

    /// Mounts the staged layers merged under a writable overlay, runs the workload in a chroot with
    /// its own mount namespace, and returns the files it opened, in order.
    private func record(layers result: ImageConverter.Result, layout oci: OCILayout, workload: Workload, work: String) throws -> [String] {
        let readers = try runReportingErrors {
            try result.images[0].layers.map { layer -> LayerReader in
                let digest = layer.descriptor.annotations?[StargzAnnotation.tocDigest].flatMap(SHA256Digest.init(parsing:))
                return try LayerReader(source: try FileSource(path: oci.blobPath(layer.descriptor.digest)), tocDigest: digest)
            }
        }
        let lower = work + "/lower", upper = work + "/upper", overlayWork = work + "/work", root = work + "/root"
        for directory in [lower, upper, overlayWork, root] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var options = LazyFileSystem.Options()
        options.accessLogPath = work + "/access.log"
        options.prefetch = false
        // Local blobs: guesses would only inflate headers for nothing.
        options.readAhead = .off
        let fileSystem = try LazyFileSystem(layers: readers, mode: .merged, options: options)
        let mount = try fileSystem.mount(at: lower)
        defer { mount.unmount() }
        try Shell.run("/bin/mount", ["-t", "overlay", "overlay", "-o", "lowerdir=\(lower),upperdir=\(upper),workdir=\(overlayWork)", root])
        defer { _ = try? Shell.run("/bin/umount", ["-l", root]) }
        for directory in ["proc", "dev", "sys", "tmp"] {
            try? FileManager.default.createDirectory(atPath: root + "/" + directory, withIntermediateDirectories: true)
        }
        let process = try workload.process(root: root)
        try process.run()
        let deadline = Date().addingTimeInterval(TimeInterval(period))
        while process.isRunning, Date() < deadline { usleep(50_000) }
        if process.isRunning {
            Workload.stop(process)
            FileHandle.standardError.write(Data("optimize: stopped the workload after \(period) s\n".utf8))
        }
        process.waitUntilExit()
        let log = (try? String(contentsOfFile: work + "/access.log", encoding: .utf8)) ?? ""
        return log.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    }
}

/// Runs a helper program that must succeed.
enum Shell {
    static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            printError("\(executable) \(arguments.joined(separator: " ")) failed with status \(process.terminationStatus)")
            throw ExitCode.failure
        }
    }
}
