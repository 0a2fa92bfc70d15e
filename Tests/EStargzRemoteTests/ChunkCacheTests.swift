import EStargzCore
@testable import EStargzRemote
import Foundation
import TestSupport
import Testing

@Suite struct ChunkCacheTests {
    private func lookup(_ cache: any ChunkCache, _ bytes: [UInt8]) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: bytes.count)
        let hit = out.withUnsafeMutableBytes { cache.lookup(SHA256Digest.of(bytes), into: $0) }
        return hit ? out : nil
    }

    private func store(_ cache: any ChunkCache, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { cache.store(SHA256Digest.of(bytes), $0) }
    }

    @Test func memoryCacheEvictsLeastRecentlyUsed() {
        let cache = MemoryChunkCache(capacity: 3000)
        let a = [UInt8](repeating: 1, count: 1000), b = [UInt8](repeating: 2, count: 1000), c = [UInt8](repeating: 3, count: 1000)
        store(cache, a); store(cache, b); store(cache, c)
        #expect(lookup(cache, a) == a) // a is now the most recent
        store(cache, [UInt8](repeating: 4, count: 1000))
        #expect(lookup(cache, a) == a)
        #expect(lookup(cache, b) == nil)
        #expect(cache.bytesHeld <= 3000)
    }

    @Test func diskCacheVerifiesAndEvicts() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let cache = try DiskChunkCache(directory: dir.path + "/cache", capacity: 10_000)
        let chunk = TestImages.noise(4000, seed: 7)
        store(cache, chunk)
        #expect(lookup(cache, chunk) == chunk)
        // Another process (or a new cache object) shares the file by its digest.
        let other = try DiskChunkCache(directory: dir.path + "/cache", capacity: 10_000)
        #expect(lookup(other, chunk) == chunk)

        // A corrupted file is never served, and is deleted.
        let path = cache.path(for: SHA256Digest.of(chunk))
        var corrupt = chunk
        corrupt[100] ^= 0xFF
        try Data(corrupt).write(to: URL(fileURLWithPath: path))
        #expect(lookup(cache, chunk) == nil)
        #expect(cache.counts.verificationFailures == 1)
        #expect(!FileManager.default.fileExists(atPath: path))

        // Beyond the bound the oldest files go.
        for seed in 1 ... 4 { store(cache, TestImages.noise(4000, seed: UInt64(100 + seed))) }
        let remaining = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/cache")
        #expect(remaining.count <= 2)
        #expect(lookup(cache, TestImages.noise(4000, seed: 104)) != nil)
    }
}
