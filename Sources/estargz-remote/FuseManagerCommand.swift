import ArgumentParser
import Dispatch
import EStargzCommands
import Snapshotter
#if canImport(Glibc)
import Glibc
#endif

/// `estargz fuse-manager`: holds the FUSE mounts of lazily mounted layers for `estargz
/// snapshotter`, in a process of its own, so they outlive snapshotter restarts.
struct FuseManagerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: RemoteSubcommand.fuseManager.name,
        abstract: RemoteSubcommand.fuseManager.abstract,
        discussion: """
            `estargz snapshotter --fuse-manager` (or [fuse_manager] enable = true in its config) starts \
            one when none answers on the socket and asks it to mount and unmount layers; it keeps \
            serving them while the snapshotter is restarted or killed, and a restarted snapshotter \
            learns from it what is mounted. Runs until SIGINT or SIGTERM, then unmounts every layer.
            """
    )

    @Option(help: "Unix socket to serve on.")
    var address: String

    @Option(help: "The snapshotter's root (its cache directory ROOT/cache is the default).")
    var root: String = "/var/lib/estargz-snapshotter"

    @OptionGroup var serving: LazyLayerOptions

    func run() throws {
        let layers: RemoteLayers
        do {
            layers = try serving.makeRemoteLayers(try serving.settings(), root: root)
            try FuseManager.listen(socketPath: address, layers: layers)
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
        // Whoever started us may go away: a closed log pipe must not end the mounts.
        signal(SIGPIPE, SIG_IGN)
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGINT)
        sigaddset(&unblock, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        let done = DispatchSemaphore(value: 0)
        let sources = [SIGINT, SIGTERM].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { done.signal() }
            source.resume()
            return source
        }
        done.wait()
        sources.forEach { $0.cancel() }
        unlink(address)
        unlink(address + ".pid")
        layers.unmountAll()
    }
}
