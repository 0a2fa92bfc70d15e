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
            Mounts SRC's layers lazily (merged, with a writable overlay on top), runs COMMAND chrooted into \
            that tree in its own mount namespace (/proc, /dev, /sys and /tmp set up), records the files it \
            opens in order, stops when it exits or after --period, then converts SRC to DST with those files \
            prioritized, so runtimes prefetch them. Like `ctr-remote image optimize`, without containerd.
            """
    )

    @OptionGroup var endpoints: ImageEndpoints

    @OptionGroup var registry: RegistryOptions

    @OptionGroup var progress: ProgressOptions

    @Option(help: "Stop the workload after this many seconds.")
    var period: Int = 10

    @OptionGroup var layerFormat: LayerFormatOptions

    @Argument(parsing: .postTerminator, help: "The workload: COMMAND ARGS... (after --).")
    var command: [String] = []

    func validate() throws {
        guard !command.isEmpty else { throw ValidationError("give the workload after --, e.g. -- /usr/bin/python3 -c 'print(1)'") }
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
        let accessed = try record(layers: staged, layout: work + "/staging", work: work)
        FileHandle.standardError.write(Data("optimize: the workload read \(accessed.count) files\n".utf8))

        // 3. The final image, with those files first in every layer that has them: what the runtime
        //    reads to start the container, then what the workload read.
        options.layer.prioritizedFiles = Self.containerStartFiles + accessed.filter { !Self.containerStartFiles.contains($0) }
        options.layer.allowMissingPrioritizedFiles = true
        let result = try convert(staging, to: destination, client: client, options: options)
        print(result.digest)
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
    private func record(layers result: ImageConverter.Result, layout: String, work: String) throws -> [String] {
        let oci = try runReportingRemoteErrors { try OCILayout(directory: layout) }
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
        let fileSystem = try LazyFileSystem(layers: readers, mode: .merged, options: options)
        let mount = try fileSystem.mount(at: lower)
        defer { mount.unmount() }
        try Shell.run("/bin/mount", ["-t", "overlay", "overlay", "-o", "lowerdir=\(lower),upperdir=\(upper),workdir=\(overlayWork)", root])
        defer { _ = try? Shell.run("/bin/umount", ["-l", root]) }
        for directory in ["proc", "dev", "sys", "tmp"] {
            try? FileManager.default.createDirectory(atPath: root + "/" + directory, withIntermediateDirectories: true)
        }
        // A private mount namespace: the mounts vanish with the workload, and the child dies with unshare.
        let script = #"mount -t proc proc "$R/proc" && mount --rbind /dev "$R/dev" && mount -t sysfs sysfs "$R/sys" && mount -t tmpfs tmpfs "$R/tmp" && exec chroot "$R" "$@""#
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["--mount", "--fork", "--kill-child", "--", "/bin/sh", "-c", script, "sh"] + command
        process.environment = ProcessInfo.processInfo.environment.merging(["R": root]) { _, new in new }
        try process.run()
        let deadline = Date().addingTimeInterval(TimeInterval(period))
        while process.isRunning, Date() < deadline { usleep(50_000) }
        if process.isRunning {
            process.terminate()
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
