import ArgumentParser
import EStargzCommands
import Dispatch
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

    @Option(help: "A TOML config file: [registry] mirrors / plain_http_hosts / credentials, [fetch], [cache].")
    var config: String?

    func run() async throws {
        let settings: SnapshotterConfig
        do { settings = try config.map(SnapshotterConfig.init(contentsOf:)) ?? SnapshotterConfig() } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
        var registry = settings.registryOptions
        registry.plainHTTP = plainHTTP
        let remote = lazy ? try RemoteLayers(registry: registry,
                                             cacheDirectory: cacheDirectory ?? settings.cacheDirectory ?? root + "/cache",
                                             cacheCapacity: Int64(settings.cacheCapacityMiB) << 20,
                                             memoryCacheCapacity: settings.memoryCacheMiB << 20,
                                             prefetch: settings.prefetch, backgroundFetch: settings.backgroundFetch,
                                             fetchBlockSize: Int64(settings.fetchBlockKiB) << 10,
                                             tailSize: Int64(settings.tailKiB) << 10) : nil
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
