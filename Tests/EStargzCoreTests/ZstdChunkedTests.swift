@testable import EStargzCore
import Foundation
import Testing
import TestSupport

/// The zstd:chunked chunk kernel: prefix decode with the SHA-256 in the same pass, bounded output.
@Suite struct ZstdChunkKernelTests {
    static func frame(_ bytes: [UInt8], level: Int = 3) throws -> [UInt8] {
        try bytes.withUnsafeBytes { try Kernel.zstdCompress($0, level: level) }
    }

    static func decodeChunk(_ frame: [UInt8], count: Int, expecting: SHA256Digest? = nil) throws -> ([UInt8], SHA256Digest) {
        var out = [UInt8](repeating: 0, count: count)
        let digest = try frame.withUnsafeBytes { src in
            try out.withUnsafeMutableBytes { try Kernel.zstdDecompressChunk(src, into: $0, expecting: expecting) }
        }
        return (out, digest)
    }

    @Test func prefixesDecodeAndHashAtEveryBlockBoundary() throws {
        let data = testBytes(700_000, seed: 11)
        let frame = try Self.frame(data)
        for count in [0, 1, 4095, 131_071, 131_072, 131_073, 262_144, 500_000, 699_999, 700_000] {
            let (out, digest) = try Self.decodeChunk(frame, count: count)
            #expect(out == Array(data[0 ..< count]), "prefix \(count)")
            #expect(digest == SHA256Digest.of(Array(data[0 ..< count])), "digest of prefix \(count)")
        }
        // Verified against the expected digest in the same call.
        let good = SHA256Digest.of(Array(data[0 ..< 300_000]))
        _ = try Self.decodeChunk(frame, count: 300_000, expecting: good)
        let error = #expect(throws: KernelError.self) { _ = try Self.decodeChunk(frame, count: 300_001, expecting: good) }
        #expect(error?.isDigestMismatch == true)
    }

    @Test func truncatedCorruptAndForeignFramesAreTypedErrors() throws {
        let data = testBytes(300_000, seed: 5)
        let frame = try Self.frame(data)
        // More than the frame holds, or the input cut short: truncated.
        #expect(try #require(#expect(throws: KernelError.self) { _ = try Self.decodeChunk(frame, count: 300_001) }).isTruncated)
        #expect(try #require(#expect(throws: KernelError.self) {
            _ = try Self.decodeChunk(Array(frame[0 ..< frame.count / 2]), count: 300_000)
        }).isTruncated)
        // A gzip member, a skippable frame, garbage: not a zstd frame.
        let gzip = try data.withUnsafeBytes { try Kernel.compressGzipMember($0, level: 1) }
        #expect(try #require(#expect(throws: KernelError.self) { _ = try Self.decodeChunk(gzip, count: 10) }).isFormat)
        let skippable = ZstdChunkedFooter.skippableHeader(length: 4) + [1, 2, 3, 4] + frame
        #expect(try #require(#expect(throws: KernelError.self) { _ = try Self.decodeChunk(skippable, count: 10) }).isFormat)
        // A damaged block: either the decoder notices or the digest does; never silent.
        var damaged = frame
        damaged[frame.count / 2] ^= 0x5a
        let expected = SHA256Digest.of(data)
        #expect(throws: KernelError.self) { _ = try Self.decodeChunk(damaged, count: data.count, expecting: expected) }
    }

    @Test func aZstdBombIsStoppedAtTheBound() throws {
        // 256 MiB of zeros compress to a few KiB; asking for 1 MiB decodes 1 MiB and stops.
        let zeros = [UInt8](repeating: 0, count: 256 << 20)
        let bomb = try Self.frame(zeros, level: 1)
        #expect(bomb.count < 64 << 10)
        let clock = ContinuousClock()
        let start = clock.now
        let (out, _) = try Self.decodeChunk(bomb, count: 1 << 20)
        #expect(out.count == 1 << 20 && out.allSatisfy { $0 == 0 })
        // The exact-size decode (the TOC) refuses it without producing the rest.
        var small = [UInt8](repeating: 0, count: 1 << 20)
        let error = #expect(throws: KernelError.self) {
            try bomb.withUnsafeBytes { src in try small.withUnsafeMutableBytes { try Kernel.zstdDecompress(src, into: $0) } }
        }
        #expect(error?.isSpace == true)
        #expect(clock.now - start < .seconds(2))
        #expect(try bomb.withUnsafeBytes { try Kernel.zstdFrameContentSize($0) } == UInt64(256 << 20))
    }
}

/// zstd:chunked blobs: writer and reader round trip, the Go reference's layout, hostile blobs.
@Suite struct ZstdChunkedLayerTests {
    static func options(chunkSize: Int = LayerRoundTripTests.chunkSize) -> LayerWriter.Options {
        var options = LayerWriter.Options()
        options.chunkSize = chunkSize
        options.compression = .zstdChunked
        return options
    }

    @Test func everyFileReadsBackVerified() throws {
        let dir = TemporaryDirectory()
        let (tar, files) = try LayerRoundTripTests.sampleTar()
        let (blob, result, _) = try convert(tar, in: dir, options: Self.options())
        #expect(result.compressedSize == Int64(blob.count))
        let layer = try LayerReader(source: MemorySource(blob), tocDigest: result.tocDigest)
        #expect(layer.footerFormat == .zstdChunked && layer.compression == .zstdChunked)
        #expect(layer.tocDigest == result.tocDigest)
        for (name, content) in files {
            #expect(try layer.read(path: name) == content, "\(name)")
            for (offset, count) in [(0, 1), (LayerRoundTripTests.chunkSize - 3, 10), (content.count - 1, 5)]
            where offset >= 0 && offset < content.count {
                #expect(try layer.read(path: name, offset: Int64(offset), count: count)
                    == Array(content[offset ..< min(content.count, offset + count)]))
            }
        }
        try layer.verifyAllChunks()
        #expect(layer.chunks(of: try #require(layer.entry(at: "usr/lib/multi.bin"))).count == 6)
        #expect(layer.entry(at: Landmark.noPrefetch) != nil)

        // Extraction goes through the same chunk path.
        let tree = dir.directory("tree")
        try layer.extract(to: tree)
        #expect(try readFile(tree + "/usr/lib/multi.bin") == files["usr/lib/multi.bin"])
    }

    @Test func layoutIsTheReferencesFramesFooterAndAnnotations() throws {
        let dir = TemporaryDirectory()
        let (tar, _) = try LayerRoundTripTests.sampleTar()
        let (blob, result, path) = try convert(tar, in: dir, options: Self.options())
        let layer = try LayerReader(source: MemorySource(blob))
        // Footer: a 40-byte skippable frame ending with "GnUlInUx", pointing at the TOC frame.
        let footer = Array(blob.suffix(48))
        #expect(Array(footer[0 ..< 8]) == [0x50, 0x2a, 0x4d, 0x18, 40, 0, 0, 0])
        #expect(Array(footer[40...]) == Array("GnUlInUx".utf8))
        let parsed = try ZstdChunkedFooter.parse(footer, blobSize: Int64(blob.count))
        #expect(parsed.tocOffset == layer.tocOffset)
        let compressedTOC = Array(blob[Int(parsed.tocOffset) ..< Int(parsed.tocOffset + parsed.compressedTOCSize)])
        #expect(Array(blob[Int(parsed.tocOffset) - 8 ..< Int(parsed.tocOffset)])
            == [0x50, 0x2a, 0x4d, 0x18] + withUnsafeBytes(of: UInt32(compressedTOC.count).littleEndian, Array.init))
        // The TOC frame holds the JSON whose digest is the TOC digest.
        var json = [UInt8](repeating: 0, count: Int(parsed.tocSize))
        try compressedTOC.withUnsafeBytes { src in try json.withUnsafeMutableBytes { try Kernel.zstdDecompress(src, into: $0) } }
        #expect(SHA256Digest.of(json) == result.tocDigest)
        #expect(result.annotations[ZstdChunkedFooter.manifestChecksumAnnotation] == SHA256Digest.of(compressedTOC).description)
        #expect(result.annotations[ZstdChunkedFooter.manifestPositionAnnotation]
            == "\(parsed.tocOffset):\(compressedTOC.count):\(json.count):1")
        // Every chunk starts a zstd frame.
        for (_, chunk) in layer.allChunks() {
            #expect(Array(blob[Int(chunk.blobOffset) ..< Int(chunk.blobOffset) + 4]) == [0x28, 0xb5, 0x2f, 0xfd])
        }
        // A plain zstd decoder sees the tar stream only (TOC skipped): its digest is the diffID, and
        // tar lists every entry.
        let plain = dir.file("plain.tar")
        #expect(shell("zstd -q -d -c '\(path)' > '\(plain)'") == 0)
        let stream = try readFile(plain)
        #expect(SHA256Digest.of(stream) == result.diffID)
        #expect(Int64(stream.count) == result.uncompressedSize)
        let listing = try run("/usr/bin/tar", ["-tf", plain])
        #expect(listing.contains("usr/lib/multi.bin") && listing.contains(".no.prefetch.landmark"))
        #expect(!listing.contains("stargz.index.json"))
    }

    @Test func levelsAreCheckedAndChangeTheBlob() throws {
        let dir = TemporaryDirectory()
        let (tar, files) = try LayerRoundTripTests.sampleTar()
        var fast = Self.options()
        fast.zstdCompressionLevel = 1
        var strong = Self.options()
        strong.zstdCompressionLevel = 19
        let a = try convert(tar, in: dir, options: fast, name: "fast")
        let b = try convert(tar, in: dir, options: strong, name: "strong")
        #expect(a.result.tocDigest != b.result.tocDigest || a.blob != b.blob)
        for blob in [a.blob, b.blob] {
            let layer = try LayerReader(source: MemorySource(blob))
            #expect(try layer.read(path: "etc/plusone") == files["etc/plusone"])
        }
        var bad = Self.options()
        bad.zstdCompressionLevel = 99
        #expect(throws: EStargzError.self) { _ = try convert(tar, in: dir, options: bad, name: "bad") }
    }

    // MARK: Hostile blobs

    /// A sample blob and its parsed footer.
    static func sample() throws -> (blob: [UInt8], footer: ZstdChunkedFooter, result: LayerWriter.Result) {
        let dir = TemporaryDirectory()
        let (tar, _) = try LayerRoundTripTests.sampleTar()
        let (blob, result, _) = try convert(tar, in: dir, options: options())
        return (blob, try ZstdChunkedFooter.parse(Array(blob.suffix(48)), blobSize: Int64(blob.count)), result)
    }

    /// `data` followed by a TOC skippable frame holding `compressedTOC` (its header claiming
    /// `claimed` bytes) and a footer with the given fields.
    static func assemble(data: ArraySlice<UInt8>, compressedTOC: [UInt8], claimed: Int? = nil, tocSize: Int,
                         type: UInt64 = 1) -> [UInt8] {
        var blob = Array(data)
        blob += ZstdChunkedFooter.skippableHeader(length: claimed ?? compressedTOC.count) + compressedTOC
        let tocOffset = UInt64(data.count + 8)
        blob += ZstdChunkedFooter.skippableHeader(length: 40)
        for value in [tocOffset, UInt64(compressedTOC.count), UInt64(tocSize), type] {
            blob += withUnsafeBytes(of: value.littleEndian, Array.init)
        }
        return blob + Array("GnUlInUx".utf8)
    }

    static func openError(_ blob: [UInt8]) -> EStargzError? {
        #expect(throws: EStargzError.self) { _ = try LayerReader(source: MemorySource(blob)) }
    }

    @Test func lyingFootersAndFramesAreTypedErrors() throws {
        let (blob, footer, _) = try Self.sample()
        let data = blob[0 ..< Int(footer.dataEnd)]
        let toc = Array(blob[Int(footer.tocOffset) ..< Int(footer.tocOffset + footer.compressedTOCSize)])
        let size = Int(footer.tocSize)
        // The unchanged pieces reassemble into a readable blob (so the cases below fail for their reason).
        #expect(Self.assemble(data: data, compressedTOC: toc, tocSize: size) == blob)

        // The skippable frame before the TOC lies about its length.
        let lying = Self.openError(Self.assemble(data: data, compressedTOC: toc, claimed: toc.count + 100, tocSize: size))
        guard case let .invalidTOC(reason)? = lying else { Issue.record("got \(String(describing: lying))"); return }
        #expect(reason.contains("skippable frame at offset \(footer.dataEnd)"))

        // The footer's TOC size is not what the frame holds.
        guard case .invalidTOC? = Self.openError(Self.assemble(data: data, compressedTOC: toc, tocSize: size - 1)) else {
            Issue.record("a smaller TOC size was accepted"); return
        }
        // A truncated TOC frame (footer consistent with the shorter frame).
        let cut = Self.openError(Self.assemble(data: data, compressedTOC: Array(toc.prefix(toc.count - 9)), tocSize: size))
        guard case .invalidTOC? = cut else { Issue.record("got \(String(describing: cut))"); return }
        // An unknown manifest type.
        guard case .invalidFooter? = Self.openError(Self.assemble(data: data, compressedTOC: toc, tocSize: size, type: 2)) else {
            Issue.record("manifest type 2 was accepted"); return
        }
        // The footer's skippable frame header is damaged.
        var damaged = blob
        damaged[blob.count - 44] = 41
        guard case .invalidFooter? = Self.openError(damaged) else { Issue.record("damaged footer frame accepted"); return }
        // A truncated blob (cut in its data): the footer no longer ends where it says.
        var truncated = Array(blob[0 ..< blob.count / 2]) + Array(blob.suffix(48))
        guard case .invalidFooter? = Self.openError(truncated) else { Issue.record("truncated blob accepted"); return }
        truncated = Array(blob.suffix(30))
        #expect(Self.openError(truncated) != nil)
        // A TOC far larger than the frame can hold.
        guard case .invalidTOC? = Self.openError(Self.assemble(data: data, compressedTOC: toc, tocSize: toc.count * 2048 + (1 << 20) + 1)) else {
            Issue.record("an implausible TOC size was accepted"); return
        }
        guard case .limitExceeded? = Self.openError(Self.assemble(data: data, compressedTOC: toc, tocSize: 1 << 40)) else {
            Issue.record("a TOC size beyond the limit was accepted"); return
        }
    }

    @Test func aTOCBombIsRefusedWithoutInflatingIt() throws {
        let (blob, footer, _) = try Self.sample()
        let data = blob[0 ..< Int(footer.dataEnd)]
        // A frame of 64 MiB of spaces (no content size in its header, as a streaming encoder
        // writes it) behind a footer that says 1000 bytes.
        let dir = TemporaryDirectory()
        let spaces = dir.file("spaces")
        try writeFile(spaces, [UInt8](repeating: 0x20, count: 64 << 20))
        let bombPath = dir.file("bomb.zst")
        #expect(shell("cat '\(spaces)' | zstd -q -c --no-check > '\(bombPath)'") == 0)
        let bomb = try readFile(bombPath)
        #expect(try bomb.withUnsafeBytes { try Kernel.zstdFrameContentSize($0) } == nil)
        let error = Self.openError(Self.assemble(data: data, compressedTOC: bomb, tocSize: 1000))
        guard case let .limitExceeded(reason)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(reason.contains("more than the footer's 1000 bytes"))
    }

    @Test func aDamagedChunkFrameIsAnErrorNeverWrongBytes() throws {
        let (blob, _, result) = try Self.sample()
        let layer = try LayerReader(source: MemorySource(blob))
        let file = try #require(layer.entry(at: "usr/lib/multi.bin"))
        let chunk = layer.chunks(of: file)[2]
        var damaged = blob
        damaged[Int(chunk.blobOffset + (chunk.blobEnd - chunk.blobOffset) / 2)] ^= 0xff
        let broken = try LayerReader(source: MemorySource(damaged), tocDigest: result.tocDigest)
        #expect(try broken.read(path: "usr/lib/multi.bin", count: Int(chunk.fileOffset)).count == Int(chunk.fileOffset))
        let error = #expect(throws: EStargzError.self) { _ = try broken.read(path: "usr/lib/multi.bin") }
        switch error {
        case let .chunkDigestMismatch(entry, offset, _, _)?: #expect(entry == "usr/lib/multi.bin" && offset == chunk.fileOffset)
        case let .corruptChunk(entry, offset, _)?: #expect(entry == "usr/lib/multi.bin" && offset == chunk.blobOffset)
        default: Issue.record("got \(String(describing: error))")
        }
        #expect(throws: EStargzError.self) { try broken.verifyAllChunks() }
        // A read that starts inside the damaged chunk fails too.
        #expect(throws: EStargzError.self) { _ = try broken.read(path: "usr/lib/multi.bin", offset: chunk.fileOffset, count: 1) }
    }
}
