import Dispatch
import EStargzCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The file tree of one or more eStargz layers, ready to be mounted with ``mount(at:)``.
///
/// Content is read lazily through each layer's ``LayerReader`` (and so through whatever
/// ``RandomAccessSource`` it was opened on): a read waits only for the chunks it overlaps, and
/// every chunk is verified before its bytes reach the kernel. A chunk that cannot be fetched or
/// fails verification makes that read fail with `EIO`; the mount stays up.
///
/// Inode numbers are assigned depth-first in name order when the file system is built, so the
/// same layers always give the same numbers; hardlinked names share one inode whose link count
/// is the number of its names that are visible. The tree is fixed for the life of the mount,
/// which is what lets the kernel cache entries, attributes and pages for long.
///
/// ```swift
/// let fs = try LazyFileSystem(sources: [try FileSource(path: "base.esgz"), try FileSource(path: "app.esgz")])
/// let mount = try fs.mount(at: "/mnt/rootfs")
/// defer { mount.unmount() }
/// ```
public final class LazyFileSystem: Sendable {
    /// How the layers become one tree.
    public enum Mode: Sendable {
        /// All layers merged into one tree, lowest layer first in the list (OCI order): upper
        /// layers override lower ones, `.wh.NAME` hides NAME of lower layers and `.wh..wh..opq`
        /// hides the lower layers' contents of its directory. Whiteout files are not shown.
        case merged
        /// Exactly one layer, presented as an overlayfs lower directory: `.wh.NAME` shows as a
        /// char 0/0 device NAME and an opaque directory carries `trusted.overlay.opaque=y`, so
        /// the kernel's overlayfs can stack several such mounts.
        case overlayLayer
    }

    /// Mount behaviour.
    public struct Options: Sendable {
        /// Read the prioritized region (files before `.prefetch.landmark`) of every layer into
        /// the chunk cache on a background thread as soon as the mount is up.
        public var prefetch = true
        /// After the prefetch, read every remaining chunk in the background (cancelled at unmount).
        public var backgroundFetch = false
        /// When set, each file's path (relative, as `convert --prioritized-files` takes them) is
        /// appended to this file, one per line, the first time it is opened or read.
        public var accessLogPath: String?
        /// Name of the hidden control directory in the mount's root (reachable by name, not listed
        /// by readdir) holding the read-only `stats` file; nil for none.
        public var controlDirectoryName: String? = ".stargz-snapshotter"
        /// Kernel entry and attribute cache lifetime in seconds (content never changes).
        public var cacheTimeout: Double = 86_400
        /// Largest read request the kernel sends (bytes).
        public var maximumRead = 1 << 20
        /// Byte budget of the in-memory chunk cache that ``init(sources:tocDigests:mode:options:)`` creates.
        public var chunkCacheCapacity = 256 << 20
        /// Attempts per read when the source fails with an I/O error (verification failures are not retried).
        public var readAttempts = 3
        /// Let users other than the mounting one see the mount (`allow_other`; needs root or fuse.conf).
        public var allowOther = geteuid() == 0
        /// Idle FUSE worker threads kept by the session loop.
        public var maximumIdleThreads: UInt32 = 10
        /// Guesses of what reads come next, fetched beside them (``ReadAhead``); `.off` for none.
        public var readAhead = ReadAhead()
        /// The defaults: prefetch on, background fetch off, read-ahead on, control directory on,
        /// 1 MiB reads, a day of kernel caching, a 256 MiB chunk cache.
        public init() {}
    }

    /// The layers, lowest first.
    public let layers: [LayerReader]
    /// Each layer's cache when it is the in-memory kind, whose chunks a read can copy a slice of.
    let memoryCaches: [MemoryChunkCache?]
    /// Merged tree or one overlayfs lower layer.
    public let mode: Mode
    /// What the file system was created with.
    public let options: Options

    let inodes: [Inode]
    /// Inode numbers of the control directory and its stats file (0 when there is none).
    let controlDirectoryInode: UInt64
    let statsInode: UInt64

    let counters = Counters()
    private let flights = ChunkFlights()
    private let failures = Mutex<Set<String>>([])
    private let accessLog: AccessLog?
    private let handles = Mutex<(next: UInt64, stats: [UInt64: [UInt8]])>((1, [:]))
    private let fetcher = Mutex<FetchState>(FetchState())
    let readAheadState = Mutex(ReadAheadState())
    /// Whether an executable file has been looked up on this mount yet (checked on every lookup).
    let programLookedUp = Atomic<Bool>(false)
    let readAheadLowerLayers = Mutex<(@Sendable () -> [LazyFileSystem])?>(nil)
    /// Where program headers are looked at (one at a time: each waits for its chunk to arrive).
    let readAheadQueue = DispatchQueue(label: "estargz.lazyfs.read-ahead", qos: .userInitiated)

    /// A file system over readers the caller opened (and gave whatever ``ChunkCache`` they chose).
    public init(layers: [LayerReader], mode: Mode = .merged, options: Options = Options()) throws {
        self.layers = layers
        memoryCaches = layers.map { $0.cache as? MemoryChunkCache }
        self.mode = mode
        self.options = options
        let inodes = try InodeTable.build(layers: layers, mode: mode)
        self.inodes = inodes
        // A layer's own entry of that name wins; the control directory is then unreachable.
        let hasControl = options.controlDirectoryName.map { !$0.isEmpty && !$0.contains("/") && inodes[0].child(named: $0) == nil } ?? false
        controlDirectoryInode = hasControl ? UInt64(inodes.count + 1) : 0
        statsInode = hasControl ? UInt64(inodes.count + 2) : 0
        accessLog = try options.accessLogPath.map { try AccessLog(path: $0, inodeCount: inodes.count) }
    }

    /// Opens each source as a layer (lowest first) sharing one in-memory chunk cache of
    /// ``Options/chunkCacheCapacity`` bytes; `tocDigests`, when given, are checked per layer.
    public convenience init(sources: [any RandomAccessSource], tocDigests: [SHA256Digest?]? = nil,
                            mode: Mode = .merged, options: Options = Options()) throws {
        let cache = MemoryChunkCache(capacity: options.chunkCacheCapacity)
        var layers: [LayerReader] = []
        for (index, source) in sources.enumerated() {
            let digest = tocDigests.flatMap { index < $0.count ? $0[index] : nil }
            layers.append(try LayerReader(source: source, tocDigest: digest, cache: cache))
        }
        try self.init(layers: layers, mode: mode, options: options)
    }

    /// Mounts the tree at `mountpoint` (an existing directory) and serves it on a background
    /// thread until ``LazyMount/unmount()``. A stale FUSE mount left there by a crash is
    /// detached first.
    public func mount(at mountpoint: String) throws -> LazyMount {
        try LazyMount(fileSystem: self, mountpoint: mountpoint)
    }

    /// What this file system has done so far, summed over its layers.
    public var statistics: LazyFSStatistics {
        var result = LazyFSStatistics()
        for layer in layers {
            let s = layer.statistics
            result.bytesFetched += s.bytesRead
            result.cacheHits += s.cacheHits
            result.chunksVerified += s.chunksVerified
            result.bytesVerified += s.bytesVerified
            result.verificationFailures += s.verificationFailures
        }
        result.cacheHits += counters.sliceHits.load(ordering: .relaxed)
        result.readErrors = counters.readErrors.load(ordering: .relaxed)
        result.reads = counters.reads.load(ordering: .relaxed)
        result.bytesServed = counters.bytesServed.load(ordering: .relaxed)
        result.prefetchedBytes = counters.prefetchedBytes.load(ordering: .relaxed)
        result.readAheadBytes = readAheadState.withLock { $0.bytes }
        return result
    }

    // MARK: Inodes

    func inode(_ number: UInt64) -> Inode? {
        guard number >= 1, number <= UInt64(inodes.count) else { return nil }
        return inodes[Int(number - 1)]
    }

    func lookup(parent: UInt64, name: String) -> UInt64? {
        if parent == 1, controlDirectoryInode != 0, name == options.controlDirectoryName { return controlDirectoryInode }
        if parent == controlDirectoryInode { return name == "stats" ? statsInode : nil }
        return inode(parent)?.child(named: name)
    }

    // MARK: Reads

    /// Fills `buffer` from the file at `offset`; returns the byte count, or an errno.
    ///
    /// Chunk by chunk, one fetch per chunk digest at a time: the kernel sends several requests for
    /// one chunk at once (readahead, many readers), and this way one of them fetches and inflates
    /// it while the others wait and then find it in the cache. A read never waits for a fetch of
    /// any other chunk (a prefetch in flight, another file's read).
    func read(_ number: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Result<Int, Errno> {
        guard let inode = inode(number), inode.entry != nil else { return .failure(Errno(EISDIR)) }
        recordAccess(number)
        counters.reads.add(1, ordering: .relaxed)
        let result = serve(inode, number, into: buffer, at: offset, forRead: true)
        if case let .success(count) = result { counters.bytesServed.add(Int64(count), ordering: .relaxed) }
        return result
    }

    /// ``read(_:into:at:)`` without the bookkeeping of a read: `forRead` false for read-ahead's own
    /// reads of program headers, which are neither logged as accesses nor guessed from.
    func serve(_ inode: Inode, _ number: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
               forRead: Bool) -> Result<Int, Errno> {
        guard let entry = inode.entry else { return .failure(Errno(EISDIR)) }
        guard offset >= 0 else { return .failure(Errno(EINVAL)) }
        let end = min(inode.size, offset + Int64(buffer.count))
        guard offset < end else { return .success(0) }
        let chunks = inode.chunks
        var low = 0, high = chunks.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if chunks[mid].fileOffset <= offset { low = mid } else { high = mid - 1 }
        }
        var position = offset
        var index = low
        while position < end {
            let chunk = chunks[index]
            let pieceEnd = min(end, chunk.fileOffset + chunk.size)
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(position - offset) ..< Int(pieceEnd - offset)])
            let sliceCache = memoryCaches[inode.layer]
            let start = Int(position - chunk.fileOffset)
            // A kernel request is often a slice of a chunk: copy just that slice when the chunk is cached.
            func cachedSlice() -> Bool {
                guard let sliceCache, sliceCache.copy(chunk.digest, from: start, into: piece) else { return false }
                counters.sliceHits.add(1, ordering: .relaxed)
                return true
            }
            var fetched = false
            let failure = flights.once(chunk.digest, unless: cachedSlice) {
                counters.foregroundFetches.add(1, ordering: .relaxed)
                defer { counters.foregroundFetches.subtract(1, ordering: .relaxed) }
                if forRead && index == 0 { readAheadBeforeFirstChunk(number, inode) }
                fetched = true
                return readPiece(entry, of: inode, into: piece, at: position)
            } ?? nil
            if fetched && failure == nil && forRead { readAheadAfterFetch(number, inode, chunk: index) }
            if let error = failure {
                // A guess that failed is nobody's error; the read that needs the chunk says why.
                if forRead {
                    counters.readErrors.add(1, ordering: .relaxed)
                    logOnce(error)
                }
                return .failure(Errno(EIO))
            }
            position = pieceEnd
            index += 1
        }
        return .success(Int(end - offset))
    }

    /// Reads within one chunk, retrying source I/O failures (a registry hiccup) but not
    /// verification failures; returns why it failed, or nil.
    private func readPiece(_ entry: LayerEntry, of inode: Inode, into piece: UnsafeMutableRawBufferPointer, at position: Int64) -> String? {
        var attempt = 0
        while true {
            attempt += 1
            do {
                let count = try layers[inode.layer].read(entry, into: piece, at: position)
                return count == piece.count ? nil : "short read of \(inode.path) at \(position): \(count) of \(piece.count) bytes"
            } catch let error as EStargzError {
                if case .io = error, attempt < options.readAttempts { continue }
                if case .truncated = error, attempt < options.readAttempts { continue }
                return error.description
            } catch {
                return "\(error)"
            }
        }
    }

    /// One line on stderr per distinct failure (a failing chunk is read again and again by the kernel).
    private func logOnce(_ message: String) {
        let isNew = failures.withLock { $0.insert(message).inserted }
        guard isNew else { return }
        let line = "estargz lazyfs: read failed, returning EIO: \(message)\n"
        line.withCString { _ = write(2, $0, strlen($0)) }
    }

    func recordAccess(_ number: UInt64) {
        guard let accessLog, let inode = inode(number) else { return }
        accessLog.record(number, path: inode.path)
    }

    // MARK: The stats file

    /// Opens a snapshot of the statistics as JSON; the handle serves reads until released.
    func openStats() -> UInt64 {
        let json = statistics.json + "\n"
        return handles.withLock { handles in
            let handle = handles.next
            handles.next += 1
            handles.stats[handle] = Array(json.utf8)
            return handle
        }
    }

    func statsContents(_ handle: UInt64) -> [UInt8]? { handles.withLock { $0.stats[handle] } }

    func releaseStats(_ handle: UInt64) { handles.withLock { _ = $0.stats.removeValue(forKey: handle) } }

    // MARK: Prefetch and background fetch

    private struct FetchState {
        var started = false
        var group: DispatchGroup?
    }

    /// Starts prefetch (and background fetch when asked for) on one background thread.
    func startFetching() {
        readAheadAtMount()
        guard options.prefetch || options.backgroundFetch else { return }
        let group = DispatchGroup()
        let begin = fetcher.withLock { state -> Bool in
            guard !state.started else { return false }
            state.started = true
            state.group = group
            return true
        }
        guard begin else { return }
        DispatchQueue.global(qos: .utility).async(group: group) { [self] in
            var remaining: [(layer: Int, file: LayerEntry, chunk: ChunkLocation)] = []
            for (index, layer) in layers.enumerated() {
                let end = options.prefetch ? layer.prefetchRegionEnd : nil
                // Landmarks are never shown, so never read.
                let landmarks = Set([Landmark.prefetch, Landmark.noPrefetch].compactMap { layer.entry(at: $0)?.id })
                for (file, chunk) in layer.allChunks() where !landmarks.contains(file.id) {
                    if let end, chunk.blobEnd <= end {
                        guard !counters.cancelled.load(ordering: .relaxed) else { return }
                        fetch(chunk, of: file, inLayer: index)
                    } else if options.backgroundFetch {
                        remaining.append((index, file, chunk))
                    }
                }
            }
            for item in remaining {
                guard !counters.cancelled.load(ordering: .relaxed) else { return }
                fetch(item.chunk, of: item.file, inLayer: item.layer)
            }
        }
    }

    private func fetch(_ chunk: ChunkLocation, of file: LayerEntry, inLayer index: Int) {
        let layer = layers[index]
        // Start nothing while a read is fetching a chunk it needs: the read keeps the link (and the
        // source's request slots) to itself. A read never waits for a prefetch of another chunk.
        while counters.foregroundFetches.load(ordering: .relaxed) > 0 && !counters.cancelled.load(ordering: .relaxed) {
            usleep(500)
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(max(1, chunk.size)), alignment: 16)
        defer { buffer.deallocate() }
        do {
            // A whole-chunk read verifies the chunk and leaves it in the reader's cache; as the
            // chunk's one fetch, so a read that needs it meanwhile waits for it instead of fetching it again.
            let cache = memoryCaches[index]
            let fetched = try flights.once(chunk.digest, unless: { cache?.contains(chunk.digest) ?? false }) {
                try layer.read(file, into: buffer, at: chunk.fileOffset)
            }
            counters.prefetchedBytes.add(Int64(fetched ?? 0), ordering: .relaxed)
        } catch {
            // Not an error of any read yet: the read that needs this chunk will fail and say why.
        }
    }

    /// Cancels background fetching and waits for the chunk in flight.
    func stopFetching() {
        counters.cancelled.store(true, ordering: .relaxed)
        if let group = fetcher.withLock({ $0.group }) { group.wait() }
    }

    /// Waits until prefetch (and background fetch, when on) has finished; for tests and tools.
    public func waitForFetching() {
        if let group = fetcher.withLock({ $0.group }) { group.wait() }
    }
}

/// Counters of one mount, safe to read while it serves requests.
public struct LazyFSStatistics: Sendable, Equatable {
    /// Compressed bytes requested from the layers' sources for chunks.
    public var bytesFetched: Int64 = 0
    /// Chunks served by the chunk cache.
    public var cacheHits: Int64 = 0
    /// Chunks inflated and verified.
    public var chunksVerified: Int64 = 0
    /// Uncompressed bytes of those chunks.
    public var bytesVerified: Int64 = 0
    /// Chunks that failed to inflate or to verify.
    public var verificationFailures: Int64 = 0
    /// Read requests answered with `EIO`.
    public var readErrors: Int64 = 0
    /// Read requests of file content that reached the file system (page-cache hits never do).
    public var reads: Int64 = 0
    /// Bytes returned by those reads.
    public var bytesServed: Int64 = 0
    /// Uncompressed bytes brought into the cache by prefetch and background fetch.
    public var prefetchedBytes: Int64 = 0
    /// Compressed bytes read-ahead asked its sources for (guesses, ``LazyFileSystem/ReadAhead``;
    /// a source skips what it holds or is already fetching).
    public var readAheadBytes: Int64 = 0
    public init() {}

    /// One JSON object with every counter, as the mount's `stats` file shows it.
    public var json: String {
        """
        {"bytesFetched":\(bytesFetched),"cacheHits":\(cacheHits),"chunksVerified":\(chunksVerified),\
        "bytesVerified":\(bytesVerified),"verificationFailures":\(verificationFailures),\
        "readErrors":\(readErrors),"reads":\(reads),"bytesServed":\(bytesServed),\
        "prefetchedBytes":\(prefetchedBytes),"readAheadBytes":\(readAheadBytes)}
        """
    }
}

/// An errno value a request is answered with.
struct Errno: Error {
    let code: Int32
    init(_ code: Int32) { self.code = code }
}

/// At most one fetch of each chunk at a time, keyed by the chunk's digest (not by a lock stripe,
/// so no read ever queues behind a fetch of another chunk).
private final class ChunkFlights: Sendable {
    private final class Flight: Sendable {
        let done = DispatchSemaphore(value: 0)
        let waiters = Atomic<Int>(0)
    }

    private let inFlight = Mutex<[SHA256Digest: Flight]>([:])

    /// Returns nil at once when `satisfied()` (the chunk is cached); otherwise runs `fetch` as
    /// the chunk's one fetch, or waits for the fetch in flight and checks again (that fetch may
    /// have failed, or the cache may have declined the chunk: then this caller fetches).
    func once<T>(_ digest: SHA256Digest, unless satisfied: () -> Bool, _ fetch: () throws -> T) rethrows -> T? {
        while true {
            if satisfied() { return nil }
            let (flight, leads) = inFlight.withLock { table -> (Flight, Bool) in
                if let flight = table[digest] {
                    flight.waiters.add(1, ordering: .relaxed)
                    return (flight, false)
                }
                let flight = Flight()
                table[digest] = flight
                return (flight, true)
            }
            guard leads else {
                flight.done.wait()
                continue
            }
            defer {
                // Removed first, so a woken waiter that finds nothing cached leads the next fetch.
                inFlight.withLock { _ = $0.removeValue(forKey: digest) }
                for _ in 0 ..< flight.waiters.load(ordering: .relaxed) { flight.done.signal() }
            }
            // The fetch that just finished may have brought the chunk after our check.
            if satisfied() { return nil }
            return try fetch()
        }
    }
}

final class Counters: Sendable {
    let readErrors = Atomic<Int64>(0)
    /// Chunk-cache hits served by slice copies (the readers count their own hits).
    let sliceHits = Atomic<Int64>(0)
    let reads = Atomic<Int64>(0)
    let bytesServed = Atomic<Int64>(0)
    let prefetchedBytes = Atomic<Int64>(0)
    /// Reads fetching a chunk that was not cached (prefetch yields to them).
    let foregroundFetches = Atomic<Int>(0)
    let cancelled = Atomic<Bool>(false)
}

/// Appends each file's path the first time it is opened or read, in that order.
private final class AccessLog: Sendable {
    private let state: Mutex<(descriptor: Int32, seen: [Bool])>
    let path: String

    init(path: String, inodeCount: Int) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw EStargzError.io(operation: "create", path: path, errno: errno) }
        self.path = path
        state = Mutex((fd, [Bool](repeating: false, count: inodeCount + 1)))
    }

    deinit { state.withLock { _ = close($0.descriptor) } }

    func record(_ number: UInt64, path: String) {
        state.withLock { state in
            guard Int(number) < state.seen.count, !state.seen[Int(number)] else { return }
            state.seen[Int(number)] = true
            // Written under the lock, so lines keep the order of first access.
            let line = Array((path + "\n").utf8)
            _ = line.withUnsafeBytes { write(state.descriptor, $0.baseAddress, $0.count) }
        }
    }
}
