/// The codec for `stargz.index.json`, byte-compatible with the reference's `JTOC`
/// (containerd/stargz-snapshotter `estargz/types.go`), which Go writes with
/// `json.MarshalIndent(toc, "", "\t")` and reads with `encoding/json`.
///
/// Both directions are hand-written single passes over bytes: a runtime parses TOCs of
/// 100k+ entries on its critical path, and the TOC digest covers the exact JSON bytes, so the
/// encoder must reproduce Go's formatting and escaping byte for byte.
public enum TOCJSON {
    // MARK: - Decoding

    /// Parses a TOC document.
    ///
    /// Accepts what Go's `json.Unmarshal` into `JTOC` accepts: fields in any order, unknown
    /// fields of any JSON type (skipped), keys matched case-insensitively after an exact match
    /// fails, `null` for any field (leaves it unset), and invalid UTF-8 in strings (each bad byte
    /// becomes U+FFFD). Stricter than Go where Go would accept nonsense: a `type` outside
    /// `TOCEntry.Kind` (or a missing one) and `null` entries are rejected.
    ///
    /// - Throws: `EStargzError.invalidTOC` naming the byte offset, the entry (index and name)
    ///   and the field, for invalid JSON, trailing data, wrong value types, numbers that do not
    ///   fit in `Int64`, bad escapes or base64, and nesting deeper than 64 levels.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(EStargzError) -> TOC {
        var parser = TOCJSONParser(bytes)
        do {
            return try parser.parseDocument()
        } catch {
            throw .invalidTOC(parser.describe(error))
        }
    }

    /// Parses a TOC document; see `decode(_:)-(UnsafeRawBufferPointer)`.
    public static func decode(_ bytes: [UInt8]) throws(EStargzError) -> TOC {
        // Via Result because `withUnsafeBytes` rethrows as untyped `any Error`.
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(EStargzError) in try decode(buffer) }
        }
        return try result.get()
    }

    // MARK: - Encoding

    /// Serializes `toc` exactly as Go's `json.MarshalIndent(jtoc, "", "\t")` does for the
    /// reference `JTOC`: keys in struct order, `omitempty` fields left out when zero or empty,
    /// xattr keys sorted bytewise with base64 values, Go's string escaping (including its HTML
    /// escapes of `<`, `>`, `&` and of U+2028/U+2029), no trailing newline. An empty entry
    /// list is written as `null`, as Go does for the writer's nil slice.
    public static func encode(_ toc: TOC) -> [UInt8] {
        var w = TOCJSONWriter()
        // A typical entry takes ~420 bytes; untouched reserved pages cost nothing, while
        // regrowth would copy the whole document.
        w.out.reserveCapacity(64 + toc.entries.count * 512)
        w.write(toc)
        return w.out
    }
}

// MARK: - Decoder

/// Fields of a TOC entry, identified from key bytes without allocating strings.
enum TOCJSONField {
    case name, type, size, modTime, linkName, mode, uid, gid, userName, groupName, offset
    case devMajor, devMinor, xattrs, digest, chunkOffset, chunkSize, chunkDigest, innerOffset
    case unknown

    /// The JSON key, for error messages.
    var key: String {
        switch self {
        case .name: "name"
        case .type: "type"
        case .size: "size"
        case .modTime: "modtime"
        case .linkName: "linkName"
        case .mode: "mode"
        case .uid: "uid"
        case .gid: "gid"
        case .userName: "userName"
        case .groupName: "groupName"
        case .offset: "offset"
        case .devMajor: "devMajor"
        case .devMinor: "devMinor"
        case .xattrs: "xattrs"
        case .digest: "digest"
        case .chunkOffset: "chunkOffset"
        case .chunkSize: "chunkSize"
        case .chunkDigest: "chunkDigest"
        case .innerOffset: "innerOffset"
        case .unknown: "(unknown)"
        }
    }

    @inline(__always)
    static func equals(_ k: UnsafeBufferPointer<UInt8>, _ s: StaticString) -> Bool {
        guard k.count == s.utf8CodeUnitCount else { return false }
        let p = s.utf8Start
        for i in 0..<k.count where k[i] != p[i] { return false }
        return true
    }

    /// Exact match on the key bytes, dispatching on length first so each key costs at most a
    /// few comparisons.
    @inline(__always)
    static func classify(_ k: UnsafeBufferPointer<UInt8>) -> TOCJSONField {
        switch k.count {
        case 3:
            if equals(k, "uid") { return .uid }
            if equals(k, "gid") { return .gid }
        case 4:
            if equals(k, "name") { return .name }
            if equals(k, "type") { return .type }
            if equals(k, "size") { return .size }
            if equals(k, "mode") { return .mode }
        case 6:
            if equals(k, "offset") { return .offset }
            if equals(k, "digest") { return .digest }
            if equals(k, "xattrs") { return .xattrs }
        case 7:
            if equals(k, "modtime") { return .modTime }
        case 8:
            if equals(k, "linkName") { return .linkName }
            if equals(k, "userName") { return .userName }
            if equals(k, "devMajor") { return .devMajor }
            if equals(k, "devMinor") { return .devMinor }
        case 9:
            if equals(k, "chunkSize") { return .chunkSize }
            if equals(k, "groupName") { return .groupName }
        case 11:
            if equals(k, "chunkDigest") { return .chunkDigest }
            if equals(k, "chunkOffset") { return .chunkOffset }
            if equals(k, "innerOffset") { return .innerOffset }
        default:
            break
        }
        return classifyFolded(k)
    }

    /// Go's decoder falls back to a case-insensitive match (`"Name"` sets `name`); this is
    /// the rare path, so it may allocate.
    private static func classifyFolded(_ k: UnsafeBufferPointer<UInt8>) -> TOCJSONField {
        guard k.count >= 3, k.count <= 11 else { return .unknown }
        let folded = String(decoding: k.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self)
        return foldedKeys[folded] ?? .unknown
    }

    private static let foldedKeys: [String: TOCJSONField] = {
        let all: [TOCJSONField] = [
            .name, .type, .size, .modTime, .linkName, .mode, .uid, .gid, .userName, .groupName, .offset,
            .devMajor, .devMinor, .xattrs, .digest, .chunkOffset, .chunkSize, .chunkDigest, .innerOffset,
        ]
        return Dictionary(uniqueKeysWithValues: all.map { ($0.key.lowercased(), $0) })
    }()
}

/// Maps the JSON document onto `TOC`, remembering where it is for error messages.
struct TOCJSONParser {
    var scanner: JSONScanner
    /// Index of the entry being parsed, if any.
    private var entryIndex: Int?
    private var entryName: String?
    /// The field being read; `nil` between fields. Kept as an enum so tracking costs nothing.
    private var field: TOCJSONField?
    /// Set while reading root fields or an xattr value, where `field` does not say enough.
    private var fieldDetail: String?
    /// Recent values of low-cardinality fields, which many entries repeat.
    private var modTimes = JSONStringCache(), userNames = JSONStringCache(), groupNames = JSONStringCache()

    init(_ bytes: UnsafeRawBufferPointer) {
        scanner = JSONScanner(bytes)
    }

    /// "entry 3 ("usr/bin/env"), field "size": expected integer, found string at byte 812".
    func describe(_ error: JSONSyntaxError) -> String {
        var context = ""
        if let entryIndex {
            context += "entry \(entryIndex)"
            if let entryName { context += " (\(String(reflecting: entryName)))" }
            context += ", "
        }
        if let fieldDetail {
            context += "field \"\(fieldDetail)\": "
        } else if let field {
            context += "field \"\(field.key)\": "
        }
        return context + "\(error.reason) at byte \(error.offset)"
    }

    mutating func parseDocument() throws(JSONSyntaxError) -> TOC {
        var toc = TOC(version: 0, entries: [])
        try scanner.enterObject("TOC object")
        var first = true
        while try scanner.nextMember(&first) {
            enum RootField { case version, entries, unknown }
            let key = try scanner.readKey { k -> RootField in
                if k.elementsEqual("version".utf8) { return .version }
                if k.elementsEqual("entries".utf8) { return .entries }
                let folded = String(decoding: k, as: UTF8.self).lowercased()
                return folded == "version" ? .version : folded == "entries" ? .entries : .unknown
            }
            switch key {
            case .version:
                fieldDetail = "version"
                if let v = try scanner.readInt64() {
                    guard let version = Int(exactly: v) else { throw scanner.failure("version out of range") }
                    toc.version = version
                }
                fieldDetail = nil
            case .entries:
                try parseEntries(into: &toc.entries)
            case .unknown:
                try scanner.skipValue()
            }
        }
        try scanner.finish()
        return toc
    }

    private mutating func parseEntries(into entries: inout [TOCEntry]) throws(JSONSyntaxError) {
        fieldDetail = "entries"
        if try scanner.consumeNull() {
            entries = []
            fieldDetail = nil
            return
        }
        try scanner.enterArray("array of entries")
        fieldDetail = nil
        // Go's decoder reuses the slice from an earlier duplicate key; starting afresh is the
        // same result for any document a real writer produces.
        entries = []
        // Once a sample of entries shows their average JSON size, reserve for the rest: a
        // close fit avoids both regrowth copies and page-faulting memory that is never used.
        let sampleSize = 64
        let sampleStart = scanner.pos
        var first = true
        while try scanner.nextElement(&first) {
            if entries.count == sampleSize {
                let perEntry = max((scanner.pos - sampleStart) / sampleSize, 32)
                entries.reserveCapacity(sampleSize + (scanner.count - scanner.pos) / perEntry * 9 / 8 + 16)
            }
            entryIndex = entries.count
            // Parsed in place: an entry is ~200 bytes, and building it on the stack first
            // would copy each one into the array.
            entries.append(TOCEntry(name: "", type: .regular))
            try parseEntry(into: &entries[entries.count - 1])
            entryIndex = nil
            entryName = nil
        }
    }

    private mutating func parseEntry(into entry: inout TOCEntry) throws(JSONSyntaxError) {
        if try scanner.consumeNull() {
            throw scanner.failure("entry is null")
        }
        try scanner.enterObject("entry object")
        var sawType = false
        var first = true
        while try scanner.nextMember(&first) {
            let f = try scanner.readKey(TOCJSONField.classify)
            if f == .unknown {
                try scanner.skipValue()
                continue
            }
            field = f
            switch f {
            case .name:
                if let s = try scanner.readString() {
                    entry.name = s
                    entryName = s
                }
            case .type:
                // The closure returns the unknown name (allocated only then) for the message.
                let parsed = try scanner.readStringBytes { b -> Result<TOCEntry.Kind, TypeNameError> in
                    guard let kind = TOCEntry.Kind(jsonName: b) else { return .failure(TypeNameError(name: JSONScanner.makeString(b))) }
                    return .success(kind)
                }
                switch parsed {
                case nil:
                    break  // null: Go leaves the type empty; the missing-type check below reports it
                case .success(let kind):
                    entry.type = kind
                    sawType = true
                case .failure(let unknown):
                    throw scanner.failure("unknown entry type \(String(reflecting: unknown.name))")
                }
            case .size: if let v = try scanner.readInt64() { entry.size = v }
            case .modTime:
                if let s = try scanner.readString(cache: &modTimes) { entry.modTime = s }
            case .linkName: if let s = try scanner.readString() { entry.linkName = s }
            case .mode: if let v = try scanner.readInt64() { entry.mode = v }
            case .uid: if let v = try readInt() { entry.uid = v }
            case .gid: if let v = try readInt() { entry.gid = v }
            case .userName:
                if let s = try scanner.readString(cache: &userNames) { entry.userName = s }
            case .groupName:
                if let s = try scanner.readString(cache: &groupNames) { entry.groupName = s }
            case .offset: if let v = try scanner.readInt64() { entry.offset = v }
            case .devMajor: if let v = try readInt() { entry.devMajor = v }
            case .devMinor: if let v = try readInt() { entry.devMinor = v }
            case .xattrs: try parseXattrs(into: &entry.xattrs)
            case .digest: if let s = try scanner.readString() { entry.digest = s }
            case .chunkOffset: if let v = try scanner.readInt64() { entry.chunkOffset = v }
            case .chunkSize: if let v = try scanner.readInt64() { entry.chunkSize = v }
            case .chunkDigest:
                // Single-chunk files repeat the file digest here; share its storage.
                if let s = try scanner.readString(reusing: entry.digest) { entry.chunkDigest = s }
            case .innerOffset: if let v = try scanner.readInt64() { entry.innerOffset = v }
            case .unknown: break
            }
            field = nil
        }
        guard sawType else {
            throw scanner.failure("missing \"type\"")
        }
    }

    private struct TypeNameError: Error {
        var name: String
    }

    private mutating func readInt() throws(JSONSyntaxError) -> Int? {
        guard let v = try scanner.readInt64() else { return nil }
        guard let i = Int(exactly: v) else { throw scanner.failure("integer out of range for Int") }
        return i
    }

    /// `xattrs` is a `map[string][]byte` in Go: an object whose values are standard base64.
    /// Like Go, a repeated `xattrs` key adds to the map rather than replacing it.
    private mutating func parseXattrs(into xattrs: inout [String: [UInt8]]) throws(JSONSyntaxError) {
        if try scanner.consumeNull() { return }
        try scanner.enterObject("object of base64 strings")
        var first = true
        while try scanner.nextMember(&first) {
            let name = try scanner.readKey(JSONScanner.makeString)
            fieldDetail = "xattrs." + name
            let decoded = try scanner.readStringBytes(XattrBase64.decode)
            switch decoded {
            case nil:
                xattrs[name] = []  // JSON null: Go stores a nil slice
            case .some(nil):
                throw scanner.failure("invalid base64")
            case .some(.some(let value)):
                xattrs[name] = value
            }
            fieldDetail = nil
        }
    }
}

// MARK: - XattrBase64

/// Standard-alphabet, padded base64, as Go's `encoding/json` uses for `[]byte`.
enum XattrBase64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// 0...63 for alphabet bytes, 0xFF otherwise.
    private static let values: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
        return t
    }()

    static func encode(_ bytes: [UInt8], into out: inout [UInt8]) {
        var i = 0
        let n = bytes.count
        while i + 3 <= n {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(alphabet[Int(v >> 18)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(alphabet[Int(v >> 6 & 63)])
            out.append(alphabet[Int(v & 63)])
            i += 3
        }
        switch n - i {
        case 1:
            let v = UInt32(bytes[i]) << 16
            out.append(alphabet[Int(v >> 18)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(contentsOf: [UInt8(ascii: "="), UInt8(ascii: "=")])
        case 2:
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out.append(alphabet[Int(v >> 18)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(alphabet[Int(v >> 6 & 63)])
            out.append(UInt8(ascii: "="))
        default:
            break
        }
    }

    /// Decodes like Go's `base64.StdEncoding.Decode`: padding is required, `\r` and `\n` are
    /// ignored anywhere, and non-zero trailing bits are tolerated. `nil` if malformed.
    static func decode(_ input: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var symbols: [UInt8] = []
        symbols.reserveCapacity(input.count)
        for c in input where c != 0x0A && c != 0x0D { symbols.append(c) }
        guard symbols.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(symbols.count / 4 * 3)
        var i = 0
        while i < symbols.count {
            let isLast = i + 4 == symbols.count
            var pad = 0
            if isLast {
                if symbols[i + 3] == UInt8(ascii: "=") { pad = 1 }
                if pad == 1, symbols[i + 2] == UInt8(ascii: "=") { pad = 2 }
            }
            var v: UInt32 = 0
            for k in 0..<(4 - pad) {
                let d = values[Int(symbols[i + k])]
                guard d != 0xFF else { return nil }
                v |= UInt32(d) << (18 - 6 * UInt32(k))
            }
            out.append(UInt8(truncatingIfNeeded: v >> 16))
            if pad < 2 { out.append(UInt8(truncatingIfNeeded: v >> 8)) }
            if pad < 1 { out.append(UInt8(truncatingIfNeeded: v)) }
            i += 4
        }
        return out
    }
}

// MARK: - Encoder

/// Writes Go's `MarshalIndent(…, "", "\t")` layout into one growing buffer.
struct TOCJSONWriter {
    var out: [UInt8] = []

    mutating func write(_ toc: TOC) {
        raw("{\n\t\"version\": ")
        int(Int64(toc.version))
        raw(",\n\t\"entries\": ")
        if toc.entries.isEmpty {
            raw("null")
        } else {
            raw("[\n")
            for (i, e) in toc.entries.enumerated() {
                if i > 0 { raw(",\n") }
                entry(e)
            }
            raw("\n\t]")
        }
        raw("\n}")
    }

    private mutating func entry(_ e: TOCEntry) {
        raw("\t\t{\n\t\t\t\"name\": ")
        string(e.name)
        switch e.type {  // StaticStrings: `rawValue` would build a String per entry
        case .directory: raw(",\n\t\t\t\"type\": \"dir\"")
        case .regular: raw(",\n\t\t\t\"type\": \"reg\"")
        case .symlink: raw(",\n\t\t\t\"type\": \"symlink\"")
        case .hardlink: raw(",\n\t\t\t\"type\": \"hardlink\"")
        case .characterDevice: raw(",\n\t\t\t\"type\": \"char\"")
        case .blockDevice: raw(",\n\t\t\t\"type\": \"block\"")
        case .fifo: raw(",\n\t\t\t\"type\": \"fifo\"")
        case .chunk: raw(",\n\t\t\t\"type\": \"chunk\"")
        }
        intField("size", e.size)
        stringField("modtime", e.modTime)
        stringField("linkName", e.linkName)
        intField("mode", e.mode)
        intField("uid", Int64(e.uid))
        intField("gid", Int64(e.gid))
        stringField("userName", e.userName)
        stringField("groupName", e.groupName)
        intField("offset", e.offset)
        intField("devMajor", Int64(e.devMajor))
        intField("devMinor", Int64(e.devMinor))
        if !e.xattrs.isEmpty {
            raw(",\n\t\t\t\"xattrs\": {\n")
            // Go sorts map keys by their bytes; Swift's `<` on String uses Unicode ordering.
            let keys = e.xattrs.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            for (i, key) in keys.enumerated() {
                if i > 0 { raw(",\n") }
                raw("\t\t\t\t")
                string(key)
                raw(": \"")
                XattrBase64.encode(e.xattrs[key] ?? [], into: &out)
                raw("\"")
            }
            raw("\n\t\t\t}")
        }
        stringField("digest", e.digest)
        intField("chunkOffset", e.chunkOffset)
        intField("chunkSize", e.chunkSize)
        stringField("chunkDigest", e.chunkDigest)
        intField("innerOffset", e.innerOffset)
        raw("\n\t\t}")
    }

    @inline(__always)
    private mutating func intField(_ key: StaticString, _ v: Int64) {
        guard v != 0 else { return }  // omitempty
        raw(",\n\t\t\t\"")
        raw(key)
        raw("\": ")
        int(v)
    }

    @inline(__always)
    private mutating func stringField(_ key: StaticString, _ v: String) {
        guard !v.isEmpty else { return }  // omitempty
        raw(",\n\t\t\t\"")
        raw(key)
        raw("\": ")
        string(v)
    }

    @inline(__always)
    private mutating func raw(_ s: StaticString) {
        out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    private mutating func int(_ v: Int64) {
        var magnitude = v.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for 20 digits
        var n = 0
        withUnsafeMutableBytes(of: &digits) { buf in
            repeat {
                buf[23 - n] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                n += 1
            } while magnitude != 0
            if v < 0 { out.append(UInt8(ascii: "-")) }
            out.append(contentsOf: buf[(24 - n)...])
        }
    }

    /// Whether a word of string bytes may contain a byte Go escapes (control characters,
    /// `"`, `\\`, `<`, `>`, `&`) or any non-ASCII byte (U+2028 and U+2029 need escaping).
    /// False positives are fine: the caller then looks at each byte.
    @inline(__always)
    private static func mayNeedEscape(_ w: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        @inline(__always) func hasByte(_ c: UInt8) -> UInt64 {
            let x = w ^ (ones &* UInt64(c))
            return (x &- ones) & ~x
        }
        let below0x20 = (w &- ones &* 0x20) & ~w
        let found = hasByte(UInt8(ascii: "\"")) | hasByte(UInt8(ascii: "\\")) | hasByte(UInt8(ascii: "<"))
            | hasByte(UInt8(ascii: ">")) | hasByte(UInt8(ascii: "&")) | below0x20 | w
        return found & highs != 0
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// Go's `encodeState.string` with HTML escaping on (the `json.Marshal` default), as of
    /// Go 1.19 (checked against its output). Go 1.22 changed one detail: it writes U+0008 and
    /// U+000C as `\b` and `\f` where older versions write `\u0008` and `\u000c`; names with
    /// those characters are the only ones whose bytes depend on the writer's Go version.
    private mutating func string(_ s: String) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { b in
            var runStart = 0
            var i = 0
            while i < b.count {
                // Skip eight plain ASCII bytes at a time; a word that may hold anything
                // interesting (see `mayNeedEscape`) goes through the byte path below.
                if i &+ 8 <= b.count, let base = b.baseAddress,
                   !Self.mayNeedEscape(UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self))
                {
                    i &+= 8
                    continue
                }
                let c = b[i]
                var escape: (UInt8, UInt8)? = nil  // (second byte, third) for 2-byte escapes or \u00XX
                var unicode: StaticString? = nil
                var width = 1
                switch c {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                    escape = (c, 0)
                case 0x0A: escape = (UInt8(ascii: "n"), 0)
                case 0x0D: escape = (UInt8(ascii: "r"), 0)
                case 0x09: escape = (UInt8(ascii: "t"), 0)
                case 0x00..<0x20, UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "&"):
                    escape = (0, c)  // \u00XX
                case 0xE2 where i + 2 < b.count && b[i + 1] == 0x80 && (b[i + 2] == 0xA8 || b[i + 2] == 0xA9):
                    unicode = b[i + 2] == 0xA8 ? "\\u2028" : "\\u2029"
                    width = 3
                default:
                    i += 1
                    continue
                }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: b[runStart..<i]))
                if let unicode {
                    raw(unicode)
                } else if let (second, byte) = escape {
                    if second != 0 {
                        out.append(UInt8(ascii: "\\"))
                        out.append(second)
                    } else {
                        raw("\\u00")
                        out.append(Self.hex[Int(byte >> 4)])
                        out.append(Self.hex[Int(byte & 0xF)])
                    }
                }
                i += width
                runStart = i
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: b[runStart..<b.count]))
        }
        out.append(UInt8(ascii: "\""))
    }
}

extension TOCEntry.Kind {
    /// The kind a TOC's `type` string names; `nil` for names the reference does not define.
    init?(jsonName b: UnsafeBufferPointer<UInt8>) {
        let equals = TOCJSONField.equals
        let kind: Self?
        switch b.count {
        case 3: kind = equals(b, "reg") ? .regular : equals(b, "dir") ? .directory : nil
        case 4: kind = equals(b, "char") ? .characterDevice : equals(b, "fifo") ? .fifo : nil
        case 5: kind = equals(b, "chunk") ? .chunk : equals(b, "block") ? .blockDevice : nil
        case 7: kind = equals(b, "symlink") ? .symlink : nil
        case 8: kind = equals(b, "hardlink") ? .hardlink : nil
        default: kind = nil
        }
        guard let kind else { return nil }
        self = kind
    }
}
