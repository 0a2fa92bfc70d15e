import ArgumentParser
import Dispatch
import EStargzCommands
import EStargzRemote
import Foundation
import Snapshotter
#if canImport(Glibc)
import Glibc
#endif

struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: RemoteSubcommand.store.name,
        abstract: RemoteSubcommand.store.abstract,
        discussion: """
            Serves containers/storage's additional layer store protocol at MOUNTPOINT (FUSE): \
            MOUNTPOINT/BASE64(IMAGE-REF)/LAYER-DIGEST/{diff,info,blob}. With \
            additionallayerstores = ["MOUNTPOINT:ref"] in storage.conf (overlay driver), `podman pull` and \
            `podman run` (and CRI-O) use the eStargz layers of an image from here instead of downloading \
            them: each layer's `diff` is a lazy LazyFS mount under ROOT/layers, its chunks fetched when \
            read and verified first; other layers are pulled as usual. Runs until SIGINT or SIGTERM, \
            then unmounts the store and its layers.
            """
    )

    @Option(help: "Directory for the store's state: the layers' lazy mounts (ROOT/layers) and the chunk cache (ROOT/cache).")
    var root: String = "/var/lib/estargz-store"

    @Argument(help: "Where to serve the store (the path before :ref in additionallayerstores; created if missing).")
    var mountpoint: String

    @Flag(help: "Use plain HTTP for every registry (loopback registries always use it).")
    var plainHTTP = false

    @Option(help: "Directory of the verified-chunk cache shared by all layers (default: ROOT/cache).")
    var cacheDirectory: String?

    @Option(help: "The platform chosen from multi-platform images (os/arch[/variant]; default: this machine's).")
    var platform: String?

    @Option(help: "A TOML config file, as for `estargz snapshotter`: [registry] mirrors / plain_http_hosts / credentials, [fetch], [cache].")
    var config: String?

    @Option(help: ArgumentHelp("At exit, write the registry bytes and requests fetched and the mounted layers' sizes to FILE (JSON).",
                               valueName: "FILE"))
    var stats: String?

    func run() throws {
        let settings: SnapshotterConfig
        do { settings = try config.map(SnapshotterConfig.init(contentsOf:)) ?? SnapshotterConfig() } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
        var registry = settings.registryOptions
        registry.plainHTTP = plainHTTP
        let chosenPlatform = try runReportingRemoteErrors { try platform.map { try Platform(parsing: $0) } ?? .current }
        let mount = try runReportingErrors {
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
            let remote = try RemoteLayers(registry: registry, cacheDirectory: cacheDirectory ?? settings.cacheDirectory ?? root + "/cache",
                                          cacheCapacity: Int64(settings.cacheCapacityMiB) << 20,
                                          memoryCacheCapacity: settings.memoryCacheMiB << 20,
                                          prefetch: settings.prefetch, backgroundFetch: settings.backgroundFetch,
                                          fetchBlockSize: Int64(settings.fetchBlockKiB) << 10, tailSize: Int64(settings.tailKiB) << 10,
                                          readAhead: settings.readAheadPolicy)
            return try AdditionalLayerStore(root: root, remote: remote, platform: chosenPlatform).mount(at: mountpoint)
        }
        let finished = DispatchSemaphore(value: 0)
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGINT)
        sigaddset(&unblock, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        let sources = [SIGINT, SIGTERM].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { finished.signal() }
            source.resume()
            return source
        }
        FileHandle.standardError.write(Data("estargz store: serving at \(mountpoint)\n".utf8))
        finished.wait()
        sources.forEach { $0.cancel() }
        // Before the unmount, which forgets the layers' readers.
        let statistics = mount.statisticsJSON
        mount.unmount()
        if let stats {
            try runReportingErrors { try (statistics + "\n").write(toFile: stats, atomically: true, encoding: .utf8) }
        }
    }
}
