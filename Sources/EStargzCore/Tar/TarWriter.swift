/// Which extensions ``TarWriter`` uses for what ustar cannot hold.
public enum TarFormat: Sendable {
    /// POSIX.1-2001: PAX extended headers ('x') for long names, big numbers,
    /// sub-second times, non-ASCII text and xattrs. What Go and containerd write.
    case pax
    /// GNU: long names and links as 'L'/'K' blocks, big numbers in base-256; a PAX header
    /// still carries xattrs, extra records, atime/ctime and sub-second times, which GNU has no
    /// lossless place for.
    case gnu
}

/// Encodes tar headers. Content is the caller's: write it after the header, then
/// ``paddingLength(forContentSize:)`` zero bytes, and ``endOfArchive`` at the end.
///
/// ustar fields are used whenever the value fits; only what does not fit goes to
/// extension records, so simple entries are plain ustar and readable everywhere.
public enum TarWriter {
    /// The blocks for `header`: a PAX extended header ('x') and/or GNU long-name ('L') /
    /// long-link ('K') blocks when needed, then the ustar header block. Always a multiple of 512 bytes.
    ///
    /// The name is written as given: a directory gets a trailing "/" only if the caller put one there.
    /// Throws ``EStargzError/invalidArgument(_:)`` for negative ids, sizes or device numbers,
    /// and for NUL bytes in names.
    public static func encodeHeader(_ header: TarHeader, format: TarFormat = .pax) throws -> [UInt8] {
        let size = header.kind == .regular ? header.size : 0
        guard size >= 0, header.uid >= 0, header.gid >= 0, header.devMajor >= 0, header.devMinor >= 0, header.mode >= 0 else {
            throw EStargzError.invalidArgument("negative size, id, mode or device number in tar header for \(String(reflecting: header.name))")
        }
        for text in [header.name, header.linkName, header.userName, header.groupName] where text.utf8.contains(0) {
            throw EStargzError.invalidArgument("NUL byte in tar header text \(String(reflecting: text))")
        }

        var pax: [String: [UInt8]] = [:]
        var output: [UInt8] = []
        var block = [UInt8](repeating: 0, count: TarBlock.size)

        // Name: ustar name, or prefix + name, else an extension (PAX prefers ASCII text).
        let nameBytes = Array(header.name.utf8)
        var nameField = nameBytes
        var prefixField: [UInt8] = []
        let asciiOnly = format == .pax
        if nameBytes.count <= TarBlock.name.count, !asciiOnly || isASCII(nameBytes) {
            // fits
        } else if format == .pax, isASCII(nameBytes), let (prefix, name) = splitUstarName(nameBytes) {
            prefixField = prefix
            nameField = name
        } else if format == .pax {
            pax["path"] = nameBytes
            nameField = Array(nameBytes.prefix(TarBlock.name.count))
        } else {
            output += longNameBlocks(nameBytes, typeflag: TarBlock.TypeFlag.gnuLongName)
            nameField = Array(nameBytes.prefix(TarBlock.name.count))
        }

        let linkBytes = Array(header.linkName.utf8)
        var linkField = linkBytes
        if linkBytes.count > TarBlock.linkName.count || (asciiOnly && !isASCII(linkBytes)) {
            if format == .pax {
                pax["linkpath"] = linkBytes
            } else {
                output += longNameBlocks(linkBytes, typeflag: TarBlock.TypeFlag.gnuLongLink)
            }
            linkField = Array(linkBytes.prefix(TarBlock.linkName.count))
        }

        for (key, value, range) in [("uname", header.userName, TarBlock.userName), ("gname", header.groupName, TarBlock.groupName)] {
            let bytes = Array(value.utf8)
            if bytes.count <= range.count - 1, !asciiOnly || isASCII(bytes) {
                put(bytes, into: &block, range)
            } else {
                pax[key] = bytes
                put(Array(bytes.prefix(range.count - 1)), into: &block, range)
            }
        }

        // Numbers: octal when they fit; PAX decimal records or GNU base-256 when not.
        func number(_ value: Int64, _ range: Range<Int>, paxKey: String?) {
            if value <= TarBlock.maxOctal(width: range.count) {
                putOctal(value, into: &block, range)
            } else if format == .gnu || paxKey == nil {
                putBase256(value, into: &block, range)
            } else {
                pax[paxKey!] = Array(String(value).utf8)
                putOctal(0, into: &block, range)
            }
        }
        number(header.mode, TarBlock.mode, paxKey: nil)
        number(Int64(header.uid), TarBlock.uid, paxKey: "uid")
        number(Int64(header.gid), TarBlock.gid, paxKey: "gid")
        number(size, TarBlock.sizeField, paxKey: "size")
        number(Int64(header.devMajor), TarBlock.devMajor, paxKey: nil)
        number(Int64(header.devMinor), TarBlock.devMinor, paxKey: nil)

        // Times: whole non-negative seconds fit ustar; anything else needs PAX (GNU may use base-256
        // for the seconds but still has nowhere for nanoseconds).
        let mtime = header.modificationTime
        if mtime.seconds >= 0, mtime.seconds <= TarBlock.maxOctal(width: TarBlock.mtime.count) {
            putOctal(mtime.seconds, into: &block, TarBlock.mtime)
        } else if format == .gnu {
            putBase256(mtime.seconds, into: &block, TarBlock.mtime)
        } else {
            putOctal(max(0, min(mtime.seconds, TarBlock.maxOctal(width: TarBlock.mtime.count))), into: &block, TarBlock.mtime)
            pax["mtime"] = formatPAXTime(mtime)
        }
        if mtime.nanoseconds != 0 { pax["mtime"] = formatPAXTime(mtime) }
        if let atime = header.accessTime { pax["atime"] = formatPAXTime(atime) }
        if let ctime = header.changeTime { pax["ctime"] = formatPAXTime(ctime) }

        for (key, value) in header.paxRecords { pax[key] = value }
        for (name, value) in header.xattrs { pax["SCHILY.xattr." + name] = value }

        put(nameField, into: &block, TarBlock.name)
        put(prefixField, into: &block, TarBlock.prefix)
        put(linkField, into: &block, TarBlock.linkName)
        block[TarBlock.typeflag] = header.kind.typeflag
        switch format {
        case .pax:
            put(TarBlock.ustarMagic, into: &block, TarBlock.magic)
            put(TarBlock.ustarVersion, into: &block, TarBlock.version)
        case .gnu:
            put(TarBlock.gnuMagic, into: &block, TarBlock.magic)
            put(TarBlock.gnuVersion, into: &block, TarBlock.version)
        }
        setChecksum(&block)

        if !pax.isEmpty {
            output = paxBlocks(pax, entryName: nameBytes) + output
        }
        return output + block
    }

    /// Zero bytes needed after `size` content bytes to reach a 512 boundary.
    public static func paddingLength(forContentSize size: Int64) -> Int {
        Int((Int64(TarBlock.size) - size % Int64(TarBlock.size)) % Int64(TarBlock.size))
    }

    /// Two zero blocks.
    public static let endOfArchive = [UInt8](repeating: 0, count: 2 * TarBlock.size)

    // MARK: - Extension blocks

    /// A PAX global header ('g'): its records apply to every later entry of the archive
    /// (an empty value cancels an earlier global record). Records are sorted by key.
    public static func encodeGlobalHeader(_ records: [String: [UInt8]]) -> [UInt8] {
        extensionBlocks(name: Array("pax_global_header".utf8), typeflag: TarBlock.TypeFlag.paxGlobal,
                        payload: paxPayload(records), gnu: false)
    }

    /// A PAX 'x' header and its padded records.
    static func paxBlocks(_ records: [String: [UInt8]], entryName: [UInt8]) -> [UInt8] {
        // The 'x' header's own name is informational; like GNU tar, put it in a PaxHeaders
        // directory so a reader that ignores 'x' does not overwrite the real file.
        let base = entryName.split(separator: UInt8(ascii: "/")).last.map(Array.init) ?? []
        let name = Array("PaxHeaders.0/".utf8) + base.map { $0 < 0x80 ? $0 : UInt8(ascii: "_") }
        return extensionBlocks(name: name, typeflag: TarBlock.TypeFlag.paxLocal, payload: paxPayload(records), gnu: false)
    }

    /// Records sorted by key, so the output is deterministic.
    static func paxPayload(_ records: [String: [UInt8]]) -> [UInt8] {
        var payload: [UInt8] = []
        for key in records.keys.sorted() {
            payload += formatPAXRecord(key: key, value: records[key]!)
        }
        return payload
    }

    /// One PAX record, `"%d %s=%s\n"`, whose leading length counts its own digits.
    static func formatPAXRecord(key: String, value: [UInt8]) -> [UInt8] {
        let body = Array(" \(key)=".utf8) + value + [UInt8(ascii: "\n")]
        var length = body.count + String(body.count).utf8.count
        // Adding the digits can add a digit (e.g. 98 + 2 = 100); one more pass settles it.
        length = body.count + String(length).utf8.count
        return Array(String(length).utf8) + body
    }

    /// A GNU 'L' or 'K' block: a header named "././@LongLink" whose content is the NUL-terminated text.
    static func longNameBlocks(_ text: [UInt8], typeflag: UInt8) -> [UInt8] {
        extensionBlocks(name: Array("././@LongLink".utf8), typeflag: typeflag, payload: text + [0], gnu: true)
    }

    /// An extension header block (zero owner and time, mode 644) followed by its padded payload.
    static func extensionBlocks(name: [UInt8], typeflag: UInt8, payload: [UInt8], gnu: Bool) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: TarBlock.size)
        put(Array(name.prefix(TarBlock.name.count)), into: &block, TarBlock.name)
        putOctal(0o644, into: &block, TarBlock.mode)
        putOctal(0, into: &block, TarBlock.uid)
        putOctal(0, into: &block, TarBlock.gid)
        putOctal(Int64(payload.count), into: &block, TarBlock.sizeField)
        putOctal(0, into: &block, TarBlock.mtime)
        block[TarBlock.typeflag] = typeflag
        put(gnu ? TarBlock.gnuMagic : TarBlock.ustarMagic, into: &block, TarBlock.magic)
        put(gnu ? TarBlock.gnuVersion : TarBlock.ustarVersion, into: &block, TarBlock.version)
        setChecksum(&block)
        return block + payload + [UInt8](repeating: 0, count: paddingLength(forContentSize: Int64(payload.count)))
    }

    /// A PAX time: seconds, then a fraction without trailing zeros. Before the epoch the
    /// whole value is negative ("-1.5"), so normalized (-2 s, 0.5e9 ns) is written as -1.5.
    static func formatPAXTime(_ time: TarTimestamp) -> [UInt8] {
        var seconds = time.seconds
        var nanos = Int64(time.nanoseconds)
        var sign = ""
        if seconds < 0 {
            sign = "-"
            if nanos != 0 {
                seconds += 1
                nanos = 1_000_000_000 - nanos
            }
            seconds = -seconds
        }
        var text = sign + String(seconds)
        if nanos != 0 {
            var fraction = String(nanos)
            fraction = String(repeating: "0", count: 9 - fraction.count) + fraction
            while fraction.hasSuffix("0") { fraction.removeLast() }
            text += "." + fraction
        }
        return Array(text.utf8)
    }

    // MARK: - Fields

    /// Splits a name into a ustar prefix (≤ 155 bytes) and name (≤ 100 bytes) at a "/",
    /// or nil if no split fits.
    static func splitUstarName(_ name: [UInt8]) -> ([UInt8], [UInt8])? {
        guard name.count > TarBlock.name.count, name.count <= TarBlock.prefix.count + 1 + TarBlock.name.count else { return nil }
        // The latest slash that keeps the prefix short enough leaves the shortest name part.
        var index = min(name.count - 1, TarBlock.prefix.count)
        while index > 0 {
            if name[index] == UInt8(ascii: "/") {
                let rest = name.count - index - 1
                if rest == 0 || rest > TarBlock.name.count { return nil }
                return (Array(name[..<index]), Array(name[(index + 1)...]))
            }
            index -= 1
        }
        return nil
    }

    static func isASCII(_ bytes: [UInt8]) -> Bool { bytes.allSatisfy { $0 < 0x80 } }

    static func put(_ bytes: [UInt8], into block: inout [UInt8], _ range: Range<Int>) {
        let count = min(bytes.count, range.count)
        block.replaceSubrange(range.lowerBound ..< range.lowerBound + count, with: bytes.prefix(count))
    }

    /// Zero-padded octal digits filling all but the field's last byte, which stays NUL.
    static func putOctal(_ value: Int64, into block: inout [UInt8], _ range: Range<Int>) {
        var digits = Array(String(value, radix: 8).utf8)
        digits = [UInt8](repeating: UInt8(ascii: "0"), count: max(0, range.count - 1 - digits.count)) + digits
        put(digits, into: &block, range)
    }

    /// Base-256: big-endian two's complement with the first byte's high bit set (0x80 positive, 0xff negative).
    static func putBase256(_ value: Int64, into block: inout [UInt8], _ range: Range<Int>) {
        var bits = UInt64(bitPattern: value)
        for index in range.reversed() {
            block[index] = UInt8(truncatingIfNeeded: bits)
            bits = value < 0 ? (bits >> 8) | (0xff << 56) : bits >> 8
        }
        block[range.lowerBound] = value < 0 ? 0xff : 0x80
    }

    /// The checksum field: six octal digits, NUL, space (as GNU tar and Go write it).
    static func setChecksum(_ block: inout [UInt8]) {
        for index in TarBlock.checksum { block[index] = UInt8(ascii: " ") }
        let sum = block.reduce(0) { $0 + Int64($1) }
        var digits = Array(String(sum, radix: 8).utf8)
        digits = [UInt8](repeating: UInt8(ascii: "0"), count: max(0, 6 - digits.count)) + digits
        put(digits + [0, UInt8(ascii: " ")], into: &block, TarBlock.checksum)
    }
}

/// Builds a whole tar in memory; for tests and small synthesized entries.
public struct TarBuilder {
    private let format: TarFormat
    /// Everything appended so far (without the end-of-archive blocks until ``finish()``).
    public private(set) var bytes: [UInt8] = []

    /// An empty archive written in `format`.
    public init(format: TarFormat = .pax) {
        self.format = format
    }

    /// Appends an entry; for ``TarHeader/Kind/regular`` the header's size is set from `content`.
    /// Other kinds take no content.
    public mutating func append(_ header: TarHeader, content: [UInt8] = []) throws {
        var header = header
        if header.kind == .regular {
            header.size = Int64(content.count)
        } else if !content.isEmpty {
            throw EStargzError.invalidArgument("content given for non-regular tar entry \(String(reflecting: header.name))")
        }
        bytes += try TarWriter.encodeHeader(header, format: format)
        bytes += content
        bytes += [UInt8](repeating: 0, count: TarWriter.paddingLength(forContentSize: Int64(content.count)))
    }

    /// Appends a PAX global header ('g') whose records apply to every later entry.
    public mutating func appendGlobalHeader(_ records: [String: [UInt8]]) {
        bytes += TarWriter.encodeGlobalHeader(records)
    }

    /// Appends end-of-archive and returns all bytes.
    public mutating func finish() -> [UInt8] {
        bytes += TarWriter.endOfArchive
        return bytes
    }
}
