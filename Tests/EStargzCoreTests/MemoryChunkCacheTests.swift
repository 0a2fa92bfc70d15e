import EStargzCore
import TestSupport
import Testing

@Suite struct MemoryChunkCacheTests {
    private func chunk(_ value: UInt8, _ count: Int = 1000) -> [UInt8] { [UInt8](repeating: value, count: count) }

    @discardableResult
    private func store(_ cache: MemoryChunkCache, _ bytes: [UInt8]) -> SHA256Digest {
        let digest = SHA256Digest.of(bytes)
        bytes.withUnsafeBytes { cache.store(digest, $0) }
        return digest
    }

    private func lookup(_ cache: MemoryChunkCache, _ bytes: [UInt8]) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: bytes.count)
        let hit = out.withUnsafeMutableBytes { cache.lookup(SHA256Digest.of(bytes), into: $0) }
        return hit ? out : nil
    }

    @Test func evictsLeastRecentlyUsedWithinItsBudget() {
        let cache = MemoryChunkCache(capacity: 4000)
        let (a, b, c, d) = (chunk(1), chunk(2), chunk(3), chunk(4))
        for bytes in [a, b, c, d] { store(cache, bytes) }
        #expect(cache.bytesHeld == 4000)
        #expect(lookup(cache, a) == a)  // now the most recently used
        store(cache, chunk(5))  // over budget: evicts down to 3/4, oldest first
        #expect(cache.bytesHeld <= 3000)
        #expect(lookup(cache, a) == a)
        #expect(lookup(cache, b) == nil)
        #expect(lookup(cache, c) == nil)
        #expect(lookup(cache, d) == d)
        #expect(cache.counts == (hits: 3, misses: 2))
    }

    @Test func declinesAChunkLargerThanHalfTheBudget() {
        let cache = MemoryChunkCache(capacity: 4000)
        let small = chunk(1)
        store(cache, small)
        let huge = chunk(9, 2500)
        store(cache, huge)
        #expect(lookup(cache, huge) == nil)
        #expect(lookup(cache, small) == small)
    }

    @Test func aLookupOfTheWrongSizeIsAMiss() {
        let cache = MemoryChunkCache()
        let bytes = chunk(7)
        let digest = store(cache, bytes)
        var short = [UInt8](repeating: 0, count: 999)
        #expect(!short.withUnsafeMutableBytes { cache.lookup(digest, into: $0) })
    }

    @Test func copiesASliceOfACachedChunk() {
        let cache = MemoryChunkCache()
        let bytes = (0 ..< 1000).map { UInt8(truncatingIfNeeded: $0) }
        let digest = store(cache, bytes)
        var out = [UInt8](repeating: 0, count: 100)
        #expect(out.withUnsafeMutableBytes { cache.copy(digest, from: 300, into: $0) })
        #expect(out == Array(bytes[300 ..< 400]))
        // Outside the chunk, or a chunk not cached: false, buffer untouched.
        #expect(!out.withUnsafeMutableBytes { cache.copy(digest, from: 950, into: $0) })
        #expect(!out.withUnsafeMutableBytes { cache.copy(SHA256Digest.of(chunk(1)), from: 0, into: $0) })
        #expect(cache.counts.hits == 1)
    }

    @Test func aMissIsLookedUpInTheBackingCacheAndKept() {
        let backing = MemoryChunkCache()
        let front = MemoryChunkCache(capacity: 4000, backing: backing)
        let a = chunk(1), b = chunk(2)
        store(front, a)  // goes to both tiers
        #expect(lookup(backing, a) == a)
        store(backing, b)  // only behind
        var slice = [UInt8](repeating: 0, count: 10)
        #expect(!slice.withUnsafeMutableBytes { front.copy(SHA256Digest.of(b), from: 0, into: $0) })
        #expect(lookup(front, b) == b)  // found behind, now kept in front
        #expect(slice.withUnsafeMutableBytes { front.copy(SHA256Digest.of(b), from: 0, into: $0) })
        #expect(lookup(front, chunk(3)) == nil)
    }

    @Test func aSharedCacheServesTheSecondReaderWithoutFetching() throws {
        let content = testBytes(300_000, seed: 3)
        var tar = TarBuilder()
        try tar.append(header("file", .regular), content: content)
        var options = LayerWriter.Options()
        options.chunkSize = 64 << 10
        let blob = try convert(tar.finish(), in: TemporaryDirectory(), options: options).blob
        let cache = MemoryChunkCache()
        let first = try LayerReader(source: MemorySource(blob), cache: cache)
        #expect(try first.read(path: "file") == content)
        let second = try LayerReader(source: MemorySource(blob), cache: cache)
        #expect(try second.read(path: "file") == content)
        #expect(second.statistics.bytesRead == 0)
        #expect(second.statistics.cacheHits == first.statistics.chunksVerified + first.statistics.cacheHits)
        #expect(second.statistics.chunksVerified == 0)
    }
}
