/// Somewhere verified chunks can be kept and found again by their digest, so a chunk
/// shared by several files or layers is fetched and inflated once.
///
/// ``LayerReader`` stores a chunk only after its SHA-256 matched, and trusts what
/// `lookup` returns: an implementation that keeps bytes where they could change
/// (a disk cache) must verify them before reporting a hit.
public protocol ChunkCache: Sendable {
    /// Fills `buffer` (exactly the chunk's size) with the chunk's bytes and returns true,
    /// or returns false when the chunk is not cached.
    func lookup(_ digest: SHA256Digest, into buffer: UnsafeMutableRawBufferPointer) -> Bool
    /// Offers a verified chunk to the cache (which may decline it).
    func store(_ digest: SHA256Digest, _ bytes: UnsafeRawBufferPointer)
    /// Whether the cache holds the chunk now, without reading or verifying it: a guess of what
    /// will be read skips fetching such chunks (a lookup may still miss, and then the read fetches).
    func holds(_ digest: SHA256Digest) -> Bool
}

extension ChunkCache {
    /// Caches that cannot tell cheaply say no: a guess then fetches as if nothing were cached.
    public func holds(_ digest: SHA256Digest) -> Bool { false }
}

/// Counters of one ``LayerReader``, safe to read while reads run.
public struct LayerReaderStatistics: Sendable, Equatable {
    /// Chunks inflated and verified (cache hits not included).
    public var chunksVerified: Int64 = 0
    /// Uncompressed bytes of those chunks.
    public var bytesVerified: Int64 = 0
    /// Compressed bytes requested from the source for chunks.
    public var bytesRead: Int64 = 0
    /// Chunks served by the cache.
    public var cacheHits: Int64 = 0
    /// Chunks that failed to inflate or to verify.
    public var verificationFailures: Int64 = 0
}
