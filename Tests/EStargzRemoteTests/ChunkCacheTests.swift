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

    /// A cache directory on a 256 KiB tmpfs: storing 1 MiB of chunks fails part of the time; every
    /// failure is counted, only the first of each kind is reported (ENOSPC, then EROFS once the
    /// file system is read-only), no temporary file is left, and every file that is there holds
    /// exactly its chunk. Temporaries of a writer that died are removed when a cache opens.
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root")) func fullOrReadOnlyDiskIsReportedOnceAndLeavesNoPartialFile() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let cache = dir.path + "/small"
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        try TestSupport.run("/bin/mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", cache])
        defer { _ = try? TestSupport.run("/bin/umount", ["-l", cache]) }
        let reports = Reports()
        let disk = try DiskChunkCache(directory: cache, capacity: 1 << 30) { reports.add($0) }
        let chunks = (0 ..< 16).map { TestImages.noise(64 << 10, seed: UInt64(500 + $0)) }
        for chunk in chunks { store(disk, chunk) }
        #expect(disk.storeFailures > 0)
        #expect(reports.lines.count == 1, "\(reports.lines)")
        #expect(reports.lines.first?.contains("No space left on device") == true, "\(reports.lines)")
        func checkFiles() throws {
            for name in try FileManager.default.contentsOfDirectory(atPath: cache) {
                #expect(!name.contains(".tmp."), "partial file left: \(name)")
                #expect(SHA256Digest.of(try readFile(cache + "/" + name)).description == "sha256:" + name)
            }
        }
        try checkFiles()
        // The cache keeps working within the space there is: the newest chunks are found.
        #expect(lookup(disk, chunks.last!) == chunks.last!)

        try TestSupport.run("/bin/mount", ["-o", "remount,ro", cache])
        let before = disk.storeFailures
        for seed in 0 ..< 4 { store(disk, TestImages.noise(64 << 10, seed: UInt64(900 + seed))) }
        #expect(disk.storeFailures == before + 4)
        #expect(reports.lines.count == 2 && reports.lines.last?.contains("Read-only file system") == true, "\(reports.lines)")
        try checkFiles()
        try TestSupport.run("/bin/mount", ["-o", "remount,rw", cache])

        // A writer killed mid-write leaves NAME.tmp.PID.RANDOM; the next cache to open removes it.
        let orphan = cache + "/" + String(repeating: "a", count: 64) + ".tmp.999999999.1"
        try writeFile(orphan, [1, 2, 3])
        _ = try DiskChunkCache(directory: cache, capacity: 1 << 30) { _ in }
        #expect(!FileManager.default.fileExists(atPath: orphan))
    }
}

private final class Reports: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func add(_ line: String) { lock.lock(); stored.append(line); lock.unlock() }
    var lines: [String] { lock.lock(); defer { lock.unlock() }; return stored }
}
