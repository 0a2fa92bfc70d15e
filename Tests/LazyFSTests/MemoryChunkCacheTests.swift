import EStargzCore
import LazyFS
import Testing

@Suite struct MemoryChunkCacheTests {
    @Test func evictsLeastRecentlyUsedWithinItsBudget() {
        let cache = MemoryChunkCache(capacity: 4000)
        func store(_ value: UInt8) -> SHA256Digest {
            let bytes = [UInt8](repeating: value, count: 1000)
            let digest = SHA256Digest.of(bytes)
            bytes.withUnsafeBytes { cache.store(digest, $0) }
            return digest
        }
        func hit(_ digest: SHA256Digest, _ value: UInt8) -> Bool {
            var out = [UInt8](repeating: 0, count: 1000)
            let found = out.withUnsafeMutableBytes { cache.lookup(digest, into: $0) }
            return found && out == [UInt8](repeating: value, count: 1000)
        }
        let first = store(1), second = store(2), third = store(3), fourth = store(4)
        #expect(hit(first, 1))  // now the most recently used
        _ = store(5)  // over budget: evicts down to 3/4, oldest first
        #expect(cache.bytes <= 3000)
        #expect(hit(first, 1))
        #expect(!hit(second, 2))
        #expect(!hit(third, 3))
        #expect(hit(fourth, 4))
        // A chunk larger than half the budget is declined rather than flushing everything.
        let huge = [UInt8](repeating: 9, count: 2500)
        huge.withUnsafeBytes { cache.store(SHA256Digest.of(huge), $0) }
        #expect(hit(first, 1))
    }
}
