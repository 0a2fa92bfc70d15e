import Dispatch
import EStargzCore
import Synchronization

/// A registry blob as a ``EStargzCore/RandomAccessSource``: bytes are fetched with HTTP Range
/// requests on demand and kept in a bounded in-memory block cache.
///
/// - Opening reads the blob's tail speculatively (one request), so ``EStargzCore/LayerReader``
///   finds the footer and usually the whole TOC without another round trip.
/// - A read fetches only the blocks it lacks; adjacent missing blocks go out as one request,
///   independent requests run in parallel (bounded), and a block already being fetched for
///   another reader is waited for, not fetched twice.
///
/// - Background fetches (``fetch(_:priority:)`` with `.background`, as ``Prefetch/background(layer:reader:stepSize:bytesPerSecond:)``
///   makes) yield to foreground reads: a background request is not sent while a foreground
///   request is in flight or until the foreground has been quiet for
///   ``Options/backgroundQuietPeriod`` (a file read is several chunk reads in a row, and the
///   background must not slip in between them), and a foreground read that needs blocks a deferred background
///   request holds sends that request at once. Cancelling a background ``fetch(_:priority:)``
///   drops its requests not yet sent.
/// - Read-ahead (``readAhead(_:)``: guesses of what will be read next) goes out at once, beside
///   the foreground, on request slots of its own, so a guess never makes a waiting read queue.
///
/// `read(into:at:)` blocks its thread until the bytes arrive. Call it from ordinary threads
/// (the CLI's main thread, FUSE workers, `DispatchQueue`s), never from a SwiftNIO event loop.
public final class RangeReader: RandomAccessSource {
    /// How the reader fetches and caches.
    public struct Options: Sendable {
        /// Granularity of fetching and caching (bytes).
        public var blockSize: Int64 = 64 << 10
        /// Largest single Range request (bytes); longer runs are split.
        public var maximumRequestSize: Int64 = 16 << 20
        /// Requests in flight at once, per reader.
        public var maximumParallelRequests = 4
        /// Read-ahead requests in flight at once, per reader, besides those.
        public var maximumParallelReadAheadRequests = 8
        /// Memory the block cache may hold (bytes).
        public var memoryLimit: Int64 = 64 << 20
        /// How much of the blob's end to read when opening (footer and TOC);
        /// ``EStargzCore/LayerReader`` reads the same first, so opening a layer whose TOC fits
        /// costs one request, and a larger TOC one more for the rest of it. Larger tails save
        /// that round trip for more layers; smaller ones fetch fewer bytes beyond the TOC.
        public var tailSize: Int64 = 512 << 10
        /// Blobs up to this size are read whole when opened: one request instead of the tail
        /// and then one per file read. At 1 MiB the extra bytes cost less than a round trip or
        /// two on a typical link (100 Mbit/s, 50 ms); 0 turns it off.
        public var wholeBlobLimit: Int64 = 1 << 20
        /// How long the foreground must have been quiet (no request in flight) before deferred
        /// background requests go out. A file read is several chunk reads in a row; this keeps
        /// the background from slipping into the gaps between them. Zero sends them at once.
        public var backgroundQuietPeriod: Duration = .milliseconds(250)
        /// When the server ignores Range requests, download the whole blob once instead of failing.
        public var fallBackToFullDownload = false
        public init() {}
    }

    /// What this reader has fetched so far.
    public struct Statistics: Sendable, Equatable {
        /// Bytes received from the registry.
        public var bytesFetched: Int64 = 0
        /// Range (or whole-blob) requests made.
        public var requests: Int64 = 0
        /// Blocks served from the block cache.
        public var cacheHits: Int64 = 0
        /// Blocks that had to be fetched.
        public var cacheMisses: Int64 = 0
        /// Blocks a reader waited for because another reader was already fetching them.
        public var sharedWaits: Int64 = 0
        /// Requests made for background fetches (counted in `requests` too).
        public var backgroundRequests: Int64 = 0
        /// Times a background request waited because foreground requests were in flight.
        public var backgroundDeferrals: Int64 = 0
        /// Requests made for ``RangeReader/readAhead(_:)`` (counted in `requests` too).
        public var readAheadRequests: Int64 = 0
        /// Bytes those requests received (counted in `bytesFetched` too).
        public var readAheadBytes: Int64 = 0
    }

    /// Whether a fetch is for a reader waiting now, or may wait for foreground reads.
    public enum Priority: Sendable {
        /// Someone is waiting for these bytes: sent at once.
        case foreground
        /// Fetching ahead: sent only while no foreground request is in flight.
        case background
        /// A guess of what will be read soon: sent at once, on its own request slots.
        case readAhead
    }

    public let client: RegistryClient
    /// The repository the blob lives in.
    public let repository: ImageReference
    /// The blob's digest (`sha256:…`).
    public let digest: String
    public let size: Int64
    public let options: Options

    private let state = Mutex(State())
    private let limiter: DispatchSemaphore
    private let readAheadLimiter: DispatchSemaphore

    private struct State {
        var blocks: [Int64: (data: [UInt8], tick: UInt64)] = [:]
        var cachedBytes: Int64 = 0
        var tick: UInt64 = 0
        var inFlight: [Int64: Fetch] = [:]
        var whole: [UInt8]?
        var statistics = Statistics()
        /// Foreground fetches started and not yet finished.
        var foregroundInFlight = 0
        /// Until when the foreground counts as busy though nothing is in flight (the quiet period
        /// after its last request finished), and which drain set it.
        var quietUntil: ContinuousClock.Instant?
        var drains: UInt64 = 0
        /// Whether background requests must wait now.
        var foregroundBusy: Bool {
            if foregroundInFlight > 0 { return true }
            guard let quietUntil else { return false }
            return ContinuousClock.now < quietUntil
        }
        /// Background fetches waiting for the foreground to drain, by fetch.
        var deferred: [ObjectIdentifier: CheckedContinuation<Void, Never>] = [:]
        /// The foreground is done: every deferred background fetch, to be resumed outside the lock.
        mutating func releaseDeferred() -> [CheckedContinuation<Void, Never>] {
            quietUntil = nil
            defer { deferred = [:] }
            return Array(deferred.values)
        }
        /// Background fetches not yet sent, which a cancellation may still drop.
        var unsent: Set<ObjectIdentifier> = []
        /// Background fetches dropped before being sent.
        var dropped: Set<ObjectIdentifier> = []
    }

    /// A request for the contiguous blocks `first ..< end`; readers wait on `done`.
    private final class Fetch: Sendable {
        let first: Int64
        let end: Int64
        let priority: Priority
        let done = DispatchGroup()
        let outcome = Mutex<Result<[UInt8], RegistryError>?>(nil)
        init(first: Int64, end: Int64, priority: Priority) {
            self.first = first
            self.end = end
            self.priority = priority
            done.enter()
        }
        func finish(_ result: Result<[UInt8], RegistryError>) {
            outcome.withLock { $0 = result }
            done.leave()
        }
        func waitAsync() async {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                done.notify(queue: .global()) { continuation.resume() }
            }
        }
    }

    private init(client: RegistryClient, repository: ImageReference, digest: String, size: Int64, options: Options) {
        self.client = client
        self.repository = repository
        self.digest = digest
        self.size = size
        self.options = options
        self.limiter = DispatchSemaphore(value: max(1, options.maximumParallelRequests))
        self.readAheadLimiter = DispatchSemaphore(value: max(1, options.maximumParallelReadAheadRequests))
    }

    /// Opens the blob `digest` in `repository` and reads its tail in one request — or the whole
    /// blob, when it is no larger than ``Options/wholeBlobLimit``. Without `size` (a blob known by
    /// digest only) the tail is a suffix Range request, whose `Content-Range` gives the size in
    /// the same round trip (a small blob may then need a second request for the rest).
    public static func open(client: RegistryClient, repository: ImageReference, digest: String, size: Int64? = nil,
                            options: Options = Options()) async throws(RegistryError) -> RangeReader {
        var known = size
        if known == nil {
            do throws(RegistryError) {
                // One block more than the tail, so the tail's blocks are whole however the blob's size falls.
                let (bytes, blobSize) = try await client.fetchSuffix(repository, digest: digest, length: options.tailSize + options.blockSize)
                let reader = RangeReader(client: client, repository: repository, digest: digest, size: blobSize, options: options)
                reader.storeTail(bytes)
                if blobSize <= options.wholeBlobLimit { try await reader.fetch(0 ..< blobSize) }
                return reader
            } catch {
                // A server ignoring Range: the size from HEAD, then the whole-download fallback below.
                guard case .rangeNotSupported = error, options.fallBackToFullDownload else { throw error }
                known = try await client.blobSize(repository, digest: digest)
            }
        }
        let blobSize = known!
        let reader = RangeReader(client: client, repository: repository, digest: digest, size: blobSize, options: options)
        let tail = blobSize <= options.wholeBlobLimit ? blobSize : min(blobSize, options.tailSize)
        try await reader.fetch(blobSize - tail ..< blobSize)
        return reader
    }

    /// Caches the whole blocks of `bytes`, the blob's last `bytes.count` bytes (one request).
    private func storeTail(_ bytes: [UInt8]) {
        let start = size - Int64(bytes.count)
        let firstBlock = (start + options.blockSize - 1) / options.blockSize
        state.withLock { state in
            state.statistics.requests += 1
            state.statistics.bytesFetched += Int64(bytes.count)
            var block = firstBlock
            while block * options.blockSize < size {
                let from = Int(block * options.blockSize - start)
                let data = Array(bytes[from ..< min(bytes.count, from + Int(options.blockSize))])
                state.tick += 1
                state.blocks[block] = (data, state.tick)
                state.cachedBytes += Int64(data.count)
                block += 1
            }
        }
    }

    /// Counters so far.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// The tail ``open(client:repository:digest:size:options:)`` fetched: opening a layer reads
    /// it from the cache and fetches only what a larger TOC needs beyond it.
    public var openingTailSize: Int64 { options.tailSize }

    /// Makes sure `range` is in the block cache (fetching what is missing in one request per run);
    /// used for prefetch. `.background` fetches wait while foreground requests are in flight;
    /// cancelled, they drop what is not sent yet and throw ``RegistryError/cancelled`` once the
    /// requests already sent have finished (their bytes are cached).
    public func fetch(_ range: Range<Int64>, priority: Priority = .foreground) async throws(RegistryError) {
        let range = range.clamped(to: 0 ..< size)
        guard !range.isEmpty else { return }
        let (_, fetches) = acquire(range, priority: priority)
        if priority == .background {
            await withTaskCancellationHandler {
                for fetch in fetches { await fetch.waitAsync() }
            } onCancel: {
                self.drop(fetches)
            }
        }
        for fetch in fetches {
            await fetch.waitAsync()
            if case let .failure(error) = fetch.outcome.withLock({ $0 }) { throw error }
        }
    }

    /// Drops the background fetches among `fetches` not sent yet: their blocks are no longer
    /// in flight and they finish with ``RegistryError/cancelled`` without a request.
    private func drop(_ fetches: [Fetch]) {
        let released: [CheckedContinuation<Void, Never>] = state.withLock { state in
            var released: [CheckedContinuation<Void, Never>] = []
            for fetch in fetches {
                let id = ObjectIdentifier(fetch)
                guard state.unsent.remove(id) != nil else { continue }
                for block in fetch.first ..< fetch.end where state.inFlight[block] === fetch {
                    state.inFlight[block] = nil
                }
                state.dropped.insert(id)
                if let waiting = state.deferred.removeValue(forKey: id) { released.append(waiting) }
            }
            return released
        }
        for waiting in released { waiting.resume() }
    }

    /// Starts fetching the blocks of `range` not cached yet, in one request per run (LayerReader
    /// calls this before reading a TOC larger than the tail), so the reads that follow share those
    /// requests instead of sending one each. Ranges beyond half the memory limit are left alone:
    /// their first blocks would be evicted before they are read.
    public func willRead(_ range: Range<Int64>) {
        let range = range.clamped(to: 0 ..< size)
        guard !range.isEmpty, Int64(range.count) <= options.memoryLimit / 2 else { return }
        _ = acquire(range)
    }

    /// Starts fetching the blocks of `range` not cached or in flight yet, as a guess (one request
    /// per run of missing blocks, on the read-ahead slots); a read of them waits for that request
    /// instead of sending its own. Ranges beyond a quarter of the memory limit are left alone.
    public func readAhead(_ range: Range<Int64>) {
        let range = range.clamped(to: 0 ..< size)
        guard !range.isEmpty, Int64(range.count) <= options.memoryLimit / 4 else { return }
        _ = acquire(range, priority: .readAhead)
    }

    /// Drops the cached blocks overlapping `range` (LayerReader calls this after a chunk failed
    /// verification), so a retry fetches them again instead of re-serving damaged bytes.
    public func invalidate(_ range: Range<Int64>) {
        guard !range.isEmpty else { return }
        let first = range.lowerBound / options.blockSize, last = (range.upperBound - 1) / options.blockSize
        state.withLock { state in
            for block in first ... last {
                if let old = state.blocks.removeValue(forKey: block) { state.cachedBytes -= Int64(old.data.count) }
            }
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws {
        guard offset >= 0, offset + Int64(buffer.count) <= size else {
            throw EStargzError.truncated(what: "blob \(digest)", offset: offset, needed: Int64(buffer.count))
        }
        guard buffer.count > 0 else { return }
        let range = offset ..< offset + Int64(buffer.count)
        let (have, fetches) = acquire(range)
        var fetched: [Int64: [UInt8]] = [:]
        for fetch in fetches {
            fetch.done.wait()
            switch fetch.outcome.withLock({ $0 })! {
            case let .failure(error): throw error
            case let .success(bytes):
                for block in fetch.first ..< fetch.end { fetched[block] = slice(bytes, block: block, first: fetch.first) }
            }
        }
        let wholeBlob = state.withLock { $0.whole }
        for block in range.lowerBound / options.blockSize ... (range.upperBound - 1) / options.blockSize {
            let blockStart = block * options.blockSize
            let data: [UInt8]
            if let whole = wholeBlob {
                data = Array(whole[Int(blockStart) ..< Int(min(size, blockStart + options.blockSize))])
            } else if let d = have[block] ?? fetched[block] {
                data = d
            } else {
                throw RegistryError.invalidResponse(url: digest, reason: "block \(block) missing after fetch")
            }
            let from = max(range.lowerBound, blockStart)
            let to = min(range.upperBound, blockStart + Int64(data.count))
            data.withUnsafeBytes { source in
                let src = UnsafeRawBufferPointer(rebasing: source[Int(from - blockStart) ..< Int(to - blockStart)])
                UnsafeMutableRawBufferPointer(rebasing: buffer[Int(from - offset) ..< Int(to - offset)]).copyMemory(from: src)
            }
        }
    }

    private func slice(_ bytes: [UInt8], block: Int64, first: Int64) -> [UInt8] {
        let start = Int((block - first) * options.blockSize)
        return Array(bytes[start ..< min(bytes.count, start + Int(options.blockSize))])
    }

    /// Under the lock: takes what is cached, joins fetches in flight, and starts new fetches
    /// for the missing runs (coalesced, split at the request size limit). A foreground reader
    /// joining a deferred background fetch releases it.
    private func acquire(_ range: Range<Int64>, priority: Priority = .foreground) -> (have: [Int64: [UInt8]], fetches: [Fetch]) {
        let firstBlock = range.lowerBound / options.blockSize
        let lastBlock = (range.upperBound - 1) / options.blockSize
        let blocksPerRequest = max(1, options.maximumRequestSize / options.blockSize)
        var started: [Fetch] = []
        var released: [CheckedContinuation<Void, Never>] = []
        let result: ([Int64: [UInt8]], [Fetch]) = state.withLock { state in
            if state.whole != nil { return ([:], []) }
            var have: [Int64: [UInt8]] = [:]
            var waits: [Fetch] = []
            var runStart: Int64?
            // A guess gets nothing back and is no read's hit, miss or wait.
            let isRead = priority != .readAhead
            func closeRun(at end: Int64) {
                guard let start = runStart else { return }
                var s = start
                while s < end {
                    let e = min(end, s + blocksPerRequest)
                    let fetch = Fetch(first: s, end: e, priority: priority)
                    switch priority {
                    case .foreground: state.foregroundInFlight += 1
                    case .background: state.unsent.insert(ObjectIdentifier(fetch))
                    case .readAhead: break
                    }
                    for b in s ..< e { state.inFlight[b] = fetch }
                    started.append(fetch)
                    waits.append(fetch)
                    s = e
                }
                runStart = nil
            }
            for block in firstBlock ... lastBlock {
                if let cached = state.blocks[block] {
                    closeRun(at: block)
                    state.tick += 1
                    state.blocks[block]!.tick = state.tick
                    if isRead {
                        have[block] = cached.data
                        state.statistics.cacheHits += 1
                    }
                } else if let fetch = state.inFlight[block] {
                    closeRun(at: block)
                    if !waits.contains(where: { $0 === fetch }) { waits.append(fetch) }
                    if priority == .foreground {
                        // Someone waits for it now: send it, and no cancellation may drop it any more.
                        state.unsent.remove(ObjectIdentifier(fetch))
                        if let waiting = state.deferred.removeValue(forKey: ObjectIdentifier(fetch)) { released.append(waiting) }
                    }
                    if isRead { state.statistics.sharedWaits += 1 }
                } else {
                    if runStart == nil { runStart = block }
                    if isRead { state.statistics.cacheMisses += 1 }
                }
            }
            closeRun(at: lastBlock + 1)
            return (have, waits)
        }
        for waiting in released { waiting.resume() }
        for fetch in started { start(fetch) }
        return result
    }

    /// For a background fetch: returns once no foreground request is in flight (or a foreground
    /// reader needs this fetch's blocks).
    private func yieldToForeground(_ fetch: Fetch) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let wait = state.withLock { state in
                guard state.foregroundBusy, state.unsent.contains(ObjectIdentifier(fetch)) else { return false }
                state.deferred[ObjectIdentifier(fetch)] = continuation
                state.statistics.backgroundDeferrals += 1
                return true
            }
            if !wait { continuation.resume() }
        }
    }

    /// Releases the deferred background fetches once the quiet period after drain number `drain`
    /// has passed, unless the foreground came back meanwhile (its next drain schedules anew).
    private func releaseAfterQuietPeriod(drain: UInt64) {
        let delay = options.backgroundQuietPeriod.components
        let nanoseconds = Int(delay.seconds) * 1_000_000_000 + Int(delay.attoseconds / 1_000_000_000)
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) { [weak self] in
            guard let self else { return }
            let released: [CheckedContinuation<Void, Never>] = self.state.withLock { state in
                guard state.drains == drain, state.foregroundInFlight == 0 else { return [] }
                return state.releaseDeferred()
            }
            for waiting in released { waiting.resume() }
        }
    }

    private func start(_ fetch: Fetch) {
        let lower = fetch.first * options.blockSize
        let upper = min(size, fetch.end * options.blockSize)
        Task(executorPreference: BlockingBridge.shared) {
            // Bounded parallelism: the bridge's threads may block here, the cooperative pool never does.
            let slots = fetch.priority == .readAhead ? self.readAheadLimiter : self.limiter
            if fetch.priority == .background {
                // Yield, then look again with a slot in hand: a foreground read may have started
                // while this waited for the slot, and this must not go out beside it.
                let id = ObjectIdentifier(fetch)
                while true {
                    await self.yieldToForeground(fetch)
                    slots.wait()
                    enum Next { case send, yieldAgain, drop }
                    let next: Next = self.state.withLock { state in
                        if state.dropped.remove(id) != nil { return .drop }
                        if state.foregroundBusy && state.unsent.contains(id) { return .yieldAgain }
                        state.unsent.remove(id)
                        return .send
                    }
                    if next == .send { break }
                    slots.signal()
                    if next == .drop {
                        fetch.finish(.failure(.cancelled))
                        return
                    }
                }
            } else {
                slots.wait()
            }
            defer { slots.signal() }
            let result: Result<[UInt8], RegistryError>
            do throws(RegistryError) {
                let bytes = try await self.client.fetchRange(self.repository, digest: self.digest, range: lower ..< upper)
                result = .success(bytes)
                self.store(fetch, bytes)
            } catch {
                if case .rangeNotSupported = error, self.options.fallBackToFullDownload {
                    result = await self.downloadWhole(lower ..< upper)
                } else {
                    result = .failure(error)
                }
                self.store(fetch, nil)
            }
            fetch.finish(result)
        }
    }

    /// The fallback for servers that ignore Range: the whole blob once, then every read from memory.
    private func downloadWhole(_ range: Range<Int64>) async -> Result<[UInt8], RegistryError> {
        do throws(RegistryError) {
            let whole = try await client.fetchBlob(repository, digest: digest, limit: Int(size))
            state.withLock {
                $0.whole = whole
                $0.statistics.requests += 1
                $0.statistics.bytesFetched += Int64(whole.count)
            }
            return .success(Array(whole[Int(range.lowerBound) ..< Int(range.upperBound)]))
        } catch {
            return .failure(error)
        }
    }

    /// Moves a finished fetch's blocks from the in-flight table into the cache, evicting
    /// least recently used blocks beyond the memory limit.
    private func store(_ fetch: Fetch, _ bytes: [UInt8]?) {
        let released: [CheckedContinuation<Void, Never>] = state.withLock { state in
            for block in fetch.first ..< fetch.end where state.inFlight[block] === fetch {
                state.inFlight[block] = nil
            }
            var released: [CheckedContinuation<Void, Never>] = []
            if fetch.priority == .foreground {
                state.foregroundInFlight -= 1
                if state.foregroundInFlight == 0 {
                    if options.backgroundQuietPeriod > .zero {
                        state.drains += 1
                        state.quietUntil = ContinuousClock.now + options.backgroundQuietPeriod
                        releaseAfterQuietPeriod(drain: state.drains)
                    } else {
                        released = state.releaseDeferred()
                    }
                }
            }
            guard let bytes else { return released }
            state.statistics.requests += 1
            if fetch.priority == .background { state.statistics.backgroundRequests += 1 }
            if fetch.priority == .readAhead {
                state.statistics.readAheadRequests += 1
                state.statistics.readAheadBytes += Int64(bytes.count)
            }
            state.statistics.bytesFetched += Int64(bytes.count)
            for block in fetch.first ..< fetch.end {
                let data = slice(bytes, block: block, first: fetch.first)
                state.tick += 1
                if let old = state.blocks[block] { state.cachedBytes -= Int64(old.data.count) }
                state.blocks[block] = (data, state.tick)
                state.cachedBytes += Int64(data.count)
            }
            if state.cachedBytes > options.memoryLimit {
                let target = options.memoryLimit * 9 / 10
                for (block, entry) in state.blocks.sorted(by: { $0.value.tick < $1.value.tick }) {
                    guard state.cachedBytes > target else { break }
                    state.blocks[block] = nil
                    state.cachedBytes -= Int64(entry.data.count)
                }
            }
            return released
        }
        for waiting in released { waiting.resume() }
    }
}
