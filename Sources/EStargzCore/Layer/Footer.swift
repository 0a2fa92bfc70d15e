/// The footer that ends every eStargz blob and tells where its TOC starts.
///
/// It is itself an empty gzip member, so the whole blob stays a valid gzip stream:
///
/// ```
/// eStargz (51 bytes)                          legacy stargz (47 bytes)
///  0  1f 8b 08 04   magic, deflate, FEXTRA      1f 8b 08 04
///  4  00 00 00 00   mtime                       00 00 00 00
///  8  00 ff         XFL, OS=unknown             00 ff
/// 10  1a 00         XLEN = 26                   16 00  XLEN = 22
/// 12  'S' 'G' 16 00 subfield id, length 22      (no subfield header)
/// 16  %016x         TOC offset, 16 hex digits   12: %016x
/// 32  "STARGZ"                                  28: "STARGZ"
/// 38  01 00 00 ff ff  empty final stored block  34: same
/// 43  00 00 00 00   CRC32 of nothing            39: same
/// 47  00 00 00 00   ISIZE = 0                   43: same
/// ```
///
/// A blob whose TOC lives in a separate TOC image (upstream's `estargz/externaltoc`) ends with
/// a 46-byte footer that names no offset: bytes 0-9 as above, XLEN = 21 (`15 00`), then
/// `'S' 'G' 11 00` and "STARGZEXTERNALTOC" (17 bytes), the same empty stored block, CRC32 and ISIZE.
public enum FooterFormat: Sendable, Equatable {
    /// The 51-byte eStargz footer (what the writer emits).
    case estargz
    /// The 47-byte footer of the original stargz format.
    case legacyStargz
    /// The 48-byte zstd:chunked footer (a skippable frame; see ``ZstdChunkedFooter``).
    case zstdChunked
    /// The 46-byte footer of an eStargz blob whose TOC is in a TOC image.
    case externalTOC

    /// Bytes the footer occupies at the end of the blob.
    public var size: Int {
        switch self {
        case .estargz: 51
        case .legacyStargz: 47
        case .externalTOC: 46
        case .zstdChunked: ZstdChunkedFooter.size
        }
    }
}

enum Footer {
    static let maximumSize = 51
    private static let magic = Array("STARGZ".utf8)

    /// The eStargz footer for a TOC starting at `tocOffset`.
    static func encode(tocOffset: Int64) -> [UInt8] {
        var bytes: [UInt8] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0x00, 0xff, 26, 0, UInt8(ascii: "S"), UInt8(ascii: "G"), 22, 0]
        bytes += hex16(tocOffset) + magic
        bytes += [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]
        return bytes
    }

    private static let externalMagic = Array("STARGZEXTERNALTOC".utf8)

    /// The footer of a blob whose TOC is external.
    static func encodeExternalTOC() -> [UInt8] {
        [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0x00, 0xff, 21, 0, UInt8(ascii: "S"), UInt8(ascii: "G"), 17, 0]
            + externalMagic + [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    /// Parses the footer at the end of `tail` (the blob's last bytes; at least 47 of them),
    /// trying eStargz first and then legacy stargz, as the reference does, and the external-TOC
    /// footer (whose TOC offset is reported as -1). (A blob ending with the zstd:chunked magic goes to
    /// ``ZstdChunkedFooter`` instead.)
    static func parse(_ tail: [UInt8]) throws(EStargzError) -> (format: FooterFormat, tocOffset: Int64) {
        var reasons: [String] = []
        if tail.count >= FooterFormat.externalTOC.size {
            let f = Array(tail.suffix(FooterFormat.externalTOC.size))
            if f[0] == 0x1f, f[1] == 0x8b, f[2] == 0x08, f[3] & 0x04 != 0, f[10] == 21, f[11] == 0,
               f[12] == UInt8(ascii: "S"), f[13] == UInt8(ascii: "G"), f[14] == 17, f[15] == 0, Array(f[16 ..< 33]) == externalMagic {
                return (.externalTOC, -1)
            }
        }
        for format in [FooterFormat.estargz, .legacyStargz] where tail.count >= format.size {
            let footer = tail[(tail.count - format.size)...]
            do {
                return (format, try parse(footer, as: format))
            } catch {
                reasons.append(error.reason)
            }
        }
        if reasons.isEmpty { reasons.append("blob of \(tail.count) bytes is smaller than any footer") }
        throw .invalidFooter(reasons.joined(separator: "; "))
    }

    private static func parse(_ footer: ArraySlice<UInt8>, as format: FooterFormat) throws(FooterMismatch) -> Int64 {
        let name = format == .estargz ? "eStargz" : "legacy stargz"
        let f = Array(footer)
        guard f[0] == 0x1f, f[1] == 0x8b, f[2] == 0x08 else { throw FooterMismatch("\(name): not a gzip header") }
        guard f[3] & 0x04 != 0 else { throw FooterMismatch("\(name): gzip header has no extra field") }
        let xlen = Int(f[10]) | Int(f[11]) << 8
        let payload: ArraySlice<UInt8>
        switch format {
        case .estargz:
            guard xlen == 26, f[12] == UInt8(ascii: "S"), f[13] == UInt8(ascii: "G") else {
                throw FooterMismatch("\(name): extra field is not an SG subfield of 26 bytes")
            }
            guard Int(f[14]) | Int(f[15]) << 8 == 22 else { throw FooterMismatch("\(name): SG subfield length is not 22") }
            payload = f[16 ..< 38]
        case .legacyStargz:
            guard xlen == 22 else { throw FooterMismatch("\(name): extra field is not 22 bytes") }
            payload = f[12 ..< 34]
        case .zstdChunked:
            throw FooterMismatch("zstd:chunked footers are parsed by ZstdChunkedFooter")
        case .externalTOC:
            throw FooterMismatch("external TOC footers are matched whole")
        }
        guard Array(payload.suffix(6)) == magic else { throw FooterMismatch("\(name): STARGZ magic missing") }
        var offset: Int64 = 0
        for byte in payload.prefix(16) {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0") ... UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a") ... UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A") ... UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw FooterMismatch("\(name): TOC offset is not hexadecimal")
            }
            guard offset >> 59 == 0 else { throw FooterMismatch("\(name): TOC offset overflows") }
            offset = offset << 4 | Int64(digit)
        }
        return offset
    }

    private static func hex16(_ value: Int64) -> [UInt8] {
        let digits = Array("0123456789abcdef".utf8)
        return (0 ..< 16).reversed().map { digits[Int((UInt64(bitPattern: value) >> (UInt64($0) * 4)) & 0xf)] }
    }
}

/// Why one footer layout did not match; collected so the final error lists every attempt.
private struct FooterMismatch: Error {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}
