import EStargzCore
import LazyFS
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(index)` on `count` real threads at once and waits for all of them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Job: @unchecked Sendable {
        let index: Int
        let body: @Sendable (Int) -> Void
        init(_ index: Int, _ body: @escaping @Sendable (Int) -> Void) { self.index = index; self.body = body }
    }
    var threads: [pthread_t] = []
    for index in 0 ..< count {
        var thread = pthread_t()
        let job = Unmanaged.passRetained(Job(index, body)).toOpaque()
        precondition(pthread_create(&thread, nil, { argument in
            let job = Unmanaged<Job>.fromOpaque(argument!).takeRetainedValue()
            job.body(job.index)
            return nil
        }, job) == 0)
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
}

/// Files of awkward sizes around the 64 KiB chunk size.
enum ReadLayer {
    static let files: [(path: String, content: [UInt8])] = [
        ("data/large", testBytes(3 << 20, seed: 1)),
        ("data/medium", testBytes(700_001, seed: 2)),
        ("data/three-chunks", testBytes(3 * 65_536, seed: 3)),
        ("data/just-over", testBytes(65_537, seed: 4)),
        ("data/one", [42]),
        ("data/empty", []),
        ("first", testBytes(200_000, seed: 5)),
        ("second", testBytes(100_000, seed: 6)),
    ]

    static func tar() throws -> [UInt8] {
        var b = TarBuilder()
        try b.append(header("./", .directory, mode: 0o755))
        try b.append(header("data/", .directory, mode: 0o755))
        for (path, content) in files { try b.append(header(path, .regular), content: content) }
        return b.finish()
    }

    static func content(_ path: String) -> [UInt8] { files.first { $0.path == path }!.content }
}

@Suite(.serialized, .enabled(if: canMount, "needs root and /dev/fuse")) struct ReadTests {
    @Test func concurrentRandomReadsReturnExactBytes() throws {
        let dir = TemporaryDirectory()
        let blob = try convert(try ReadLayer.tar(), in: dir, name: "layer")
        let mountpoint = dir.directory("mnt")
        try withMount(try fileSystem([blob]) { $0.prefetch = false }, at: mountpoint) { mount in
            let mismatches = Atomic<Int>(0)
            let reads = Atomic<Int>(0)
            onThreads(12) { thread in
                var state = UInt64(thread + 1) &* 0x9E37_79B9_7F4A_7C15
                func next() -> UInt64 { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state }
                for _ in 0 ..< 150 {
                    // Half the threads all hammer the same file, the others spread out.
                    let file = thread % 2 == 0 ? ReadLayer.files[0] : ReadLayer.files[Int(next() % UInt64(ReadLayer.files.count))]
                    let size = file.content.count
                    let offset = size == 0 ? 0 : Int(next() % UInt64(size + 10))
                    let count = Int(next() % 300_000) + 1
                    let expected = offset >= size ? [] : Array(file.content[offset ..< min(size, offset + count)])
                    // A third of the reads bypass the page cache, so the file system sees concurrent requests throughout.
                    let direct = thread % 3 == 0
                    guard case let .success(bytes) = readRange(mountpoint + "/" + file.path, offset: offset, count: count, direct: direct),
                          bytes == expected else {
                        mismatches.add(1, ordering: .relaxed)
                        continue
                    }
                    reads.add(1, ordering: .relaxed)
                }
            }
            #expect(mismatches.load(ordering: .relaxed) == 0)
            #expect(reads.load(ordering: .relaxed) == 12 * 150)
            #expect(mount.statistics.readErrors == 0)
            // Every chunk was inflated at most a few times: the cache served the rest.
            #expect(mount.statistics.cacheHits > 0)
        }
    }

    @Test func corruptChunkFailsOnlyItsFileWithEIO() throws {
        let dir = TemporaryDirectory()
        let blobPath = try convert(try ReadLayer.tar(), in: dir, name: "layer")
        var blob = try readFile(blobPath)
        let reader = try LayerReader(source: MemorySource(blob))
        let victim = reader.entry(at: "data/large")!
        let chunk = reader.chunks(of: victim).last!  // far from the start, beyond any readahead of the first bytes
        blob[Int(chunk.blobOffset + (chunk.blobEnd - chunk.blobOffset) / 2)] ^= 0x01
        try writeFile(blobPath, blob)

        let mountpoint = dir.directory("mnt")
        try withMount(try fileSystem([blobPath]) { $0.prefetch = false }, at: mountpoint) { mount in
            let path = mountpoint + "/data/large"
            #expect(readRange(path, offset: Int(chunk.fileOffset), count: 100) == .failure(Errno(EIO)))
            #expect(readRange(path, offset: 0, count: 3 << 20) == .failure(Errno(EIO)))
            // Again: nothing unverified was cached.
            #expect(readRange(path, offset: Int(chunk.fileOffset), count: 100) == .failure(Errno(EIO)))
            // The chunks before it are fine.
            #expect(readRange(path, offset: 0, count: 65_536) == .success(Array(ReadLayer.content("data/large")[0 ..< 65_536])))
            for (name, content) in ReadLayer.files where name != "data/large" {
                #expect(readRange(mountpoint + "/" + name, offset: 0, count: content.count + 1) == .success(content), "\(name)")
            }
            let stats = mount.statistics
            #expect(stats.readErrors >= 2)
            #expect(stats.verificationFailures >= 2)
            var info = stat()
            #expect(stat(mountpoint + "/data", &info) == 0)  // still mounted and serving
        }
    }

    /// A source that fails its next `failures` reads with an I/O error (a registry hiccup).
    final class FlakySource: RandomAccessSource {
        let base: FileSource
        let failures = Atomic<Int>(0)
        init(_ base: FileSource) { self.base = base }
        var size: Int64 { base.size }
        func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws {
            if failures.load(ordering: .relaxed) > 0 {
                failures.subtract(1, ordering: .relaxed)
                throw EStargzError.io(operation: "pread", path: "flaky", errno: EIO)
            }
            try base.read(into: buffer, at: offset)
        }
    }

    @Test func sourceFailuresAreRetriedThenGiveEIO() throws {
        let dir = TemporaryDirectory()
        let source = FlakySource(try FileSource(path: try convert(try ReadLayer.tar(), in: dir, name: "layer")))
        var options = LazyFileSystem.Options()
        options.prefetch = false
        options.readAttempts = 3
        let fs = try LazyFileSystem(sources: [source], options: options)
        let mountpoint = dir.directory("mnt")
        try withMount(fs, at: mountpoint) { mount in
            source.failures.store(2, ordering: .relaxed)  // two failures, the third attempt works
            #expect(readRange(mountpoint + "/second", offset: 0, count: 100_000) == .success(ReadLayer.content("second")))
            source.failures.store(1_000_000, ordering: .relaxed)  // down for good
            #expect(readRange(mountpoint + "/data/medium", offset: 0, count: 10) == .failure(Errno(EIO)))
            #expect(mount.statistics.readErrors >= 1)  // the kernel may retry a failed readahead page itself
            source.failures.store(0, ordering: .relaxed)  // back: the mount is still up and the file reads
            #expect(readRange(mountpoint + "/data/medium", offset: 0, count: 700_001) == .success(ReadLayer.content("data/medium")))
        }
    }

    /// A source that takes 30 ms per read once `slow` is set (a slow network).
    final class SlowSource: RandomAccessSource {
        let base: FileSource
        let slow = Atomic<Bool>(false)
        init(_ base: FileSource) { self.base = base }
        var size: Int64 { base.size }
        func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws {
            if slow.load(ordering: .relaxed) { usleep(30_000) }
            try base.read(into: buffer, at: offset)
        }
    }

    @Test func backgroundFetchStopsAtUnmount() throws {
        let dir = TemporaryDirectory()
        let source = SlowSource(try FileSource(path: try convert(try ReadLayer.tar(), in: dir, name: "layer")))
        var options = LazyFileSystem.Options()
        options.backgroundFetch = true
        let fs = try LazyFileSystem(sources: [source], options: options)
        source.slow.store(true, ordering: .relaxed)  // ~70 chunks: about two seconds to fetch them all
        let mount = try fs.mount(at: dir.directory("mnt"))
        #expect(eventually(5) { fs.statistics.prefetchedBytes > 0 })
        var start = timespec(), end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        mount.unmount()
        clock_gettime(CLOCK_MONOTONIC, &end)
        let elapsed = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
        #expect(elapsed < 1)
        let fetched = fs.statistics.prefetchedBytes
        #expect(fetched > 0)
        #expect(fetched < ReadLayer.files.reduce(0) { $0 + Int64($1.content.count) })
        usleep(100_000)
        #expect(fs.statistics.prefetchedBytes == fetched)  // nothing runs after unmount
    }

    @Test func statsFileAccessLogAndHiddenControlDirectory() throws {
        let dir = TemporaryDirectory()
        let blob = try convert(try ReadLayer.tar(), in: dir, name: "layer")
        let mountpoint = dir.directory("mnt")
        let log = dir.file("access.log")
        try withMount(try fileSystem([blob]) { $0.prefetch = false; $0.accessLogPath = log }, at: mountpoint) { mount in
            for path in ["second", "data/one", "second", "data/medium", "data/one"] {
                #expect(readRange(mountpoint + "/" + path, offset: 0, count: 10).map(\.count) == .success(min(10, ReadLayer.content(path).count)))
            }
            let fd = open(mountpoint + "/first", O_RDONLY)  // opening alone counts as an access
            #expect(fd >= 0)
            close(fd)
            #expect(String(decoding: try readFile(log), as: UTF8.self) == "second\ndata/one\ndata/medium\nfirst\n")

            // The file's size is unknown to stat (generated on open), so read past it.
            let stats = try readRange(mountpoint + "/.stargz-snapshotter/stats", offset: 0, count: 4096).get()
            let text = String(decoding: stats, as: UTF8.self)
            #expect(text.hasPrefix("{\"bytesFetched\":\(mount.statistics.bytesFetched),"))
            #expect(text.contains("\"chunksVerified\":\(mount.statistics.chunksVerified),"))
            #expect(text.contains("\"readErrors\":0,"))
            // Reachable by name, not listed, so the tree stays the layer's.
            #expect(shell("ls -a '\(mountpoint)' | grep -q stargz-snapshotter") != 0)
            #expect(shell("ls '\(mountpoint)/.stargz-snapshotter' | grep -qx stats") == 0)
        }
    }

    @Test func prefetchFillsTheCacheWithThePrioritizedRegionOnly() throws {
        let dir = TemporaryDirectory()
        let blob = try convert(try ReadLayer.tar(), in: dir, name: "layer", prioritized: ["first", "second"])
        let mountpoint = dir.directory("mnt")
        let fs = try fileSystem([blob])
        try withMount(fs, at: mountpoint) { mount in
            fs.waitForFetching()
            #expect(mount.statistics.prefetchedBytes == 300_000)
            let verified = mount.statistics.chunksVerified
            #expect(readRange(mountpoint + "/first", offset: 0, count: 200_000) == .success(ReadLayer.content("first")))
            #expect(mount.statistics.chunksVerified == verified)  // all from the cache
            #expect(mount.statistics.cacheHits > 0)
        }
        let everything = try fileSystem([blob]) { $0.backgroundFetch = true }
        try withMount(everything, at: mountpoint) { mount in
            everything.waitForFetching()
            #expect(mount.statistics.prefetchedBytes == ReadLayer.files.reduce(0) { $0 + Int64($1.content.count) })
        }
        let lazy = try fileSystem([blob]) { $0.prefetch = false }
        try withMount(lazy, at: mountpoint) { mount in
            lazy.waitForFetching()
            #expect(mount.statistics.prefetchedBytes == 0)
            #expect(mount.statistics.bytesFetched == 0)
        }
    }
}

@Suite(.serialized, .enabled(if: canMount, "needs root and /dev/fuse")) struct LifecycleTests {
    @Test func staleMountpointIsClearedOnTheNextMount() throws {
        let dir = TemporaryDirectory()
        let blob = try convert(try ReadLayer.tar(), in: dir, name: "layer")
        let mountpoint = dir.directory("mnt")
        // What a crashed daemon leaves: a FUSE mount whose device is closed.
        let fd = open("/dev/fuse", O_RDWR)
        #expect(fd >= 0)
        #expect(mount("estargz", mountpoint, "fuse.estargz", 0, "fd=\(fd),rootmode=40000,user_id=0,group_id=0") == 0)
        close(fd)
        var info = stat()
        #expect(stat(mountpoint, &info) == -1 && errno == ENOTCONN)
        try withMount(try fileSystem([blob]), at: mountpoint) { _ in
            #expect(readRange(mountpoint + "/data/one", offset: 0, count: 5) == .success([42]))
        }
        #expect(shell("grep -q ' \(mountpoint) ' /proc/mounts") != 0)
    }

    @Test func unmountSucceedsWithAFileStillOpen() throws {
        let dir = TemporaryDirectory()
        let blob = try convert(try ReadLayer.tar(), in: dir, name: "layer")
        let mountpoint = dir.directory("mnt")
        let mount = try fileSystem([blob]).mount(at: mountpoint)
        let fd = open(mountpoint + "/data/medium", O_RDONLY)
        #expect(fd >= 0)
        mount.unmount()
        mount.unmount()  // idempotent
        close(fd)
        #expect(shell("grep -q ' \(mountpoint) ' /proc/mounts") != 0)
    }
}
