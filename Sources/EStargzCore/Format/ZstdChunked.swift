/// The end of a zstd:chunked blob: the TOC and the footer, both in zstd skippable frames, so a
/// plain zstd decoder sees only the layer's tar stream. As the Go reference's
/// `estargz/zstdchunked` writes it (and containers/storage reads it):
///
/// ```
/// data     zstd frames; every chunk of a regular file starts a new frame
///  +0      50 2a 4d 18          skippable frame magic (0x184D2A50, little-endian)
///  +4      LE32                 frame length = compressed TOC size
///  +8      28 b5 2f fd ...      the TOC JSON as one zstd frame         <- TOC offset
/// footer (48 bytes, the last of the blob):
///   0      50 2a 4d 18          skippable frame magic
///   4      28 00 00 00          frame length = 40
///   8      LE64                 TOC offset (of the zstd frame, just after its skippable header)
///  16      LE64                 compressed TOC size
///  24      LE64                 uncompressed TOC size (JSON bytes)
///  32      LE64                 manifest type, 1 = CRFS (the eStargz TOC JSON)
///  40      47 6e 55 6c 49 6e 55 78   magic "GnUlInUx"
/// ```
///
/// The TOC digest (`containerd.io/snapshot/stargz/toc.digest`) is the SHA-256 of the uncompressed
/// JSON, as for eStargz; `io.containers.zstd-chunked.manifest-checksum` is the SHA-256 of the
/// compressed frame, and `io.containers.zstd-chunked.manifest-position` is
/// `"offset:compressed:uncompressed:1"`. The uncompressed stream (the diffID) is the tar entries
/// only: the TOC is skipped and, as in the reference, no end-of-archive blocks follow.
public struct ZstdChunkedFooter: Sendable, Equatable {
    /// Bytes the footer occupies at the end of the blob (its skippable frame header included).
    public static let size = 48
    /// The annotation holding the SHA-256 of the compressed TOC frame.
    public static let manifestChecksumAnnotation = "io.containers.zstd-chunked.manifest-checksum"
    /// The annotation holding `"offset:compressed:uncompressed:type"` of the TOC.
    public static let manifestPositionAnnotation = "io.containers.zstd-chunked.manifest-position"
    /// The only manifest type written and read: the eStargz TOC JSON ("CRFS").
    static let manifestTypeCRFS: UInt64 = 1
    static let skippableMagic: [UInt8] = [0x50, 0x2a, 0x4d, 0x18]
    static let footerMagic: [UInt8] = Array("GnUlInUx".utf8)
    /// Bytes of a skippable frame header (magic and length).
    static let skippableHeaderSize = 8

    /// Blob offset of the TOC's zstd frame.
    public var tocOffset: Int64
    /// Size of the TOC's zstd frame.
    public var compressedTOCSize: Int64
    /// Size of the TOC JSON.
    public var tocSize: Int64

    /// The TOC's skippable frame header, the TOC frame `compressedTOC` and the footer, for a TOC
    /// whose skippable frame starts at blob offset `dataEnd`; and the annotations that go with it.
    static func tocAndFooter(compressedTOC: [UInt8], tocSize: Int, dataEnd: Int64) -> (bytes: [UInt8], annotations: [String: String]) {
        let tocOffset = dataEnd + Int64(skippableHeaderSize)
        var bytes = skippableHeader(length: compressedTOC.count)
        bytes += compressedTOC
        bytes += skippableHeader(length: 40)
        bytes += le64(UInt64(tocOffset)) + le64(UInt64(compressedTOC.count)) + le64(UInt64(tocSize)) + le64(manifestTypeCRFS)
        bytes += footerMagic
        let annotations = [
            manifestChecksumAnnotation: SHA256Digest.of(compressedTOC).description,
            manifestPositionAnnotation: "\(tocOffset):\(compressedTOC.count):\(tocSize):\(manifestTypeCRFS)",
        ]
        return (bytes, annotations)
    }

    /// Whether `tail` (the blob's last bytes) ends with the zstd:chunked magic: then the blob is
    /// zstd:chunked or broken, and ``parse(_:)`` says which.
    static func hasMagic(_ tail: [UInt8]) -> Bool {
        tail.count >= footerMagic.count && Array(tail.suffix(footerMagic.count)) == footerMagic
    }

    /// Parses the footer at the end of `tail` (at least 48 bytes) of a blob of `blobSize` bytes and
    /// checks that it points inside the blob, at a TOC frame that ends where the footer starts.
    static func parse(_ tail: [UInt8], blobSize: Int64) throws(EStargzError) -> ZstdChunkedFooter {
        guard tail.count >= size else {
            throw .invalidFooter("zstd:chunked: blob of \(tail.count) bytes is smaller than the 48-byte footer")
        }
        let f = Array(tail.suffix(size))
        guard Array(f[0 ..< 4]) == skippableMagic, le32(f, 4) == 40 else {
            throw .invalidFooter("zstd:chunked: the footer at offset \(blobSize - Int64(size)) is not a 40-byte skippable frame")
        }
        guard Array(f[40 ..< 48]) == footerMagic else { throw .invalidFooter("zstd:chunked: magic missing") }
        let type = le64(f, 32)
        guard type == manifestTypeCRFS else {
            throw .invalidFooter("zstd:chunked: manifest type \(type) is not supported (only 1, the eStargz TOC)")
        }
        let offset = le64(f, 8), compressed = le64(f, 16), raw = le64(f, 24)
        let footerStart = UInt64(blobSize - Int64(size))
        guard offset >= UInt64(skippableHeaderSize), offset <= footerStart, compressed <= footerStart - offset,
              offset + compressed == footerStart else {
            throw .invalidFooter("zstd:chunked: TOC of \(compressed) bytes at offset \(offset) does not end where the footer starts (\(footerStart))")
        }
        guard raw < 1 << 62 else { throw .invalidFooter("zstd:chunked: TOC size \(raw) overflows") }
        return ZstdChunkedFooter(tocOffset: Int64(offset), compressedTOCSize: Int64(compressed), tocSize: Int64(raw))
    }

    /// Where the data frames end (the TOC's skippable frame header starts).
    var dataEnd: Int64 { tocOffset - Int64(Self.skippableHeaderSize) }

    static func skippableHeader(length: Int) -> [UInt8] { skippableMagic + le32(UInt32(length)) }

    private static func le32(_ v: UInt32) -> [UInt8] { (0 ..< 4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    private static func le64(_ v: UInt64) -> [UInt8] { (0 ..< 8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
    private static func le32(_ b: [UInt8], _ at: Int) -> UInt32 {
        (0 ..< 4).reduce(UInt32(0)) { $0 | UInt32(b[at + $1]) << (8 * $1) }
    }
    private static func le64(_ b: [UInt8], _ at: Int) -> UInt64 {
        (0 ..< 8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) }
    }
}

/// The zstd:chunked TOC: the JSON in one zstd frame, in a skippable frame before the footer.
enum ZstdChunkedTOC {
    /// The compressed TOC frame for `json` at zstd `level`.
    static func compress(json: [UInt8], level: Int) throws(EStargzError) -> [UInt8] {
        do {
            return try json.withUnsafeBytes { bytes in try Kernel.zstdCompress(bytes, level: level) }
        } catch {
            throw .compression("TOC: \(error)")
        }
    }

    /// Reads the TOC frame `footer` points at (`tail`, which starts at blob offset `tailStart`,
    /// is used when it holds it), checks its skippable frame header, decompresses exactly the
    /// footer's `tocSize` bytes, hashes them and parses them into the reader's node table.
    ///
    /// A zstd bomb costs nothing: decoding stops at the first byte past `tocSize`, which is itself
    /// bounded by `limits.maximumTOCSize` and by what `compressedTOCSize` bytes can plausibly hold.
    /// TOCs up to `limits.maximumWholeTOCSize` are decoded whole in one pass and parsed in place;
    /// larger ones stream (read in 1 MiB pieces, decoded, hashed and parsed window by window), so a
    /// 100,000-entry TOC is never whole in memory. `whole` tells which path built the table.
    static func loadTable(source: any RandomAccessSource, footer: ZstdChunkedFooter, tail: [UInt8], tailStart: Int64,
                          expected: SHA256Digest?, limits: LayerReader.Limits) throws -> (table: NodeTable, digest: SHA256Digest, whole: Bool) {
        let headerStart = footer.dataEnd
        let end = footer.tocOffset + footer.compressedTOCSize
        guard footer.tocSize <= limits.maximumTOCSize else {
            throw EStargzError.limitExceeded("TOC JSON of \(footer.tocSize) bytes (limit \(limits.maximumTOCSize))")
        }
        // The densest honest zstd (repeated JSON entries) stays far below 1:2048; a footer that
        // claims more from a small frame is lying, and nothing is allocated for it.
        guard footer.tocSize <= footer.compressedTOCSize * 2048 + (1 << 20) else {
            throw EStargzError.invalidTOC("zstd:chunked TOC of \(footer.tocSize) bytes cannot come from a \(footer.compressedTOCSize)-byte frame")
        }
        if footer.tocSize > Int64(limits.maximumWholeTOCSize) {
            let (table, digest) = try loadStreaming(source: source, footer: footer, tail: tail, tailStart: tailStart,
                                                    expected: expected, limits: limits)
            return (table, digest, false)
        }
        var frame: [UInt8]
        if headerStart >= tailStart {
            frame = Array(tail[Int(headerStart - tailStart) ..< Int(end - tailStart)])
        } else {
            frame = try source.read(at: headerStart, count: Int(min(end, tailStart) - headerStart))
            if end > tailStart { frame += tail[0 ..< Int(end - tailStart)] }
        }
        let header = Array(frame[0 ..< ZstdChunkedFooter.skippableHeaderSize])
        guard header == ZstdChunkedFooter.skippableHeader(length: Int(footer.compressedTOCSize)) else {
            throw EStargzError.invalidTOC("zstd:chunked: the skippable frame at offset \(headerStart) does not hold the footer's \(footer.compressedTOCSize)-byte TOC (header \(header.map { String($0, radix: 16) }.joined(separator: " ")))")
        }
        frame.removeFirst(ZstdChunkedFooter.skippableHeaderSize)
        let declared: UInt64?
        do {
            declared = try frame.withUnsafeBytes { bytes in try Kernel.zstdFrameContentSize(bytes) }
        } catch {
            throw EStargzError.invalidTOC("zstd:chunked TOC at offset \(footer.tocOffset) is not a zstd frame: \(error)")
        }
        if let declared, declared != UInt64(footer.tocSize) {
            throw EStargzError.invalidTOC("zstd:chunked TOC frame at offset \(footer.tocOffset) holds \(declared) bytes, the footer says \(footer.tocSize)")
        }
        let size = Int(footer.tocSize)
        let document = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, size), alignment: 16)
        do {
            try frame.withUnsafeBytes { bytes in
                try Kernel.zstdDecompress(bytes, into: UnsafeMutableRawBufferPointer(rebasing: document[0 ..< size]))
            }
        } catch let error as KernelError {
            document.deallocate()
            let what = "zstd:chunked TOC frame at offset \(footer.tocOffset)"
            if error.isSpace { throw EStargzError.limitExceeded("\(what) holds more than the footer's \(size) bytes") }
            if error.isTruncated { throw EStargzError.invalidTOC("\(what) is truncated: it holds fewer than the footer's \(size) bytes") }
            throw EStargzError.invalidTOC("\(what) does not decompress: \(error)")
        } catch {
            document.deallocate()
            throw error
        }
        frame = []
        let (table, digest) = try TOCMember.parseWhole(document: document, json: 0 ..< size, tocOffset: headerStart,
                                                       expected: expected, limits: limits)
        return (table, digest, true)
    }

    /// The streaming path: the frame read in 1 MiB pieces (the tail's copy when it holds them),
    /// decoded by a zstd stream decoder, hashed and parsed through the parser's window; big TOCs
    /// are read, decoded and hashed on the other core, a few windows ahead.
    private static func loadStreaming(source: any RandomAccessSource, footer: ZstdChunkedFooter, tail: [UInt8], tailStart: Int64,
                                      expected: SHA256Digest?, limits: LayerReader.Limits) throws -> (NodeTable, SHA256Digest) {
        let what = "zstd:chunked TOC frame at offset \(footer.tocOffset)"
        let headerStart = footer.dataEnd
        let end = footer.tocOffset + footer.compressedTOCSize
        let pieceSize: Int64 = 1 << 20
        var next = headerStart
        if headerStart < tailStart { source.willRead(headerStart ..< tailStart) }
        func nextPiece() throws -> [UInt8] {
            guard next < end else { return [] }
            // Up to 1 MiB, never across the start of the tail (which is already here).
            let count = Int(next >= tailStart ? min(pieceSize, end - next) : min(pieceSize, end - next, tailStart - next))
            defer { next += Int64(count) }
            if next >= tailStart { return Array(tail[Int(next - tailStart) ..< Int(next - tailStart) + count]) }
            return try source.read(at: next, count: count)
        }
        var piece = try nextPiece()
        guard piece.count >= ZstdChunkedFooter.skippableHeaderSize,
              Array(piece[0 ..< ZstdChunkedFooter.skippableHeaderSize]) == ZstdChunkedFooter.skippableHeader(length: Int(footer.compressedTOCSize)) else {
            throw EStargzError.invalidTOC("zstd:chunked: the skippable frame at offset \(headerStart) does not hold the footer's \(footer.compressedTOCSize)-byte TOC")
        }
        var used = ZstdChunkedFooter.skippableHeaderSize
        guard piece[used...].starts(with: [0x28, 0xb5, 0x2f, 0xfd]) else {
            throw EStargzError.invalidTOC("zstd:chunked TOC at offset \(footer.tocOffset) is not a zstd frame")
        }
        let decoder: ZstdStreamDecoder
        do { decoder = try ZstdStreamDecoder() } catch { throw EStargzError.compression(error.description) }
        let size = footer.tocSize
        var delivered: Int64 = 0
        var frameEnded = false
        var hasher = SHA256Hasher()
        let fill: TOCStreamParser.Fill = { (buffer: UnsafeMutableRawBufferPointer) throws(EStargzError) -> Int in
            let wanted = Int(min(Int64(buffer.count), size - delivered))
            guard wanted > 0 else { return 0 }
            while true {
                if used == piece.count {
                    do { piece = try nextPiece() } catch let error as EStargzError { throw error } catch { throw .invalidTOC("\(what): \(error)") }
                    used = 0
                    if piece.isEmpty { throw .invalidTOC("\(what) is truncated: it ends after \(delivered) of the footer's \(size) bytes") }
                }
                let step: (consumed: Int, produced: Int, memberEnded: Bool)
                do {
                    step = try piece.withUnsafeBytes { all in
                        try decoder.decode(UnsafeRawBufferPointer(rebasing: all[used...]),
                                           into: UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< wanted]))
                    }
                } catch {
                    throw .invalidTOC("\(what) does not decompress: \(error)")
                }
                used += step.consumed
                if step.memberEnded { frameEnded = true }
                if step.produced > 0 {
                    hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0 ..< step.produced]))
                    delivered += Int64(step.produced)
                    return step.produced
                }
                if frameEnded { throw .invalidTOC("\(what) is truncated: it holds \(delivered) of the footer's \(size) bytes") }
                if step.consumed == 0 && used < piece.count { throw .invalidTOC("\(what) is truncated") }
            }
        }
        let readAhead = TOCReadAhead(fill: fill)
        defer { readAhead.finish() }
        let nextJSON: TOCStreamParser.Fill = { (buffer: UnsafeMutableRawBufferPointer) throws(EStargzError) -> Int in
            try readAhead.read(into: buffer)
        }
        var parser = TOCStreamParser(totalSize: Int(size), builder: NodeTableBuilder(tocOffset: headerStart, limits: limits),
                                     fill: nextJSON)
        try parser.parse(expected: expected, fill: nextJSON, finish: { readAhead.finish() }, digest: { hasher.finalize() })
        readAhead.finish()
        // All of the footer's bytes were parsed: the frame must end there (no bomb behind them).
        var probe = [UInt8](repeating: 0, count: 1)
        while !frameEnded {
            if used == piece.count {
                piece = try nextPiece()
                used = 0
                if piece.isEmpty { throw EStargzError.invalidTOC("\(what) is truncated after its \(size) bytes") }
            }
            let step: (consumed: Int, produced: Int, memberEnded: Bool)
            do {
                step = try piece.withUnsafeBytes { all in
                    try probe.withUnsafeMutableBytes { try decoder.decode(UnsafeRawBufferPointer(rebasing: all[used...]), into: $0) }
                }
            } catch {
                throw EStargzError.invalidTOC("\(what) does not decompress: \(error)")
            }
            if step.produced > 0 { throw EStargzError.limitExceeded("\(what) holds more than the footer's \(size) bytes") }
            used += step.consumed
            if step.memberEnded { frameEnded = true }
            if step.consumed == 0 && !frameEnded && used < piece.count { throw EStargzError.invalidTOC("\(what) is truncated") }
        }
        guard used == piece.count, next == end else { throw EStargzError.invalidTOC("\(what): bytes follow the frame") }
        let digest = hasher.finalize()
        if let expected, expected != digest {
            throw EStargzError.tocDigestMismatch(expected: expected.description, actual: digest.description)
        }
        var builder = parser.takeBuilder()
        parser.release()
        return (try builder.finish(), digest)
    }
}
