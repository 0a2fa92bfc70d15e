import ArgumentParser
import EStargzCommands
import Dispatch
import EStargzCore
import EStargzRemote
import Foundation
import LazyFS
#if canImport(Glibc)
import Glibc
#endif

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: RemoteSubcommand.mount.name,
        abstract: RemoteSubcommand.mount.abstract,
        discussion: """
            Every argument but the last is a layer source, lowest first as in an image manifest; the \
            last is the mountpoint. A SOURCE that is an existing local file is an eStargz blob; any other \
            SOURCE is a registry reference: an image (all its layers, in order, each TOC verified against \
            its containerd.io/snapshot/stargz/toc.digest annotation) or REPO@sha256:… of one layer blob, \
            read lazily with HTTP range requests. Several layers are merged into one tree, \
            honouring .wh.NAME whiteouts and .wh..wh..opq opaque directories. With --overlay, exactly \
            one layer is mounted with overlayfs-style whiteouts (char 0/0 devices and \
            trusted.overlay.opaque=y), for stacking several mounts with the kernel's overlayfs.

            Runs in the foreground until SIGINT or SIGTERM, then unmounts. A stale mount left at the \
            mountpoint by a crashed run is detached first. Statistics are readable while mounted in \
            MOUNTPOINT/.stargz-snapshotter/stats (a hidden directory: reachable by name, not listed); \
            the --stats file adds the bytes and requests fetched from registries.

            Verified chunks are kept in memory (--cache-size MiB). With --cache-dir they are also kept \
            on disk, one file per chunk named by its SHA-256, so mounts of images that share chunks, \
            and later mounts of the same image, read them from there instead of the registry; files \
            are verified again on every hit, and the directory is kept under --cache-size MiB (a \
            64 MiB memory cache sits in front of it).
            """
    )

    @Argument(help: ArgumentHelp("Layers (lowest first: local blobs or registry references), then the mountpoint.", valueName: "SOURCE... MOUNTPOINT"))
    var arguments: [String]

    @Flag(help: "Mount one layer as an overlayfs lower directory instead of merging.")
    var overlay = false

    @Flag(help: "Use plain HTTP for registry sources (loopback registries always use it; local blobs ignore it).")
    var plainHTTP = false

    @Flag(inversion: .prefixedNo, help: "Fetch each layer's prioritized files into the cache right after mounting.")
    var prefetch = true

    @Flag(help: "After the prefetch, fetch every other chunk in the background.")
    var backgroundFetch = false

    @Flag(inversion: .prefixedNo,
          help: "Guess what is read next and fetch it beside the reads: startup files, the image's program, programs' libraries, directories read file by file.")
    var readAhead = true

    @Option(help: ArgumentHelp("Append each file's path to FILE the first time it is opened or read.", valueName: "FILE"))
    var recordAccess: String?

    @Option(help: ArgumentHelp("Write the mount's statistics as JSON to FILE when it unmounts.", valueName: "FILE"))
    var stats: String?

    @Option(help: ArgumentHelp("The platform to choose from a multi-platform image (default: this machine's).", valueName: "os/arch[/variant]"))
    var platform: String?

    @Option(help: ArgumentHelp("Keep verified chunks in DIR too (content-addressed, shared by layers, mounts and runs; verified again on every hit).", valueName: "DIR"))
    var cacheDir: String?

    @Option(help: ArgumentHelp("Give up on a registry request (and retry it) after this many seconds without a byte; a read that still fails is EIO.",
                               valueName: "SECONDS"))
    var readTimeout: Int = 120

    @Option(help: ArgumentHelp("Give up on opening a registry connection (and retry) after this many seconds.", valueName: "SECONDS"))
    var connectTimeout: Int = 10

    @Option(help: "Chunk cache bound in MiB: of the memory cache, or with --cache-dir of that directory.")
    var cacheSize = 256

    /// 4 KiB, as the snapshotter's: read-ahead fetches the neighbours worth having, larger blocks only
    /// add bytes (lazystart.py: the same time to `hi`, 15% fewer bytes than 64 KiB).
    @Option(help: ArgumentHelp("Registry reads fetch whole blocks of this many KiB (a power of two).", valueName: "KiB"))
    var blockKib = 4

    /// The memory tier in front of a --cache-dir.
    static let memoryInFrontOfDisk = 64 << 20

    func validate() throws {
        guard arguments.count >= 2 else { throw ValidationError("give at least one SOURCE and a MOUNTPOINT") }
        if overlay && arguments.count != 2 { throw ValidationError("--overlay mounts exactly one SOURCE") }
        guard cacheSize > 0 else { throw ValidationError("--cache-size must be positive") }
        guard readTimeout > 0, connectTimeout > 0 else { throw ValidationError("timeouts are whole seconds above 0") }
        guard blockKib > 0, blockKib & (blockKib - 1) == 0, blockKib <= 16 << 10 else {
            throw ValidationError("--block-kib must be a power of two from 1 to 16384")
        }
        if let platform, (try? Platform(parsing: platform)) == nil {
            throw ValidationError("--platform \(platform) is not os/arch[/variant]")
        }
    }

    /// One chunk cache for every layer, local or remote: memory, in front of the disk with --cache-dir.
    func makeCache() throws(RegistryError) -> MemoryChunkCache {
        guard let cacheDir else { return MemoryChunkCache(capacity: cacheSize << 20) }
        let disk = try DiskChunkCache(directory: cacheDir, capacity: Int64(cacheSize) << 20)
        return MemoryChunkCache(capacity: min(cacheSize << 20, Self.memoryInFrontOfDisk), backing: disk)
    }

    func run() throws {
        let mountpoint = arguments.last!
        var options = LazyFileSystem.Options()
        options.prefetch = prefetch
        options.backgroundFetch = backgroundFetch
        if !readAhead { options.readAhead = .off }
        options.accessLogPath = recordAccess
        options.chunkCacheCapacity = cacheSize << 20
        let mount: LazyMount
        var remoteImages: [RemoteImage] = []
        var clients: [RegistryClient] = []
        // Registry clients are shut down after the unmount, whatever happens.
        defer { for client in clients { try? client.syncShutdown() } }
        mount = try runReportingRemoteErrors {
            let cache = try makeCache()
            // Parsed, not `RegistryOptions()`: options never parsed cannot be read.
            let registry = try RegistryOptions.parse((plainHTTP ? ["--plain-http"] : []) + (platform.map { ["--platform", $0] } ?? [])
                + ["--read-timeout", "\(readTimeout)", "--connect-timeout", "\(connectTimeout)"])
            let chosenPlatform = try registry.parsedPlatform()
            var layers: [LayerReader] = []
            for source in arguments.dropLast() {
                if isLocalFile(source) {
                    layers.append(try LayerReader(source: try FileSource(path: source), tocDigest: nil, cache: cache))
                } else {
                    // Opened on the main thread (runBlocking), never on an event loop. Later the FUSE
                    // worker threads call RangeReader's blocking read; they are no event-loop or
                    // cooperative-pool threads either.
                    let client = registry.makeClient()
                    clients.append(client)
                    let reference = try ImageReference(parsing: source)
                    var readerOptions = RangeReader.Options()
                    readerOptions.blockSize = Int64(blockKib) << 10
                    let image = try runBlocking { [readerOptions] in
                        try await RemoteImage.open(client: client, reference: reference, platform: chosenPlatform, cache: cache,
                                                   options: readerOptions)
                    }
                    remoteImages.append(image)
                    layers.append(contentsOf: image.layers.map(\.reader))
                }
            }
            if overlay && layers.count != 1 {
                printError("--overlay mounts exactly one layer; \(arguments[0]) has \(layers.count)")
                throw ExitCode.failure
            }
            let fs = try LazyFileSystem(layers: layers, mode: overlay ? .overlayLayer : .merged, options: options)
            let mounted = try fs.mount(at: mountpoint)
            // The topmost image's program, as a container of it would start (what a chroot or a
            // runtime on this mount most likely runs first).
            if let paths = remoteImages.last?.process?.programPaths, !paths.isEmpty { fs.readAheadProgram(atAnyOf: paths) }
            return mounted
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
            let bytes = Array((Self.statisticsJSON(mount.statistics, remote: remoteImages) + "\n").utf8)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
    }

    /// The mount's statistics with, for registry sources, the bytes and requests fetched and the
    /// layers' blob sizes added: `registryBytesFetched`, `registryRequests`, `registryBlobBytes`.
    static func statisticsJSON(_ statistics: LazyFSStatistics, remote: [RemoteImage]) -> String {
        var json = statistics.json
        guard !remote.isEmpty, json.hasSuffix("}") else { return json }
        var fetched: Int64 = 0, requests: Int64 = 0, blobBytes: Int64 = 0
        for image in remote {
            let s = image.statistics
            fetched += s.bytesFetched
            requests += s.requests
            blobBytes += image.layers.reduce(Int64(0)) { $0 + $1.source.size }
        }
        json.removeLast()
        return json + #","registryBytesFetched":\#(fetched),"registryRequests":\#(requests),"registryBlobBytes":\#(blobBytes)}"#
    }
}
