import ArgumentParser
import Dispatch
import EStargzCore
import LazyFS
#if canImport(Glibc)
import Glibc
#endif

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount eStargz layers through FUSE and read them lazily, verifying every chunk.",
        discussion: """
            Every argument but the last is a layer (a local eStargz blob), lowest layer first as in an \
            image manifest; the last is the mountpoint. Several layers are merged into one tree, \
            honouring .wh.NAME whiteouts and .wh..wh..opq opaque directories. With --overlay, exactly \
            one layer is mounted with overlayfs-style whiteouts (char 0/0 devices and \
            trusted.overlay.opaque=y), for stacking several mounts with the kernel's overlayfs.

            Runs in the foreground until SIGINT or SIGTERM, then unmounts. A stale mount left at the \
            mountpoint by a crashed run is detached first. Statistics are readable while mounted in \
            MOUNTPOINT/.stargz-snapshotter/stats (a hidden directory: reachable by name, not listed).
            """
    )

    @Argument(help: ArgumentHelp("Layers (lowest first), then the mountpoint.", valueName: "SOURCE... MOUNTPOINT"))
    var arguments: [String]

    @Flag(help: "Mount one layer as an overlayfs lower directory instead of merging.")
    var overlay = false

    @Flag(help: "Use plain HTTP for registry sources (registry references are not supported yet; local blobs ignore it).")
    var plainHTTP = false

    @Flag(inversion: .prefixedNo, help: "Fetch each layer's prioritized files into the cache right after mounting.")
    var prefetch = true

    @Flag(help: "After the prefetch, fetch every other chunk in the background.")
    var backgroundFetch = false

    @Option(help: ArgumentHelp("Append each file's path to FILE the first time it is opened or read.", valueName: "FILE"))
    var recordAccess: String?

    @Option(help: ArgumentHelp("Write the mount's statistics as JSON to FILE when it unmounts.", valueName: "FILE"))
    var stats: String?

    @Option(help: "In-memory chunk cache size in MiB.")
    var cacheSize = 256

    func validate() throws {
        guard arguments.count >= 2 else { throw ValidationError("give at least one SOURCE and a MOUNTPOINT") }
        if overlay && arguments.count != 2 { throw ValidationError("--overlay mounts exactly one SOURCE") }
        guard cacheSize > 0 else { throw ValidationError("--cache-size must be positive") }
    }

    func run() throws {
        let mountpoint = arguments.last!
        var options = LazyFileSystem.Options()
        options.prefetch = prefetch
        options.backgroundFetch = backgroundFetch
        options.accessLogPath = recordAccess
        options.chunkCacheCapacity = cacheSize << 20
        let mount: LazyMount
        do {
            let sources: [any RandomAccessSource] = try arguments.dropLast().map { try FileSource(path: $0) }
            let fs = try LazyFileSystem(sources: sources, mode: overlay ? .overlayLayer : .merged, options: options)
            mount = try fs.mount(at: mountpoint)
        } catch let error as EStargzError {
            printError(error.description)
            throw ExitCode.failure
        } catch let error as LazyFSError {
            printError(error.description)
            throw ExitCode.failure
        }

        // Signals are handled on a queue, not in a signal handler, so unmounting may block and allocate.
        // A parent (a test runner, a supervisor) may have left them blocked; we must receive them.
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGINT)
        sigaddset(&unblock, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { mount.unmount() }
            source.resume()
            sources.append(source)
        }
        mount.wait()
        sources.forEach { $0.cancel() }
        if let stats {
            let fd = try createOutput(stats)
            defer { _ = closeFile(fd) }
            let bytes = Array((mount.statistics.json + "\n").utf8)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
    }
}
