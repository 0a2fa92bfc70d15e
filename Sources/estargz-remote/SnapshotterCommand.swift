import ArgumentParser
import EStargzCommands
import Dispatch
import Foundation
import EStargzRemote
import Snapshotter
#if canImport(Glibc)
import Glibc
#endif

struct SnapshotterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: RemoteSubcommand.snapshotter.name,
        abstract: RemoteSubcommand.snapshotter.abstract,
        discussion: """
            Add to containerd's config: [proxy_plugins.estargz] type = "snapshot", address = SOCKET; then \
            use `--snapshotter estargz` with ctr. Runs until SIGINT or SIGTERM.
            """
    )

    @Option(help: "Directory for snapshots and their metadata.")
    var root: String = "/var/lib/estargz-snapshotter"

    @Option(help: "Unix socket to serve the snapshots API on.")
    var address: String = "/run/estargz-snapshotter/snapshotter.sock"

    @Flag(inversion: .prefixedNo, help: "Mount eStargz layers lazily from their registry instead of downloading them.")
    var lazy = true

    @Flag(help: "Use plain HTTP for every registry (loopback registries always use it).")
    var plainHTTP = false

    @Option(help: "Directory of the verified-chunk cache shared by all layers (default: ROOT/cache).")
    var cacheDirectory: String?

    @Option(help: "A TOML config file: [registry] mirrors / plain_http_hosts / credentials, [fetch], [cache], [fuse_manager].")
    var config: String?

    @Flag(help: "Serve lazy layers from `estargz fuse-manager` (started when none answers), whose mounts outlive this process.")
    var fuseManager = false

    func run() async throws {
        let settings: SnapshotterConfig
        do { settings = try config.map(SnapshotterConfig.init(contentsOf:)) ?? SnapshotterConfig() } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
        let remote: (any LayerMounting)?
        if !lazy {
            remote = nil
        } else if fuseManager || settings.fuseManager {
            // The manager gets this command's settings, so it mounts layers exactly as we would.
            let socket = settings.fuseManagerAddress ?? root + "/fuse-manager.sock"
            var arguments = ["--root", root]
            if let config { arguments += ["--config", config] }
            if let cacheDirectory { arguments += ["--cache-directory", cacheDirectory] }
            if plainHTTP { arguments.append("--plain-http") }
            do {
                try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
                remote = try FuseManagerClient.connectOrStart(socketPath: socket, arguments: arguments, log: root + "/fuse-manager.log")
            } catch {
                printError("\(error)")
                throw ExitCode.failure
            }
        } else {
            remote = try settings.makeRemoteLayers(cacheDirectory: cacheDirectory, root: root, plainHTTP: plainHTTP)
        }
        let root = self.root, address = self.address
        let task = Task { try await SnapshotterServer.serve(root: root, socketPath: address, remote: remote) }
        let signals = [SIGINT, SIGTERM].map { number -> DispatchSourceSignal in
            Glibc.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { task.cancel() }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        do {
            try await task.value
        } catch is CancellationError {
            // SIGINT / SIGTERM: a clean shutdown.
        }
    }
}
