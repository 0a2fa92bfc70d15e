import TestSupport
import Testing
import CStargzSystem
import Synchronization
@testable import EStargzCore
#if canImport(Glibc)
import Glibc
#endif

@Suite struct FooterTests {
    @Test func eStargzFooterRoundTrips() throws {
        for offset: Int64 in [0, 1, 0x1234_5678_9abc, Int64.max >> 4] {
            let footer = Footer.encode(tocOffset: offset)
            #expect(footer.count == 51)
            let parsed = try Footer.parse([1, 2, 3] + footer)
            #expect(parsed.format == .estargz)
            #expect(parsed.tocOffset == offset)
        }
    }

    @Test func legacyFooterIsRead() throws {
        var legacy: [UInt8] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 22, 0]
        legacy += Array("00000000000004d2STARGZ".utf8)
        legacy += [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]
        #expect(legacy.count == 47)
        let parsed = try Footer.parse([UInt8](repeating: 7, count: 10) + legacy)
        #expect(parsed.format == .legacyStargz)
        #expect(parsed.tocOffset == 0x4d2)
    }

    @Test func garbageIsAnInvalidFooter() {
        #expect(throws: EStargzError.self) { try Footer.parse([UInt8](repeating: 0, count: 51)) }
        var footer = Footer.encode(tocOffset: 10)
        footer[20] = UInt8(ascii: "z")  // not hex
        #expect(throws: EStargzError.self) { try Footer.parse(footer) }
        #expect(throws: EStargzError.self) { try Footer.parse([1, 2, 3]) }
    }
}

@Suite struct LayerRoundTripTests {
    static let chunkSize = 4096

    /// A layer with one of everything.
    static func sampleTar() throws -> (tar: [UInt8], files: [String: [UInt8]]) {
        var builder = TarBuilder()
        var files: [String: [UInt8]] = [:]
        try builder.append(header("./", .directory, mode: 0o755))
        try builder.append(header("etc/", .directory, mode: 0o755))
        for (name, size) in [("etc/empty", 0), ("etc/one", 1), ("etc/exact", chunkSize), ("etc/plusone", chunkSize + 1),
                             ("usr/lib/multi.bin", chunkSize * 5 + 123), ("usr/lib/small.txt", 511)] {
            let content = testBytes(size, seed: UInt64(size + name.count))
            files[name] = content
            var h = header(name, .regular, mode: 0o755, size: Int64(size))
            h.uid = 1000
            h.gid = 1001
            h.userName = "user"
            h.groupName = "group"
            try builder.append(h, content: content)
        }
        var link = header("etc/link", .symlink, mode: 0o777)
        link.linkName = "../usr/lib/small.txt"
        try builder.append(link)
        var hard = header("etc/hard", .hardlink)
        hard.linkName = "usr/lib/multi.bin"
        try builder.append(hard)
        var device = header("dev/null", .characterDevice, mode: 0o666)
        device.devMajor = 1
        device.devMinor = 3
        try builder.append(device)
        try builder.append(header("run/fifo", .fifo, mode: 0o600))
        var withXattr = header("etc/cap", .regular, mode: 0o4755, size: 3)
        withXattr.xattrs = ["security.capability": [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                            "user.note": Array("hello".utf8)]
        try builder.append(withXattr, content: [1, 2, 3])
        files["etc/cap"] = [1, 2, 3]
        return (builder.finish(), files)
    }

    @Test func everyFileReadsBackVerified() throws {
        let dir = TemporaryDirectory()
        let (tar, files) = try Self.sampleTar()
        var options = LayerWriter.Options()
        options.chunkSize = Self.chunkSize
        let (blob, result, _) = try convert(tar, in: dir, options: options)
        #expect(result.compressedSize == Int64(blob.count))

        let layer = try LayerReader(source: MemorySource(blob), tocDigest: result.tocDigest)
        #expect(layer.tocDigest == result.tocDigest)
        #expect(layer.footerFormat == .estargz)
        for (name, content) in files {
            #expect(try layer.read(path: name) == content, "\(name)")
            #expect(try layer.read(path: "/" + name) == content)
            // Ranges that straddle chunk boundaries.
            for (offset, count) in [(0, 1), (Self.chunkSize - 3, 10), (7, Self.chunkSize * 2), (content.count - 1, 5)] where offset >= 0 && offset < content.count {
                let expected = Array(content[offset ..< min(content.count, offset + count)])
                #expect(try layer.read(path: name, offset: Int64(offset), count: count) == expected)
            }
        }
        try layer.verifyAllChunks()

        let multi = try #require(layer.entry(at: "usr/lib/multi.bin"))
        #expect(layer.chunks(of: multi).count == 6)
        let hard = try #require(layer.entry(at: "etc/hard"))
        #expect(hard.id == multi.id)
        #expect(hard.linkCount == 2)
        let link = try #require(layer.entry(at: "etc/link"))
        #expect(link.kind == .symlink && link.linkName == "../usr/lib/small.txt")
        let device = try #require(layer.entry(at: "dev/null"))
        #expect(device.kind == .characterDevice && device.tocEntry.devMajor == 1 && device.tocEntry.devMinor == 3)
        let implicit = try #require(layer.entry(at: "usr"))
        #expect(implicit.kind == .directory && implicit.mode == 0o755)
        let cap = try #require(layer.entry(at: "etc/cap"))
        #expect(cap.xattrs["security.capability"]?.count == 20)
        #expect(cap.mode == 0o4755)
        #expect(cap.modificationTime == 1_700_000_000)
        #expect(layer.entry(at: Landmark.noPrefetch) != nil)
        let names = layer.children(of: try #require(layer.entry(at: "etc"))).map(\.name)
        #expect(names == names.sorted())
        #expect(names.contains("hard") && names.contains("exact"))
    }

    @Test func tocMatchesTheReferenceRules() throws {
        let dir = TemporaryDirectory()
        let (tar, _) = try Self.sampleTar()
        var options = LayerWriter.Options()
        options.chunkSize = Self.chunkSize
        let (blob, _, _) = try convert(tar, in: dir, options: options)
        let toc = try storedTOC(blob)
        #expect(toc.version == 1)
        #expect(toc.entries.first?.name == Landmark.noPrefetch)
        let multi = toc.entries.filter { TarPath.clean($0.name) == "usr/lib/multi.bin" }
        #expect(multi.map(\.type) == [.regular] + Array(repeating: .chunk, count: 5))
        #expect(multi.map(\.chunkOffset) == (0 ..< 6).map { Int64($0 * Self.chunkSize) })
        #expect(multi.map(\.chunkSize) == Array(repeating: Int64(Self.chunkSize), count: 5) + [0])
        #expect(multi[0].digest.hasPrefix("sha256:") && multi[0].size == Int64(Self.chunkSize * 5 + 123))
        #expect(zip(multi, multi.dropFirst()).allSatisfy { $0.offset < $1.offset })
        let empty = try #require(toc.entries.first { $0.name == "etc/empty" })
        #expect(empty.digest == SHA256Digest.of([UInt8]()).description && empty.offset == 0)
        // User names only where they change for an id.
        #expect(toc.entries.filter { $0.userName == "user" }.count == 1)
    }

    @Test func gzipInputGivesTheSameBlob() throws {
        let dir = TemporaryDirectory()
        let (tar, _) = try Self.sampleTar()
        let (blob, result, _) = try convert(tar, in: dir)
        // Two concatenated members, as multi-member .tar.gz files are.
        let half = tar.count / 2
        var gz = try tar[0 ..< half].withUnsafeBytes { try Kernel.compressGzipMember($0, level: 6) }
        gz += try tar[half...].withUnsafeBytes { try Kernel.compressGzipMember($0, level: 1) }
        try writeFile(dir.file("in.tar.gz"), gz)
        let again = try LayerWriter.convert(inputPath: dir.file("in.tar.gz"), outputPath: dir.file("gz.esgz"))
        #expect(again.tocDigest == result.tocDigest)
        #expect(again.diffID == result.diffID)
        #expect(try readFile(dir.file("gz.esgz")) == blob)
    }

    @Test func truncatedGzipInputFailsAndLeavesNoOutput() throws {
        let dir = TemporaryDirectory()
        let (tar, _) = try Self.sampleTar()
        let gz = try tar.withUnsafeBytes { try Kernel.compressGzipMember($0, level: 6) }
        try writeFile(dir.file("cut.tar.gz"), Array(gz[0 ..< gz.count / 2]))
        #expect(throws: EStargzError.self) {
            try LayerWriter.convert(inputPath: dir.file("cut.tar.gz"), outputPath: dir.file("out.esgz"))
        }
        #expect(access(dir.file("out.esgz"), F_OK) != 0)
        #expect(access(dir.file("out.esgz.partial"), F_OK) != 0)
    }

    @Test func prioritizedFilesComeFirstThenTheLandmark() throws {
        let dir = TemporaryDirectory()
        let (tar, _) = try Self.sampleTar()
        var options = LayerWriter.Options()
        options.prioritizedFiles = ["/usr/lib/small.txt", "etc/hard"]
        let (blob, _, _) = try convert(tar, in: dir, options: options)
        let names = try storedTOC(blob).entries.filter { $0.type != .chunk }.map { TarPath.clean($0.name) }
        let landmark = try #require(names.firstIndex(of: Landmark.prefetch))
        #expect(Array(names[0 ..< landmark]) == ["", "usr/lib/small.txt", "etc", "usr/lib/multi.bin", "etc/hard"])
        #expect(!names.contains(Landmark.noPrefetch))
        options.prioritizedFiles = ["no/such/file"]
        #expect(throws: EStargzError.self) { try convert(tar, in: dir, options: options, name: "missing") }
        options.allowMissingPrioritizedFiles = true
        #expect(try convert(tar, in: dir, options: options, name: "allowed").result.missingPrioritizedFiles == ["no/such/file"])
    }

    @Test func laterDuplicateWins() throws {
        let dir = TemporaryDirectory()
        var builder = TarBuilder()
        try builder.append(header("a.txt", .regular, size: 5), content: Array("first".utf8))
        try builder.append(header("b.txt", .regular, size: 1), content: [1])
        try builder.append(header("./a.txt", .regular, size: 6), content: Array("second".utf8))
        let (blob, _, _) = try convert(builder.finish(), in: dir)
        let layer = try LayerReader(source: MemorySource(blob))
        #expect(try layer.read(path: "a.txt") == Array("second".utf8))
        #expect(try storedTOC(blob).entries.filter { TarPath.clean($0.name) == "a.txt" }.count == 1)
    }
}

@Suite struct HostileBlobTests {
    static func sample() throws -> (blob: [UInt8], digest: SHA256Digest, dir: TemporaryDirectory) {
        let dir = TemporaryDirectory()
        var options = LayerWriter.Options()
        options.chunkSize = LayerRoundTripTests.chunkSize
        let (blob, result, _) = try convert(try LayerRoundTripTests.sampleTar().tar, in: dir, options: options)
        return (blob, result.tocDigest, dir)
    }

    @Test func wrongTOCDigestIsRefused() throws {
        let (blob, digest, _) = try Self.sample()
        let wrong = SHA256Digest.of([1, 2, 3])
        #expect(throws: EStargzError.tocDigestMismatch(expected: wrong.description, actual: digest.description)) {
            try LayerReader(source: MemorySource(blob), tocDigest: wrong)
        }
    }

    @Test func flippedChunkByteFailsOnlyThatFile() throws {
        let (original, _, _) = try Self.sample()
        let layer = try LayerReader(source: MemorySource(original))
        let victim = try #require(layer.entry(at: "usr/lib/multi.bin"))
        let chunk = layer.chunks(of: victim)[2]
        var blob = original
        blob[Int(chunk.blobOffset + (chunk.blobEnd - chunk.blobOffset) / 2)] ^= 0x55
        let broken = try LayerReader(source: MemorySource(blob))
        #expect(throws: EStargzError.self) { try broken.read(path: "usr/lib/multi.bin") }
        // The chunks before it still read.
        #expect(try broken.read(path: "usr/lib/multi.bin", count: 2 * LayerRoundTripTests.chunkSize).count == 2 * LayerRoundTripTests.chunkSize)
        #expect(try broken.read(path: "etc/exact") == layer.read(path: "etc/exact"))
        #expect(throws: EStargzError.self) { try broken.verifyAllChunks() }
    }

    @Test func lyingChunkDigestIsAMismatch() throws {
        let (original, _, _) = try Self.sample()
        var toc = try storedTOC(original)
        let index = try #require(toc.entries.firstIndex { $0.name == "etc/one" })
        toc.entries[index].chunkDigest = SHA256Digest.of([9]).description
        let layer = try LayerReader(source: MemorySource(try blob(original, withTOC: toc)))
        do {
            _ = try layer.read(path: "etc/one")
            Issue.record("read returned bytes that do not match the TOC")
        } catch let EStargzError.chunkDigestMismatch(entry, _, expected, _) {
            #expect(entry == "etc/one")
            #expect(expected == SHA256Digest.of([9]).description)
        }
    }

    @Test func tocThatLiesAboutLayoutIsRefused() throws {
        let (original, _, _) = try Self.sample()
        let toc = try storedTOC(original)
        let multi = try #require(toc.entries.firstIndex { $0.name == "usr/lib/multi.bin" })
        var lies: [(String, TOC)] = []
        var t = toc
        t.entries[multi + 1].offset = Int64(original.count) * 2
        lies.append(("offset past the TOC", t))
        t = toc
        t.entries[multi + 2].chunkOffset += 1
        lies.append(("gap between chunks", t))
        t = toc
        t.entries[multi].size += 1
        lies.append(("chunks shorter than the file", t))
        t = toc
        t.entries[multi].chunkSize = 1 << 40
        lies.append(("absurd chunk size", t))
        t = toc
        t.entries.insert(TOCEntry(name: "x", type: .chunk), at: 0)
        lies.append(("chunk without a file", t))
        t = toc
        t.entries[multi].chunkDigest = "md5:abc"
        lies.append(("bad digest text", t))
        t = toc
        var badLink = TOCEntry(name: "dangling", type: .hardlink)
        badLink.linkName = "nowhere"
        t.entries.append(badLink)
        lies.append(("hardlink to nothing", t))
        for (what, lie) in lies {
            // Refused when the layer opens, or at the latest when the lying part is read.
            #expect(throws: EStargzError.self, "\(what)") {
                let layer = try LayerReader(source: MemorySource(try blob(original, withTOC: lie)))
                try layer.verifyAllChunks()
            }
        }
    }

    @Test func truncatedBlobsFailCleanly() throws {
        let (original, _, _) = try Self.sample()
        for cut in [0, 10, 46, 50, original.count / 2, original.count - 52, original.count - 1] {
            #expect(throws: EStargzError.self, "cut at \(cut)") {
                let layer = try LayerReader(source: MemorySource(Array(original[0 ..< cut])))
                try layer.verifyAllChunks()
            }
        }
        // Dropping a middle chunk's bytes (same length, zeros) must not return them.
        var zeroed = original
        let layer = try LayerReader(source: MemorySource(original))
        let chunk = layer.chunks(of: try #require(layer.entry(at: "etc/plusone")))[0]
        for i in Int(chunk.blobOffset) ..< Int(chunk.blobEnd) { zeroed[i] = 0 }
        #expect(throws: EStargzError.self) { try LayerReader(source: MemorySource(zeroed)).read(path: "etc/plusone") }
    }
}

@Suite(.serialized) struct ExtractTests {
    @Test func extractMatchesTheLayer() throws {
        let dir = TemporaryDirectory()
        let (tar, files) = try LayerRoundTripTests.sampleTar()
        let (_, result, path) = try convert(tar, in: dir)
        let layer = try LayerReader(source: try FileSource(path: path), tocDigest: result.tocDigest)
        let out = dir.file("out")
        try layer.extract(to: out)
        for (name, content) in files { #expect(try readFile(out + "/" + name) == content, "\(name)") }
        var info = stat()
        #expect(lstat(out + "/etc/cap", &info) == 0 && info.st_mode & 0o7777 == 0o4755)
        #expect(lstat(out + "/usr/lib/multi.bin", &info) == 0 && info.st_uid == 1000 && info.st_gid == 1001 && info.st_nlink == 2)
        #expect(info.st_mtim.tv_sec == 1_700_000_000)
        #expect(lstat(out + "/etc/link", &info) == 0 && info.st_mode & S_IFMT == S_IFLNK)
        #expect(lstat(out + "/dev/null", &info) == 0 && info.st_mode & S_IFMT == S_IFCHR && info.st_rdev == Extractor.device(1, 3))
        #expect(lstat(out + "/run/fifo", &info) == 0 && info.st_mode & S_IFMT == S_IFIFO)
        #expect(access(out + "/" + Landmark.noPrefetch, F_OK) != 0)
        var value = [UInt8](repeating: 0, count: 64)
        let n = lgetxattr(out + "/etc/cap", "user.note", &value, 64)
        #expect(n == 5 && Array(value[0 ..< 5]) == Array("hello".utf8))
    }

    @Test func pathsThatEscapeAreRefused() throws {
        let dir = TemporaryDirectory()
        let outside = dir.file("outside")
        mkdir(outside, 0o755)
        for (label, entries) in [
            ("dotdot", [(header("../outside/evil", .regular, size: 1), [UInt8(1)])]),
            ("deep dotdot", [(header("a/../../outside/evil", .regular, size: 1), [UInt8(1)])]),
        ] {
            var builder = TarBuilder()
            for (h, content) in entries { try builder.append(h, content: content) }
            let (_, _, path) = try convert(builder.finish(), in: dir, name: label.replacingSpaces())
            let layer = try LayerReader(source: try FileSource(path: path))
            #expect(throws: EStargzError.self, "\(label)") { try layer.extract(to: dir.file("root-\(label.replacingSpaces())")) }
            #expect(access(outside + "/evil", F_OK) != 0, "\(label) wrote outside the root")
        }
        // A symlink pointing outside, then a file through it.
        var builder = TarBuilder()
        var link = header("link", .symlink, mode: 0o777)
        link.linkName = outside
        try builder.append(link)
        try builder.append(header("link/evil", .regular, size: 1), content: [1])
        let (_, _, path) = try convert(builder.finish(), in: dir, name: "symlink")
        let layer = try LayerReader(source: try FileSource(path: path))
        #expect(throws: EStargzError.self) { try layer.extract(to: dir.file("root-symlink")) }
        #expect(access(outside + "/evil", F_OK) != 0)
    }
}

private extension String {
    func replacingSpaces() -> String { String(map { $0 == " " ? "-" : $0 }) }
}

/// A cache that records what it was given, for checking the reader's use of it.
private final class RecordingCache: ChunkCache, @unchecked Sendable {
    private let lock = Mutex<[SHA256Digest: [UInt8]]>([:])
    var count: Int { lock.withLock { $0.count } }

    func lookup(_ digest: SHA256Digest, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        lock.withLock { stored in
            guard let bytes = stored[digest], bytes.count == buffer.count else { return false }
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return true
        }
    }

    func store(_ digest: SHA256Digest, _ bytes: UnsafeRawBufferPointer) {
        lock.withLock { $0[digest] = Array(bytes) }
    }
}

@Suite struct ReaderServicesTests {
    @Test func cacheServesRepeatedReadsAndStatisticsCount() throws {
        let dir = TemporaryDirectory()
        var options = LayerWriter.Options()
        options.chunkSize = LayerRoundTripTests.chunkSize
        let (tar, files) = try LayerRoundTripTests.sampleTar()
        let (blob, _, _) = try convert(tar, in: dir, options: options)
        let cache = RecordingCache()
        let layer = try LayerReader(source: MemorySource(blob), cache: cache)
        let content = try layer.read(path: "usr/lib/multi.bin")
        #expect(content == files["usr/lib/multi.bin"])
        #expect(layer.statistics.chunksVerified == 6 && layer.statistics.cacheHits == 0)
        #expect(cache.count == 6)
        #expect(try layer.read(path: "usr/lib/multi.bin") == content)
        #expect(layer.statistics.chunksVerified == 6 && layer.statistics.cacheHits == 6)
        #expect(layer.statistics.bytesVerified == Int64(content.count))
    }

    @Test func prefetchRegionEndsAtTheLandmark() throws {
        let dir = TemporaryDirectory()
        let (tar, _) = try LayerRoundTripTests.sampleTar()
        var options = LayerWriter.Options()
        options.prioritizedFiles = ["etc/one"]
        let (blob, _, _) = try convert(tar, in: dir, options: options)
        let layer = try LayerReader(source: MemorySource(blob))
        let end = try #require(layer.prefetchRegionEnd)
        let one = layer.chunks(of: try #require(layer.entry(at: "etc/one")))[0]
        #expect(one.blobEnd <= end)
        let multi = layer.chunks(of: try #require(layer.entry(at: "usr/lib/multi.bin")))[0]
        #expect(multi.blobOffset > end)
        #expect(layer.allChunks().map(\.chunk.blobOffset) == layer.allChunks().map(\.chunk.blobOffset).sorted())
        #expect(try LayerReader(source: MemorySource(try convert(tar, in: dir, name: "plain").blob)).prefetchRegionEnd == nil)
    }
}

/// A caching source that damages one byte until told to forget it (or forever).
private final class DamagingSource: RandomAccessSource, @unchecked Sendable {
    let bytes: [UInt8]
    let damagedOffset: Int64
    let forever: Bool
    private let damaged = Mutex(true)
    let invalidations = Atomic<Int>(0)
    var size: Int64 { Int64(bytes.count) }

    init(_ bytes: [UInt8], damagedOffset: Int64, forever: Bool) {
        self.bytes = bytes
        self.damagedOffset = damagedOffset
        self.forever = forever
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws {
        try MemorySource(bytes).read(into: buffer, at: offset)
        if damaged.withLock({ $0 }), (offset ..< offset + Int64(buffer.count)).contains(damagedOffset) {
            buffer[Int(damagedOffset - offset)] ^= 0x20
        }
    }

    func invalidate(_ range: Range<Int64>) {
        invalidations.add(1, ordering: .relaxed)
        if !forever, range.contains(damagedOffset) { damaged.withLock { $0 = false } }
    }
}

@Suite struct DamagedSourceTests {
    @Test func damagedBytesAreRefetchedOnceThenRefused() throws {
        let dir = TemporaryDirectory()
        let (tar, files) = try LayerRoundTripTests.sampleTar()
        var options = LayerWriter.Options()
        options.chunkSize = LayerRoundTripTests.chunkSize
        let (blob, _, _) = try convert(tar, in: dir, options: options)
        let chunk = try LayerReader(source: MemorySource(blob)).chunks(of: try #require(try LayerReader(source: MemorySource(blob)).entry(at: "etc/plusone")))[0]
        let middle = chunk.blobOffset + (chunk.blobEnd - chunk.blobOffset) / 2

        let transient = DamagingSource(blob, damagedOffset: middle, forever: false)
        let healed = try LayerReader(source: transient)
        #expect(try healed.read(path: "etc/plusone") == files["etc/plusone"])
        #expect(transient.invalidations.load(ordering: .relaxed) == 1)

        let persistent = DamagingSource(blob, damagedOffset: middle, forever: true)
        let broken = try LayerReader(source: persistent)
        #expect(throws: EStargzError.self) { try broken.read(path: "etc/plusone") }
        #expect(persistent.invalidations.load(ordering: .relaxed) == 2)
        #expect(broken.statistics.verificationFailures == 2)
    }
}
