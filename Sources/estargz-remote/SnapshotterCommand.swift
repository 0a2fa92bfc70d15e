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

    @OptionGroup var serving: LazyLayerOptions

    @Flag(help: "Serve lazy layers from `estargz fuse-manager` (started when none answers), whose mounts outlive this process.")
    var fuseManager = false

    func run() async throws {
        let settings = try serving.settings()
        let remote: (any LayerMounting)?
        if !lazy {
            remote = nil
        } else if fuseManager || settings.fuseManager {
            // The manager gets this command's settings, so it mounts layers exactly as we would.
            let socket = settings.fuseManagerAddress ?? root + "/fuse-manager.sock"
            let arguments = ["--root", root] + serving.arguments
            do {
                try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
                remote = try FuseManagerClient.connectOrStart(socketPath: socket, arguments: arguments, log: root + "/fuse-manager.log")
            } catch {
                printError("\(error)")
                throw ExitCode.failure
            }
        } else {
            remote = try serving.makeRemoteLayers(settings, root: root)
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
