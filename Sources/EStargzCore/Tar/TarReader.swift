/// One entry as read: its header and where it lives in the (uncompressed) tar stream.
public struct TarEntry: Sendable {
    /// The entry's metadata with every extension (PAX, GNU long name/link) applied.
    public var header: TarHeader
    /// Offset of the entry's first block, including its PAX ('x') and GNU long-name
    /// ('L'/'K') blocks. PAX global ('g') headers belong to the archive, not to the
    /// entry after them, so they are not counted.
    public var headerOffset: Int64
    /// Offset of the first content byte (just after the ustar header block).
    public var dataOffset: Int64
}

/// Streaming tar reader: never holds more than one entry's header data.
///
/// Reads ustar (with the 155-byte prefix), star, old v7 and GNU headers, PAX local
/// ('x') and global ('g') extended headers, GNU long names ('L') and long links ('K'),
/// and base-256 numeric fields. Decisions where formats leave room:
/// - A regular-file typeflag ('0' or '\0') whose name ends in "/" is a directory, as in Go.
/// - Content sizes of hard links, symlinks, devices, directories and fifos are ignored
///   (no content is read for them), as in Go.
/// - GNU volume labels ('V') are archive metadata and are skipped silently; every other
///   unknown or unsupported typeflag (GNU sparse 'S', multi-volume 'M', dumpdir 'D', ...)
///   and GNU sparse PAX records throw ``EStargzError/invalidTar(offset:reason:)``.
/// - The archive ends at two zero blocks, at one zero block followed by end of input,
///   or at end of input exactly where a header would start (as Go does). End of input
///   anywhere else is ``EStargzError/truncated(what:offset:needed:)``.
/// - PAX and GNU long-name payloads above 1 MiB (each, summed per entry, and for the global
///   records in force) are refused as hostile.
public final class TarReader {
    /// Largest PAX ('x'/'g') or GNU long-name payload accepted; also the cap on the sum of
    /// one entry's extension payloads, and on the PAX global records in force, so a stream
    /// of extension headers cannot grow memory without bound.
    public static let maxExtensionSize: Int64 = 1 << 20
    /// Largest content size accepted (1 EiB): far beyond any real layer, and small enough
    /// that offset arithmetic can never overflow.
    public static let maxContentSize: Int64 = 1 << 60

    private let input: TarInput
    /// The one header block buffer, reused for every header.
    private var block = [UInt8](repeating: 0, count: TarBlock.size)
    private var consumed: Int64 = 0
    /// Content bytes of the current entry not yet read.
    private var contentLeft: Int64 = 0
    /// Zero bytes after the current entry's content up to the block boundary.
    private var paddingLeft: Int64 = 0
    private var currentName = ""
    /// PAX global records in force (from 'g' headers), applied under each entry's own records.
    private var globalRecords: [String: [UInt8]] = [:]
    private var finished = false
    /// The first error thrown; the stream position is unknown after it, so it is thrown again.
    private var failure: Error?

    /// A reader pulling bytes from `input`, which must be at the start of the archive.
    public init(_ input: TarInput) {
        self.input = input
    }

    /// Offset in the input just after the last byte consumed.
    public var offset: Int64 { consumed }

    /// The next entry, skipping any unread content (and padding) of the previous one;
    /// nil at the end of the archive.
    ///
    /// After an error the reader stays failed: every later call throws the same error.
    public func next() throws -> TarEntry? {
        if let failure { throw failure }
        do {
            return try nextEntry()
        } catch {
            failure = error
            throw error
        }
    }

    private func nextEntry() throws -> TarEntry? {
        guard !finished else { return nil }
        try skipRest()

        var headerOffset = consumed
        var local: [String: [UInt8]] = [:]
        var longName: String?
        var longLink: String?
        var pendingExtension = false
        var extensionBytes: Int64 = 0

        while true {
            let blockOffset = consumed
            guard try readBlock(endAllowed: !pendingExtension) else {
                finished = true
                return nil
            }
            if block.allSatisfy({ $0 == 0 }) {
                if pendingExtension {
                    throw EStargzError.invalidTar(offset: blockOffset, reason: "zero block after an extension header")
                }
                // A second zero block (or a clean end of input) ends the archive.
                if try readBlock(endAllowed: true), !block.allSatisfy({ $0 == 0 }) {
                    throw EStargzError.invalidTar(offset: blockOffset, reason: "a single zero block inside the archive")
                }
                finished = true
                return nil
            }
            try verifyChecksum(at: blockOffset)
            let typeflag = block[TarBlock.typeflag]

            switch typeflag {
            case TarBlock.TypeFlag.paxLocal, TarBlock.TypeFlag.paxGlobal:
                let payload = try readExtensionPayload(at: blockOffset, what: typeflag == TarBlock.TypeFlag.paxGlobal ? "PAX global header" : "PAX header")
                let records = try Self.parsePAXRecords(payload, at: blockOffset)
                if typeflag == TarBlock.TypeFlag.paxGlobal {
                    for (key, value) in records {
                        // An empty value in a global header removes the global default.
                        if value.isEmpty { globalRecords[key] = nil } else { globalRecords[key] = value }
                    }
                    let globalBytes = globalRecords.reduce(0) { $0 + $1.key.utf8.count + $1.value.count }
                    guard globalBytes <= Self.maxExtensionSize else {
                        throw EStargzError.invalidTar(offset: blockOffset, reason: "PAX global records exceed \(Self.maxExtensionSize) bytes")
                    }
                    if !pendingExtension { headerOffset = consumed }
                } else {
                    extensionBytes += Int64(payload.count)
                    try checkExtensionTotal(extensionBytes, at: blockOffset)
                    local.merge(records) { _, new in new }
                    pendingExtension = true
                }
            case TarBlock.TypeFlag.gnuLongName, TarBlock.TypeFlag.gnuLongLink:
                let payload = try readExtensionPayload(at: blockOffset, what: "GNU long name")
                extensionBytes += Int64(payload.count)
                let text = Self.string(payload[...])
                if typeflag == TarBlock.TypeFlag.gnuLongName { longName = text } else { longLink = text }
                pendingExtension = true
                try checkExtensionTotal(extensionBytes, at: blockOffset)
            case TarBlock.TypeFlag.gnuVolumeLabel:
                // A volume label names the archive, not a file; skip it and its content.
                let size = try numeric(TarBlock.sizeField, field: "size", at: blockOffset)
                guard size >= 0, size <= Self.maxContentSize else {
                    throw EStargzError.invalidTar(offset: blockOffset, reason: "invalid volume label size \(size)")
                }
                try skipBytes(size + Int64(TarWriter.paddingLength(forContentSize: size)), what: "volume label")
                if !pendingExtension { headerOffset = consumed }
            default:
                var header = try decodeHeader(typeflag: typeflag, at: blockOffset)
                if let longName { header.name = longName }
                if let longLink { header.linkName = longLink }
                var records = globalRecords
                for (key, value) in local {
                    // An empty local value means "not set for this entry", except for xattrs, where an
                    // empty value is a real attribute (GNU tar and Go's archive/tar keep it).
                    if value.isEmpty, !key.hasPrefix("SCHILY.xattr.") { records[key] = nil } else { records[key] = value }
                }
                try apply(records, to: &header, at: blockOffset)
                if header.kind == .regular, header.name.hasSuffix("/"),
                   typeflag == TarBlock.TypeFlag.regular || typeflag == TarBlock.TypeFlag.regularOld {
                    header.kind = .directory
                }
                if header.kind != .regular { header.size = 0 }
                guard header.size >= 0, header.size <= Self.maxContentSize else {
                    throw EStargzError.invalidTar(offset: blockOffset, reason: "invalid size \(header.size) for \(String(reflecting: header.name))")
                }
                contentLeft = header.size
                paddingLeft = Int64(TarWriter.paddingLength(forContentSize: header.size))
                currentName = header.name
                return TarEntry(header: header, headerOffset: headerOffset, dataOffset: consumed)
            }
        }
    }

    private func checkExtensionTotal(_ total: Int64, at blockOffset: Int64) throws {
        guard total <= Self.maxExtensionSize else {
            throw EStargzError.invalidTar(offset: blockOffset, reason: "extension headers of one entry exceed \(Self.maxExtensionSize) bytes")
        }
    }

    /// Read the current entry's content; returns 0 once it is exhausted.
    public func readContent(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if let failure { throw failure }
        guard contentLeft > 0, buffer.count > 0 else { return 0 }
        let want = Int(min(Int64(buffer.count), contentLeft))
        let got: Int
        do {
            got = try input.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< want]))
        } catch {
            failure = error
            throw error
        }
        if got == 0 {
            let error = EStargzError.truncated(what: "content of \(currentName)", offset: consumed, needed: contentLeft)
            failure = error
            throw error
        }
        consumed += Int64(got)
        contentLeft -= Int64(got)
        return got
    }

    // MARK: - Blocks

    /// Skips what is left of the current entry's content and padding.
    private func skipRest() throws {
        let rest = contentLeft + paddingLeft
        contentLeft = 0
        paddingLeft = 0
        try skipBytes(rest, what: "content of \(currentName)")
    }

    private func skipBytes(_ count: Int64, what: @autoclosure () -> String) throws {
        guard count > 0 else { return }
        do {
            try input.skip(count)
        } catch let EStargzError.truncated(_, offset, needed) {
            throw EStargzError.truncated(what: what(), offset: consumed + offset, needed: needed)
        }
        consumed += count
    }

    /// Fills `block`; false at a clean end of input when `endAllowed`.
    private func readBlock(endAllowed: Bool) throws -> Bool {
        let start = consumed
        var filled = 0
        try block.withUnsafeMutableBytes { raw in
            while filled < raw.count {
                let got = try input.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[filled...]))
                if got == 0 { break }
                filled += got
            }
        }
        consumed += Int64(filled)
        if filled == TarBlock.size { return true }
        if filled == 0, endAllowed { return false }
        throw EStargzError.truncated(what: "tar header", offset: start, needed: Int64(TarBlock.size))
    }

    /// Reads the content of an extension header ('x', 'g', 'L', 'K') whose header is in `block`.
    private func readExtensionPayload(at blockOffset: Int64, what: String) throws -> [UInt8] {
        let size = try numeric(TarBlock.sizeField, field: "size", at: blockOffset)
        guard size >= 0, size <= Self.maxExtensionSize else {
            throw EStargzError.invalidTar(offset: blockOffset, reason: "\(what) of \(size) bytes exceeds the \(Self.maxExtensionSize)-byte limit")
        }
        let padded = Int(size) + TarWriter.paddingLength(forContentSize: size)
        var payload = [UInt8](repeating: 0, count: padded)
        var filled = 0
        try payload.withUnsafeMutableBytes { raw in
            while filled < padded {
                let got = try input.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[filled...]))
                if got == 0 {
                    throw EStargzError.truncated(what: what, offset: consumed + Int64(filled), needed: Int64(padded - filled))
                }
                filled += got
            }
        }
        consumed += Int64(padded)
        payload.removeLast(padded - Int(size))
        return payload
    }

    /// Accepts the stored checksum if it matches the unsigned or the signed byte sum
    /// (some old tars summed signed chars), as Go and GNU tar do.
    private func verifyChecksum(at blockOffset: Int64) throws {
        let stored = try numeric(TarBlock.checksum, field: "checksum", at: blockOffset)
        var unsigned: Int64 = 0
        var signed: Int64 = 0
        for index in 0 ..< TarBlock.size {
            let byte = TarBlock.checksum.contains(index) ? UInt8(ascii: " ") : block[index]
            unsigned += Int64(byte)
            signed += Int64(Int8(bitPattern: byte))
        }
        guard stored == unsigned || stored == signed else {
            throw EStargzError.invalidTar(offset: blockOffset, reason: "header checksum \(stored) does not match computed \(unsigned)")
        }
    }

    // MARK: - Header fields

    /// Decodes the ustar/GNU/v7 header in `block` (extensions are applied by the caller).
    private func decodeHeader(typeflag: UInt8, at blockOffset: Int64) throws -> TarHeader {
        let kind: TarHeader.Kind
        switch typeflag {
        case TarBlock.TypeFlag.regular, TarBlock.TypeFlag.regularOld, TarBlock.TypeFlag.contiguous: kind = .regular
        case TarBlock.TypeFlag.hardlink: kind = .hardlink
        case TarBlock.TypeFlag.symlink: kind = .symlink
        case TarBlock.TypeFlag.characterDevice: kind = .characterDevice
        case TarBlock.TypeFlag.blockDevice: kind = .blockDevice
        case TarBlock.TypeFlag.directory: kind = .directory
        case TarBlock.TypeFlag.fifo: kind = .fifo
        default:
            let name = Self.string(block[TarBlock.name])
            let shown = typeflag >= 0x20 && typeflag < 0x7f ? "'\(Character(Unicode.Scalar(typeflag)))'" : "0x\(String(typeflag, radix: 16))"
            throw EStargzError.invalidTar(offset: blockOffset, reason: "unsupported entry type \(shown) for \(String(reflecting: name))")
        }

        let magic = block[TarBlock.magic]
        let version = block[TarBlock.version]
        let isUstar = magic.elementsEqual(TarBlock.ustarMagic) && version.elementsEqual(TarBlock.ustarVersion)
        let isGNU = magic.elementsEqual(TarBlock.gnuMagic) && version.elementsEqual(TarBlock.gnuVersion)

        var header = TarHeader(name: Self.string(block[TarBlock.name]), kind: kind)
        header.mode = try numeric(TarBlock.mode, field: "mode", at: blockOffset)
        header.uid = try Int(numeric(TarBlock.uid, field: "uid", at: blockOffset))
        header.gid = try Int(numeric(TarBlock.gid, field: "gid", at: blockOffset))
        header.size = try numeric(TarBlock.sizeField, field: "size", at: blockOffset)
        header.modificationTime = TarTimestamp(seconds: try numeric(TarBlock.mtime, field: "mtime", at: blockOffset))
        header.linkName = Self.string(block[TarBlock.linkName])

        // v7 headers end at the link name; the rest of the block is undefined.
        if isUstar || isGNU {
            header.userName = Self.string(block[TarBlock.userName])
            header.groupName = Self.string(block[TarBlock.groupName])
            if kind == .characterDevice || kind == .blockDevice {
                header.devMajor = try Int(numeric(TarBlock.devMajor, field: "devmajor", at: blockOffset))
                header.devMinor = try Int(numeric(TarBlock.devMinor, field: "devminor", at: blockOffset))
            }
        }
        if isUstar {
            let isStar = block[TarBlock.starTrailer].elementsEqual(TarBlock.starTrailerMagic)
            let prefix = Self.string(block[isStar ? TarBlock.starPrefix : TarBlock.prefix])
            if !prefix.isEmpty { header.name = prefix + "/" + header.name }
        } else if isGNU {
            let atime = try numeric(TarBlock.gnuAccessTime, field: "atime", at: blockOffset)
            let ctime = try numeric(TarBlock.gnuChangeTime, field: "ctime", at: blockOffset)
            if atime != 0 { header.accessTime = TarTimestamp(seconds: atime) }
            if ctime != 0 { header.changeTime = TarTimestamp(seconds: ctime) }
        }
        guard header.size >= 0 else {
            throw EStargzError.invalidTar(offset: blockOffset, reason: "negative size \(header.size) for \(String(reflecting: header.name))")
        }
        return header
    }

    /// A numeric field: octal text padded with spaces or NULs, or base-256 (two's
    /// complement, big-endian) when the first byte has its high bit set.
    private func numeric(_ range: Range<Int>, field: String, at blockOffset: Int64) throws -> Int64 {
        guard let value = Self.parseNumeric(block[range]) else {
            throw EStargzError.invalidTar(offset: blockOffset, reason: "invalid \(field) field \(String(reflecting: Self.string(block[range])))")
        }
        return value
    }

    static func parseNumeric(_ bytes: ArraySlice<UInt8>) -> Int64? {
        guard let first = bytes.first else { return 0 }
        if first & 0x80 != 0 {
            // Base-256: bit 6 of the first byte is the sign; the value must fit 64 bits.
            let negative = first & 0x40 != 0
            let fill: UInt8 = negative ? 0xff : 0
            var value: UInt64 = 0
            for (index, byte) in bytes.enumerated() {
                var byte = byte
                if index == 0 { byte = (byte & 0x7f) | (negative ? 0x80 : 0) }
                if index < bytes.count - 8 {
                    guard byte == fill else { return nil }
                    continue
                }
                value = (value << 8) | UInt64(byte)
            }
            let result = Int64(bitPattern: value)
            guard (result < 0) == negative else { return nil }
            return result
        }
        var start = bytes.startIndex
        var end = bytes.endIndex
        while start < end, bytes[start] == 0x20 || bytes[start] == 0 { start += 1 }
        while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0 { end -= 1 }
        var value: Int64 = 0
        for byte in bytes[start ..< end] {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "7") else { return nil }
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 8)
            guard !overflow else { return nil }
            value = shifted + Int64(byte - UInt8(ascii: "0"))
        }
        return value
    }

    /// A NUL-terminated text field as a string (invalid UTF-8 is replaced, not refused).
    static func string(_ bytes: ArraySlice<UInt8>) -> String {
        let end = bytes.firstIndex(of: 0) ?? bytes.endIndex
        return String(decoding: bytes[bytes.startIndex ..< end], as: UTF8.self)
    }

    // MARK: - PAX

    /// Parses PAX extended header records. Each record is `"%d %s=%s\n"`, where the
    /// leading decimal is the length of the whole record including itself and the newline;
    /// values may hold any bytes (xattr values are binary).
    static func parsePAXRecords(_ payload: [UInt8], at blockOffset: Int64) throws -> [String: [UInt8]] {
        var records: [String: [UInt8]] = [:]
        var position = 0
        func bad(_ reason: String) -> EStargzError {
            .invalidTar(offset: blockOffset, reason: "malformed PAX record at payload byte \(position): \(reason)")
        }
        while position < payload.count {
            // GNU tar pads 'x' payloads with NULs in some versions; treat trailing NULs as the end.
            if payload[position...].allSatisfy({ $0 == 0 }) { break }
            var cursor = position
            var length = 0
            while cursor < payload.count, payload[cursor] >= UInt8(ascii: "0"), payload[cursor] <= UInt8(ascii: "9") {
                length = length * 10 + Int(payload[cursor] - UInt8(ascii: "0"))
                guard length <= payload.count else { throw bad("length beyond payload") }
                cursor += 1
            }
            guard cursor > position, cursor < payload.count, payload[cursor] == UInt8(ascii: " ") else {
                throw bad("missing length")
            }
            let recordEnd = position + length
            guard recordEnd <= payload.count, recordEnd > cursor + 1, payload[recordEnd - 1] == UInt8(ascii: "\n") else {
                throw bad("bad length \(length)")
            }
            let body = payload[(cursor + 1) ..< (recordEnd - 1)]
            guard let equals = body.firstIndex(of: UInt8(ascii: "=")), equals > body.startIndex else {
                throw bad("missing key")
            }
            let key = String(decoding: body[body.startIndex ..< equals], as: UTF8.self)
            let value = Array(body[(equals + 1)...])
            if ["path", "linkpath", "uname", "gname"].contains(key), value.contains(0) {
                throw bad("NUL byte in \(key)")
            }
            records[key] = value
            position = recordEnd
        }
        return records
    }

    /// Folds PAX records into `header`; records without a field of their own go to `paxRecords`.
    private func apply(_ records: [String: [UInt8]], to header: inout TarHeader, at blockOffset: Int64) throws {
        func text(_ value: [UInt8]) -> String { String(decoding: value, as: UTF8.self) }
        func decimal(_ key: String, _ value: [UInt8]) throws -> Int64 {
            guard let number = Int64(text(value)), number >= 0 else {
                throw EStargzError.invalidTar(offset: blockOffset, reason: "invalid PAX \(key) \(String(reflecting: text(value)))")
            }
            return number
        }
        func time(_ key: String, _ value: [UInt8]) throws -> TarTimestamp {
            guard let stamp = Self.parsePAXTime(value) else {
                throw EStargzError.invalidTar(offset: blockOffset, reason: "invalid PAX \(key) \(String(reflecting: text(value)))")
            }
            return stamp
        }
        for (key, value) in records {
            switch key {
            case "path": header.name = text(value)
            case "linkpath": header.linkName = text(value)
            case "uname": header.userName = text(value)
            case "gname": header.groupName = text(value)
            case "uid": header.uid = Int(try decimal(key, value))
            case "gid": header.gid = Int(try decimal(key, value))
            case "size": header.size = try decimal(key, value)
            case "mtime": header.modificationTime = try time(key, value)
            case "atime": header.accessTime = try time(key, value)
            case "ctime": header.changeTime = try time(key, value)
            default:
                if key.hasPrefix("SCHILY.xattr.") {
                    header.xattrs[String(key.dropFirst("SCHILY.xattr.".count))] = value
                } else if key.hasPrefix("GNU.sparse.") {
                    throw EStargzError.invalidTar(offset: blockOffset, reason: "unsupported GNU sparse file \(String(reflecting: header.name))")
                } else {
                    header.paxRecords[key] = value
                }
            }
        }
    }

    /// Parses a PAX time such as `1700000000`, `1700000000.123456789` or `-1.5`
    /// (the fraction carries the sign of the whole number).
    static func parsePAXTime(_ value: [UInt8]) -> TarTimestamp? {
        var digits = value[...]
        let negative = digits.first == UInt8(ascii: "-")
        if negative || digits.first == UInt8(ascii: "+") { digits = digits.dropFirst() }
        let dot = digits.firstIndex(of: UInt8(ascii: ".")) ?? digits.endIndex
        let whole = digits[digits.startIndex ..< dot]
        let fraction = dot < digits.endIndex ? digits[(dot + 1)...] : []
        guard !whole.isEmpty, whole.count <= 18,
              (whole + fraction).allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return nil }
        var seconds: Int64 = 0
        for byte in whole { seconds = seconds * 10 + Int64(byte - UInt8(ascii: "0")) }
        var nanos: Int64 = 0
        for index in 0 ..< 9 {
            let digit = index < fraction.count ? Int64(fraction[fraction.startIndex + index] - UInt8(ascii: "0")) : 0
            nanos = nanos * 10 + digit
        }
        return negative
            ? TarTimestamp(seconds: -seconds, nanoseconds: Int32(-nanos))
            : TarTimestamp(seconds: seconds, nanoseconds: Int32(nanos))
    }
}
