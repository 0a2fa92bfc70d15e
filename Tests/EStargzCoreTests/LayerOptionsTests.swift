import TestSupport
import Testing
@testable import EStargzCore
#if canImport(Glibc)
import Glibc
#endif

/// The newer eStargz options: min chunk size (members shared, `innerOffset`), external TOC and
/// keep-diff-id (lossless) builds, and hostile inputs for each.
@Suite struct LayerOptionsTests {
    static let chunkSize = 4096

    /// Many small files, a multi-chunk file, a directory and a link: what shares members.
    static func smallFilesTar(count: Int = 40) throws -> (tar: [UInt8], files: [String: [UInt8]]) {
        var builder = TarBuilder()
        var files: [String: [UInt8]] = [:]
        try builder.append(header("etc/", .directory, mode: 0o755))
        for i in 0 ..< count {
            let name = "etc/small-\(i).conf"
            // Text-like, so members compress (and sharing them pays).
            let content = Array("line \(i) of a small configuration file\n".utf8) + testBytes(100 + i * 37, seed: UInt64(i)).map { $0 % 16 + 65 }
            files[name] = content
            try builder.append(header(name, .regular, size: Int64(content.count)), content: content)
        }
        let big = testBytes(chunkSize * 3 + 77, seed: 99)
        files["usr/bin/big"] = big
        try builder.append(header("usr/bin/big", .regular, mode: 0o755, size: Int64(big.count)), content: big)
        try builder.append(header("etc/empty", .regular))
        files["etc/empty"] = []
        var link = header("etc/link", .symlink, mode: 0o777)
        link.linkName = "small-1.conf"
        try builder.append(link)
        return (builder.finish(), files)
    }

    static func options(minimumChunkSize: Int) -> LayerWriter.Options {
        var options = LayerWriter.Options()
        options.chunkSize = chunkSize
        options.minimumChunkSize = minimumChunkSize
        return options
    }

    // MARK: min chunk size

    @Test func minimumChunkSizeZeroIsOneMemberPerChunk() throws {
        let dir = TemporaryDirectory()
        let (tar, _) = try Self.smallFilesTar()
        let (blob, _, _) = try convert(tar, in: dir, options: Self.options(minimumChunkSize: 0))
        let toc = try storedTOC(blob)
        let data = toc.entries.filter { $0.offset != 0 }
        #expect(data.allSatisfy { $0.innerOffset == 0 })
        #expect(Set(data.map(\.offset)).count == data.count, "every chunk starts its own member")
        #expect(!TOCJSON.encode(toc).containsSubsequence(Array("innerOffset".utf8)))
    }

    @Test func smallFilesShareMembersAndReadBackVerified() throws {
        let dir = TemporaryDirectory()
        let (tar, files) = try Self.smallFilesTar()
        let (plain, _, _) = try convert(tar, in: dir, options: Self.options(minimumChunkSize: 0), name: "plain")
        let (blob, result, path) = try convert(tar, in: dir, options: Self.options(minimumChunkSize: 16 << 10), name: "shared")
        #expect(blob.count < plain.count, "shared members make a smaller blob (\(blob.count) vs \(plain.count))")

        let toc = try storedTOC(blob)
        let data = toc.entries.filter { $0.type == .regular && $0.size > 0 || $0.type == .chunk }
        let members = Set(data.map(\.offset))
        #expect(members.count < data.count / 4, "\(members.count) members for \(data.count) chunks")
        #expect(data.contains { $0.innerOffset > 0 })
        // The landmark starts its own member (so the prefetch region ends where it starts).
        let landmark = try #require(toc.entries.first { $0.name == Landmark.noPrefetch })
        #expect(landmark.innerOffset == 0 && landmark.offset > 0)

        let layer = try LayerReader(source: MemorySource(blob), tocDigest: result.tocDigest)
        for (name, content) in files {
            #expect(try layer.read(path: name) == content, "\(name)")
            if content.count > 10 {
                #expect(try layer.read(path: name, offset: 5, count: 5) == Array(content[5 ..< 10]))
            }
        }
        try layer.verifyAllChunks()
        // Whole-blob consumers: the blob is still one gzip stream of a tar with every file.
        let extracted = dir.file("x")
        _ = try run("/bin/mkdir", [extracted])
        _ = try run("/bin/tar", ["-xzf", path, "-C", extracted])
        for (name, content) in files { #expect(try readFile(extracted + "/" + name) == content, "\(name)") }
        try layer.extract(to: dir.file("ours"))
        for (name, content) in files where name != "etc/link" { #expect(try readFile(dir.file("ours/" + name)) == content, "\(name)") }
    }

    @Test func innerOffsetOutsideItsMemberIsATypedError() throws {
        let dir = TemporaryDirectory()
        let (tar, files) = try Self.smallFilesTar()
        let (built, _, _) = try convert(tar, in: dir, options: Self.options(minimumChunkSize: 16 << 10))
        var toc = try storedTOC(built)
        let victim = try #require(toc.entries.lastIndex { $0.type == .regular && $0.innerOffset > 0 && $0.name.hasPrefix("etc/small") })
        let victimName = toc.entries[victim].name
        toc.entries[victim].innerOffset += 1 << 20  // far past the end of its member
        let lying = try blob(built, withTOC: toc)
        let layer = try LayerReader(source: MemorySource(lying))
        #expect {
            _ = try layer.read(path: victimName)
        } throws: { error in
            guard case let .invalidTOC(reason) = error as? EStargzError else { return false }
            return reason.contains(victimName) && reason.contains("innerOffset") && reason.contains("past the end of the gzip member")
        }
        // The other files are unaffected.
        let other = "etc/small-0.conf"
        #expect(try layer.read(path: other) == files[other])

        // Shifted inside the member: the bytes are wrong, and that is a digest mismatch.
        var shifted = try storedTOC(built)
        shifted.entries[victim].innerOffset += 1
        let shiftedLayer = try LayerReader(source: MemorySource(try blob(built, withTOC: shifted)))
        #expect {
            _ = try shiftedLayer.read(path: victimName)
        } throws: { error in
            if case .chunkDigestMismatch(let entry, _, _, _) = error as? EStargzError { return entry == TarPath.clean(victimName) }
            return false
        }

        // Negative, or beyond any chunk the reader accepts: refused when the TOC is parsed.
        for bad: Int64 in [-1, 1 << 40] {
            var hostile = try storedTOC(built)
            hostile.entries[victim].innerOffset = bad
            #expect {
                _ = try LayerReader(source: MemorySource(try blob(built, withTOC: hostile)))
            } throws: { error in
                guard case let .invalidTOC(reason) = error as? EStargzError else { return false }
                return reason.contains("innerOffset \(bad)")
            }
        }
    }

    // MARK: external TOC

    @Test func externalTOCLayerReadsWithItsTOCAndOnlyWithTheRightOne() throws {
        let dir = TemporaryDirectory()
        let (tar, files) = try Self.smallFilesTar()
        var options = Self.options(minimumChunkSize: 0)
        options.externalTOC = true
        let (blob, result, path) = try convert(tar, in: dir, options: options)
        let externalTOC = try #require(result.externalTOC)
        #expect(Array(blob.suffix(46)) == Footer.encodeExternalTOC())

        #expect(throws: EStargzError.externalTOCRequired) { try LayerReader(source: MemorySource(blob), tocDigest: result.tocDigest) }
        let layer = try LayerReader(source: MemorySource(blob), tocDigest: result.tocDigest, externalTOC: externalTOC)
        #expect(layer.footerFormat == .externalTOC)
        for (name, content) in files { #expect(try layer.read(path: name) == content, "\(name)") }
        try layer.verifyAllChunks()
        // gunzip of the layer is a complete tar (end-of-archive included) without the TOC.
        let listing = try run("/bin/sh", ["-c", "gunzip -c < '\(path)' | tar -tf -"])
        #expect(listing.contains("usr/bin/big") && !listing.contains("stargz.index.json"))

        // Another layer's TOC (or a tampered one) does not match the annotation: typed error.
        var otherOptions = options
        otherOptions.chunkSize = Self.chunkSize * 2
        let (_, other, _) = try convert(tar, in: dir, options: otherOptions, name: "other")
        #expect {
            _ = try LayerReader(source: MemorySource(blob), tocDigest: result.tocDigest, externalTOC: try #require(other.externalTOC))
        } throws: { error in
            error as? EStargzError == .tocDigestMismatch(expected: result.tocDigest.description, actual: other.tocDigest.description)
        }
        // Without a digest to check against, an external TOC is not trusted.
        #expect(throws: EStargzError.self) { try LayerReader(source: MemorySource(blob), externalTOC: externalTOC) }
    }

    @Test func externalTOCWithSharedMembers() throws {
        let dir = TemporaryDirectory()
        let (tar, files) = try Self.smallFilesTar()
        var options = Self.options(minimumChunkSize: 8 << 10)
        options.externalTOC = true
        let (blob, result, _) = try convert(tar, in: dir, options: options)
        let layer = try LayerReader(source: MemorySource(blob), tocDigest: result.tocDigest, externalTOC: try #require(result.externalTOC))
        for (name, content) in files { #expect(try layer.read(path: name) == content, "\(name)") }
    }

    // MARK: keep diff ID

    /// A tar the writer would re-encode differently: GNU long names, odd modes, a duplicate,
    /// a landmark-named file, extra zero blocks after the end-of-archive.
    static func quirkyTar() throws -> [UInt8] {
        var gnu = TarBuilder(format: .gnu)
        try gnu.append(header("a/", .directory, mode: 0o755))
        try gnu.append(header("a/" + String(repeating: "long-name-", count: 15) + "end", .regular, size: 3), content: [1, 2, 3])
        try gnu.append(header("a/dup", .regular, size: 2), content: [9, 9])
        try gnu.append(header("a/big", .regular, size: Int64(chunkSize * 2 + 5)), content: testBytes(chunkSize * 2 + 5, seed: 5))
        try gnu.append(header("a/dup", .regular, size: 1), content: [7])
        var pax = TarBuilder(format: .pax)
        var withXattr = header("a/cap", .regular, mode: 0o4755, size: 4)
        withXattr.xattrs = ["user.note": Array("hi".utf8)]
        try pax.append(withXattr, content: [4, 3, 2, 1])
        return gnu.bytes + pax.bytes + TarWriter.endOfArchive + [UInt8](repeating: 0, count: 5 * 512)
    }

    @Test func keepDiffIDKeepsTheTarByteForByte() throws {
        let dir = TemporaryDirectory()
        let tar = try Self.quirkyTar()
        for minimum in [0, 4 << 10] {
            var options = Self.options(minimumChunkSize: minimum)
            options.externalTOC = true
            options.keepDiffID = true
            let (_, result, path) = try convert(tar, in: dir, options: options, name: "keep-\(minimum)")
            #expect(result.diffID == SHA256Digest.of(tar))
            #expect(result.uncompressedSize == Int64(tar.count))
            // The system's gunzip restores the source tar exactly.
            let gunzipped = dir.file("gunzipped-\(minimum).tar")
            _ = try run("/bin/sh", ["-c", "gunzip -c < '\(path)' > '\(gunzipped)'"])
            #expect(try readFile(gunzipped) == tar)

            let layer = try LayerReader(source: FileSource(path: path), tocDigest: result.tocDigest, externalTOC: try #require(result.externalTOC))
            #expect(try layer.read(path: "a/dup") == [7], "the later duplicate wins")
            #expect(try layer.read(path: "a/big") == testBytes(Self.chunkSize * 2 + 5, seed: 5))
            #expect(try layer.read(path: "a/cap") == [4, 3, 2, 1])
            #expect(layer.entry(at: "a/cap")?.xattrs["user.note"] == Array("hi".utf8))
            #expect(try layer.read(path: "a/" + String(repeating: "long-name-", count: 15) + "end") == [1, 2, 3])
            #expect(layer.entry(at: Landmark.noPrefetch) == nil, "nothing is added to the tar")
            try layer.verifyAllChunks()
        }
    }

    @Test func keepDiffIDNeedsAnExternalTOCAndNoReordering() throws {
        let dir = TemporaryDirectory()
        let tar = try Self.quirkyTar()
        var options = LayerWriter.Options()
        options.keepDiffID = true
        #expect(throws: EStargzError.self) { try convert(tar, in: dir, options: options) }
        options.externalTOC = true
        options.prioritizedFiles = ["a/big"]
        #expect(throws: EStargzError.self) { try convert(tar, in: dir, options: options) }
        // A tar that already holds a TOC cannot lose it without changing its bytes.
        var withTOC = TarBuilder()
        try withTOC.append(header("stargz.index.json", .regular, size: 2), content: Array("{}".utf8))
        options.prioritizedFiles = []
        #expect(throws: EStargzError.self) { try convert(withTOC.finish(), in: dir, options: options, name: "has-toc") }
    }

    @Test func externalTOCFooterIsRecognized() throws {
        let footer = Footer.encodeExternalTOC()
        #expect(footer.count == 46)
        let parsed = try Footer.parse([1, 2, 3] + footer)
        #expect(parsed.format == .externalTOC)
        var damaged = footer
        damaged[20] = UInt8(ascii: "x")
        #expect(throws: EStargzError.self) { try Footer.parse(damaged + [0]) }
    }
}

extension Array where Element == UInt8 {
    func containsSubsequence(_ needle: [UInt8]) -> Bool {
        guard needle.count <= count else { return false }
        for start in 0 ... (count - needle.count) where self[start] == needle[0] {
            if Array(self[start ..< start + needle.count]) == needle { return true }
        }
        return false
    }
}
