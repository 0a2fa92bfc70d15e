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

    @Option(help: "The platform chosen from multi-platform images (os/arch[/variant]; default: this machine's).")
    var platform: String?

    @OptionGroup var serving: LazyLayerOptions

    @Option(help: ArgumentHelp("At exit, write the registry bytes and requests fetched and the mounted layers' sizes to FILE (JSON).",
                               valueName: "FILE"))
    var stats: String?

    func run() throws {
        let settings = try serving.settings()
        let chosenPlatform = try runReportingRemoteErrors { try platform.map { try Platform(parsing: $0) } ?? .current }
        let mount = try runReportingErrors {
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
            let remote = try serving.makeRemoteLayers(settings, root: root)
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
