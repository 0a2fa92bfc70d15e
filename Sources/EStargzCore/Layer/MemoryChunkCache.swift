import Synchronization

/// Verified chunks in memory, least recently used evicted first, bounded in bytes.
///
/// Chunks in memory cannot change after ``LayerReader`` verified them, so hits are served
/// without hashing again. One cache can be shared by every layer of a mount or an image: a chunk
/// that several files or layers hold is then fetched and inflated once.
///
/// With a `backing` cache (an on-disk one, say) it is the fast tier in front of it: a miss here
/// is looked up there and kept here when found, and every stored chunk goes to both.
///
/// ```swift
/// let cache = MemoryChunkCache(capacity: 256 << 20)
/// let base = try LayerReader(source: try FileSource(path: "base.esgz"), cache: cache)
/// let app = try LayerReader(source: try FileSource(path: "app.esgz"), cache: cache)
/// ```
public final class MemoryChunkCache: ChunkCache {
    /// Most bytes held at once.
    public let capacity: Int
    /// The slower cache behind this one, if any.
    public let backing: (any ChunkCache)?
    private let state = Mutex(State())

    private struct State {
        var chunks: [SHA256Digest: (bytes: [UInt8], lastUse: UInt64)] = [:]
        var bytes = 0
        var clock: UInt64 = 0
        var hits: Int64 = 0
        var misses: Int64 = 0
    }

    /// A cache of at most `capacity` bytes (64 MiB by default), in front of `backing` when given.
    public init(capacity: Int = 64 << 20, backing: (any ChunkCache)? = nil) {
        self.capacity = capacity
        self.backing = backing
    }

    /// Chunks served from memory so far (``lookup(_:into:)`` and ``copy(_:from:into:)``) and lookups
    /// that did not find the chunk in memory (the backing cache counts its own).
    public var counts: (hits: Int64, misses: Int64) { state.withLock { ($0.hits, $0.misses) } }

    /// Bytes held now.
    public var bytesHeld: Int { state.withLock { $0.bytes } }

    public func lookup(_ digest: SHA256Digest, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        if let bytes = take(digest, countingMiss: true, fits: { $0 == buffer.count }) {
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return true
        }
        guard let backing, backing.lookup(digest, into: buffer) else { return false }
        keep(digest, UnsafeRawBufferPointer(buffer))
        return true
    }

    /// Copies `buffer.count` bytes of a chunk held in memory starting at `offset`, without the
    /// whole-chunk copy ``lookup(_:into:)`` makes (a kernel read is often a slice of a chunk); false
    /// when the chunk is not in memory (the backing cache is not asked) or the range is outside it.
    /// A miss here is not counted.
    public func copy(_ digest: SHA256Digest, from offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard offset >= 0, let bytes = take(digest, countingMiss: false, fits: { offset + buffer.count <= $0 }) else { return false }
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset ..< offset + buffer.count])) }
        return true
    }

    /// Whether the chunk is held in memory (without marking it used or counting a hit).
    public func contains(_ digest: SHA256Digest) -> Bool {
        state.withLock { $0.chunks[digest] != nil }
    }

    /// Whether the chunk is held in memory or, as far as it can tell, by the backing cache.
    public func holds(_ digest: SHA256Digest) -> Bool {
        contains(digest) || (backing?.holds(digest) ?? false)
    }

    /// The chunk's bytes, marked as just used and counted as a hit, when its size `fits` the
    /// request. Arrays are immutable values, so the copy out of them happens after the lock is
    /// released and readers of different chunks do not queue behind it.
    private func take(_ digest: SHA256Digest, countingMiss: Bool, fits: (Int) -> Bool) -> [UInt8]? {
        state.withLock { state in
            guard let found = state.chunks[digest], fits(found.bytes.count) else {
                if countingMiss { state.misses += 1 }
                return nil
            }
            state.clock += 1
            state.chunks[digest]!.lastUse = state.clock
            state.hits += 1
            return found.bytes
        }
    }

    public func store(_ digest: SHA256Digest, _ bytes: UnsafeRawBufferPointer) {
        keep(digest, bytes)
        backing?.store(digest, bytes)
    }

    /// Adds a verified chunk to the memory tier, evicting the least recently used beyond the bound.
    private func keep(_ digest: SHA256Digest, _ bytes: UnsafeRawBufferPointer) {
        guard bytes.count <= capacity / 2 else { return }  // one huge chunk should not flush everything
        let copy = [UInt8](bytes)
        state.withLock { state in
            guard state.chunks[digest] == nil else { return }
            state.clock += 1
            state.chunks[digest] = (copy, state.clock)
            state.bytes += copy.count
            guard state.bytes > capacity else { return }
            // Evict down to 3/4 in one sorted pass, so the cost is amortized over many stores.
            for (key, value) in state.chunks.sorted(by: { $0.value.lastUse < $1.value.lastUse }) {
                guard state.bytes > capacity / 4 * 3 else { break }
                state.chunks[key] = nil
                state.bytes -= value.bytes.count
            }
        }
    }
}
