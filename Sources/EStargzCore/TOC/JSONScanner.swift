#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A syntax or type error found by `JSONScanner`, with the byte offset where it was found.
/// `TOCJSON` turns it into `EStargzError.invalidTOC` after adding which entry and field it was in.
struct JSONSyntaxError: Error {
    var reason: String
    var offset: Int
}

/// A minimal JSON tokenizer over a byte buffer, made for the one document shape eStargz needs
/// (objects of integers, strings and base64). It reads values on demand instead of building a
/// tree, so the TOC parser maps keys to fields without materializing key strings, and the only
/// allocations are the values it returns.
///
/// Strictness follows Go's `encoding/json` (RFC 8259): no trailing commas, no leading zeros, no
/// control characters inside strings, only the standard escapes. Invalid UTF-8 inside strings is
/// accepted and each bad byte becomes U+FFFD, exactly as Go's decoder does.
struct JSONScanner {
    /// Deeper documents are rejected: a TOC needs 4 levels, and unbounded recursion on hostile
    /// input would overflow the stack.
    static let maxDepth = 64

    /// The input, read as bytes. A typed pointer (rather than the raw buffer) lets
    /// `String(decoding:)` take its contiguous fast path instead of a generic copy.
    let p: UnsafePointer<UInt8>
    let count: Int
    private(set) var pos = 0
    private(set) var depth = 0
    /// Reused buffer for strings that contain escapes (the rare path).
    private var scratch: [UInt8] = []

    init(_ input: UnsafeRawBufferPointer) {
        if let base = input.baseAddress, input.count > 0 {
            p = base.assumingMemoryBound(to: UInt8.self)
            count = input.count
        } else {
            p = Self.emptyInput
            count = 0
        }
    }

    /// A scanner over one window of a longer document, already `depth` levels deep
    /// (the streaming TOC parser resumes with it after each refill).
    init(_ input: UnsafeRawBufferPointer, depth: Int) {
        self.init(input)
        self.depth = depth
    }

    /// Stands in for the missing base address of an empty buffer; never read, since `count` is 0.
    nonisolated(unsafe) private static let emptyInput = UnsafePointer<UInt8>(UnsafeMutablePointer<UInt8>.allocate(capacity: 1))

    // MARK: - Errors

    func failure(_ reason: String) -> JSONSyntaxError {
        JSONSyntaxError(reason: reason, offset: pos)
    }

    /// Describes the token at `pos` for "expected X, found Y" messages.
    func foundDescription() -> String {
        guard pos < count else { return "end of input" }
        switch p[pos] {
        case UInt8(ascii: "{"): return "object"
        case UInt8(ascii: "["): return "array"
        case UInt8(ascii: "\""): return "string"
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return "boolean"
        case UInt8(ascii: "n"): return "null"
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return "number"
        case let c: return "unexpected byte 0x\(String(c, radix: 16))"
        }
    }

    // MARK: - Structure

    @inline(__always)
    mutating func skipWhitespace() {
        while pos < count {
            switch p[pos] {
            case 0x20, 0x0A, 0x0D, 0x09: pos += 1
            default: return
            }
        }
    }

    /// The next non-whitespace byte, without consuming it.
    @inline(__always)
    mutating func peek() throws(JSONSyntaxError) -> UInt8 {
        skipWhitespace()
        guard pos < count else { throw failure("unexpected end of input") }
        return p[pos]
    }

    /// Consumes a `null` literal if one comes next. Go leaves a field untouched for `null`,
    /// so callers use this to return "no value" rather than an error.
    @inline(__always)
    mutating func consumeNull() throws(JSONSyntaxError) -> Bool {
        guard try peek() == UInt8(ascii: "n") else { return false }
        try literal("null")
        return true
    }

    /// Enters an object; fails (describing what was found) if the next value is not one.
    mutating func enterObject(_ what: @autoclosure () -> String = "object") throws(JSONSyntaxError) {
        guard try peek() == UInt8(ascii: "{") else {
            throw failure("expected \(what()), found \(foundDescription())")
        }
        try enter()
    }

    /// Enters an array; fails (describing what was found) if the next value is not one.
    mutating func enterArray(_ what: @autoclosure () -> String = "array") throws(JSONSyntaxError) {
        guard try peek() == UInt8(ascii: "[") else {
            throw failure("expected \(what()), found \(foundDescription())")
        }
        try enter()
    }

    private mutating func enter() throws(JSONSyntaxError) {
        depth += 1
        guard depth <= Self.maxDepth else {
            throw failure("nesting deeper than \(Self.maxDepth) levels")
        }
        pos += 1
    }

    /// Advances to the next member of the current object: returns `true` with `pos` at the
    /// key's opening quote, or `false` after consuming the closing `}`.
    @inline(__always)
    mutating func nextMember(_ first: inout Bool) throws(JSONSyntaxError) -> Bool {
        guard try nextItem(&first, close: UInt8(ascii: "}")) else { return false }
        guard p[pos] == UInt8(ascii: "\"") else {
            throw failure("expected object key, found \(foundDescription())")
        }
        return true
    }

    /// Advances to the next element of the current array: returns `true` with `pos` at the
    /// element, or `false` after consuming the closing `]`.
    @inline(__always)
    mutating func nextElement(_ first: inout Bool) throws(JSONSyntaxError) -> Bool {
        try nextItem(&first, close: UInt8(ascii: "]"))
    }

    /// Shared comma and close handling: `false` once the container is closed, otherwise
    /// `true` with `pos` at the next item (which the caller still has to validate).
    @inline(__always)
    private mutating func nextItem(_ first: inout Bool, close: UInt8) throws(JSONSyntaxError) -> Bool {
        let c = try peek()
        if c == close {
            // After a comma this is unreachable: the comma branch below rejects a close.
            pos += 1
            depth -= 1
            return false
        }
        if first {
            first = false
            return true
        }
        guard c == UInt8(ascii: ",") else {
            throw failure("expected ',' or '\(Character(Unicode.Scalar(close)))', found \(foundDescription())")
        }
        pos += 1
        let next = try peek()
        if next == close {
            throw failure("trailing comma")
        }
        return true
    }

    /// Requires the end of input (after whitespace): Go's `json.Unmarshal` rejects trailing data.
    mutating func finish() throws(JSONSyntaxError) {
        skipWhitespace()
        guard pos == count else {
            throw failure("unexpected data after the top-level value")
        }
    }

    private mutating func literal(_ text: StaticString) throws(JSONSyntaxError) {
        let n = text.utf8CodeUnitCount
        guard count - pos >= n else { throw failure("invalid literal") }
        let expected = text.utf8Start
        for i in 0..<n where p[pos + i] != expected[i] {
            throw failure("invalid literal")
        }
        pos += n
    }

    @inline(__always)
    private mutating func expect(_ c: UInt8) throws(JSONSyntaxError) {
        guard try peek() == c else {
            throw failure("expected '\(Character(Unicode.Scalar(c)))', found \(foundDescription())")
        }
        pos += 1
    }

    // MARK: - Keys

    /// Reads an object key and the following `:`, handing the key's unescaped bytes to
    /// `classify`. The bytes are only valid during the call, so no key string is allocated.
    @inline(__always)
    mutating func readKey<R>(_ classify: (UnsafeBufferPointer<UInt8>) -> R) throws(JSONSyntaxError) -> R {
        let result = try withStringBytes(classify)
        try expect(UInt8(ascii: ":"))
        return result
    }

    // MARK: - Values

    /// Reads an integer that fits in `Int64`, or `nil` for `null`. Fractions, exponents and
    /// out-of-range values are rejected, as Go's decoder does for integer fields.
    mutating func readInt64() throws(JSONSyntaxError) -> Int64? {
        let c = try peek()
        if c == UInt8(ascii: "n") {
            try literal("null")
            return nil
        }
        let start = pos
        var negative = false
        if c == UInt8(ascii: "-") {
            negative = true
            pos += 1
        }
        guard pos < count, p[pos] &- UInt8(ascii: "0") < 10 else {
            pos = start
            throw failure("expected integer, found \(foundDescription())")
        }
        // Magnitude accumulates as UInt64 so that Int64.min (one larger than .max) parses.
        // Up to 19 digits cannot wrap a UInt64, so the loop needs no overflow checks; longer
        // numbers are out of range anyway.
        let digitsStart = pos
        var magnitude: UInt64 = 0
        while pos < count {
            let d = p[pos] &- UInt8(ascii: "0")
            guard d < 10 else { break }
            magnitude = magnitude &* 10 &+ UInt64(d)
            pos &+= 1
        }
        let digits = pos - digitsStart
        if p[digitsStart] == UInt8(ascii: "0"), digits > 1 {
            pos = start
            throw failure("invalid number: leading zero")
        }
        let limit: UInt64 = negative ? UInt64(Int64.max) + 1 : UInt64(Int64.max)
        guard digits <= 19, magnitude <= limit else {
            pos = start
            throw failure("integer out of range for Int64")
        }
        if pos < count {
            switch p[pos] {
            case UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"):
                pos = start
                throw failure("expected integer, found non-integer number")
            default:
                break
            }
        }
        return negative ? Int64(bitPattern: 0 &- magnitude) : Int64(magnitude)
    }

    /// Reads a string, or `nil` for `null`. If the string equals `candidate` (say, a chunk
    /// digest equal to the file digest, or a repeated modtime), returns `candidate` itself,
    /// which shares its storage instead of allocating a new string.
    @inline(__always)
    mutating func readString(reusing candidate: String = "") throws(JSONSyntaxError) -> String? {
        if try consumeNull() { return nil }
        guard p[pos] == UInt8(ascii: "\"") else {
            throw failure("expected string, found \(foundDescription())")
        }
        let (start, end, hasEscapes, isASCII) = try scanString()
        guard !hasEscapes else {
            unescape(start, end)
            return scratch.withUnsafeBufferPointer(Self.makeString)
        }
        let bytes = UnsafeBufferPointer(start: p + start, count: end - start)
        if Self.equals(candidate, bytes) { return candidate }
        return isASCII ? String(decoding: bytes, as: UTF8.self) : Self.makeString(bytes)
    }

    /// Reads a string, or `nil` for `null`, returning an earlier equal string from `cache`
    /// when there is one. For low-cardinality fields (modification times, user names) this
    /// saves an allocation per entry.
    @inline(__always)
    mutating func readString(cache: inout JSONStringCache) throws(JSONSyntaxError) -> String? {
        if try consumeNull() { return nil }
        guard p[pos] == UInt8(ascii: "\"") else {
            throw failure("expected string, found \(foundDescription())")
        }
        let (start, end, hasEscapes, isASCII) = try scanString()
        guard !hasEscapes else {
            unescape(start, end)
            return scratch.withUnsafeBufferPointer(Self.makeString)
        }
        return cache.string(for: UnsafeBufferPointer(start: p + start, count: end - start), isASCII: isASCII)
    }

    /// Where a string value's bytes are, as Go decodes them: a range of the input when they
    /// can be used as they are (no escapes, valid UTF-8), or the scanner's scratch buffer
    /// (valid until the next string) after unescaping and replacing invalid bytes with U+FFFD.
    enum StringSpan {
        case input(start: Int, end: Int)
        case scratch
    }

    /// Reads a string, or `nil` for `null`, without allocating; see ``StringSpan``.
    @inline(__always)
    mutating func readStringSpan() throws(JSONSyntaxError) -> StringSpan? {
        if try consumeNull() { return nil }
        guard p[pos] == UInt8(ascii: "\"") else {
            throw failure("expected string, found \(foundDescription())")
        }
        let (start, end, hasEscapes, isASCII) = try scanString()
        if !hasEscapes {
            if isASCII || Self.validUTF8Prefix(UnsafeBufferPointer(start: p + start, count: end - start), from: 0) == end - start {
                return .input(start: start, end: end)
            }
            scratch.removeAll(keepingCapacity: true)
            scratch.append(contentsOf: UnsafeBufferPointer(start: p + start, count: end - start))
        } else {
            unescape(start, end)
        }
        let valid = scratch.withUnsafeBufferPointer { Self.validUTF8Prefix($0, from: 0) == $0.count }
        if !valid {
            scratch = scratch.withUnsafeBufferPointer { Array(Self.makeString($0).utf8) }
        }
        return .scratch
    }

    /// Calls `body` with the scratch buffer (the last string read as ``StringSpan/scratch``).
    func withScratch<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        try scratch.withUnsafeBufferPointer(body)
    }

    /// Whether `string`'s UTF-8 is exactly `bytes`.
    @inline(__always)
    static func equals(_ string: String, _ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard string.utf8.count == bytes.count, !bytes.isEmpty else { return false }
        let same = string.utf8.withContiguousStorageIfAvailable { c in
            guard let a = c.baseAddress, let b = bytes.baseAddress else { return false }
            return memcmp(a, b, bytes.count) == 0
        }
        return same == true
    }

    /// Reads a string (or `nil` for `null`) and hands its unescaped bytes to `body`.
    mutating func readStringBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) throws(JSONSyntaxError) -> R? {
        if try consumeNull() { return nil }
        guard p[pos] == UInt8(ascii: "\"") else {
            throw failure("expected string, found \(foundDescription())")
        }
        return try withStringBytes(body)
    }

    /// Scans the string at `pos` (which must be its opening quote) and calls `body` with its
    /// unescaped bytes: a slice of the input when there are no escapes (the common case),
    /// otherwise the scratch buffer.
    @inline(__always)
    private mutating func withStringBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) throws(JSONSyntaxError) -> R {
        let (start, end, hasEscapes, _) = try scanString()
        if !hasEscapes {
            return body(UnsafeBufferPointer(start: p + start, count: end - start))
        }
        unescape(start, end)
        return scratch.withUnsafeBufferPointer(body)
    }

    /// Finds the end of the string at `pos`, validating escapes and rejecting raw control
    /// characters; leaves `pos` after the closing quote.
    @inline(__always)
    private mutating func scanString() throws(JSONSyntaxError) -> (start: Int, end: Int, hasEscapes: Bool, isASCII: Bool) {
        pos += 1
        let start = pos
        var hasEscapes = false
        var allBits: UInt8 = 0  // OR of all bytes: the high bit tells whether any is non-ASCII
        // Eight bytes at a time while none is a quote, a backslash or a control character:
        // names and digests are long runs of plain bytes. A word that may hold one of those
        // (the tests can report false positives) is left to the byte loop below.
        var wordBits: UInt64 = 0
        while pos &+ 8 <= count {
            let w = UnsafeRawPointer(p + pos).loadUnaligned(as: UInt64.self)
            let ones: UInt64 = 0x0101_0101_0101_0101
            let highs: UInt64 = 0x8080_8080_8080_8080
            let quote = w ^ (ones &* UInt64(UInt8(ascii: "\"")))
            let backslash = w ^ (ones &* UInt64(UInt8(ascii: "\\")))
            let special = ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((w &- ones &* 0x20) & ~w)
            if special & highs != 0 { break }
            wordBits |= w
            pos &+= 8
        }
        if wordBits & 0x8080_8080_8080_8080 != 0 { allBits = 0x80 }
        while pos < count {
            let c = p[pos]
            allBits |= c
            if c == UInt8(ascii: "\"") {
                pos += 1
                return (start, pos - 1, hasEscapes, allBits < 0x80)
            }
            if c == UInt8(ascii: "\\") {
                hasEscapes = true
                try validateEscape()
                continue
            }
            if c < 0x20 {
                throw failure("control character 0x\(String(c, radix: 16)) in string")
            }
            pos += 1
        }
        throw failure("unterminated string")
    }

    /// Checks the escape at `pos` and steps over it.
    private mutating func validateEscape() throws(JSONSyntaxError) {
        guard pos + 1 < count else { throw failure("unterminated string") }
        switch p[pos + 1] {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
             UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            pos += 2
        case UInt8(ascii: "u"):
            guard pos + 6 <= count else { throw failure("unterminated string") }
            for i in 2..<6 where Self.hexValue(p[pos + i]) == nil {
                throw failure("invalid \\u escape")
            }
            pos += 6
        default:
            throw failure("invalid escape '\\\(Character(Unicode.Scalar(p[pos + 1])))'")
        }
    }

    @inline(__always)
    private static func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(c - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    /// The 4 hex digits at `i` (already validated by `scanString`).
    private func hex4(at i: Int) -> UInt32 {
        var v: UInt32 = 0
        for k in 0..<4 { v = v << 4 | (Self.hexValue(p[i + k]) ?? 0) }
        return v
    }

    /// Decodes the escapes of an already-validated string body into `scratch`. A UTF-16
    /// surrogate pair becomes one scalar; an unpaired surrogate becomes U+FFFD (as in Go).
    private mutating func unescape(_ start: Int, _ end: Int) {
        scratch.removeAll(keepingCapacity: true)
        var i = start
        while i < end {
            let c = p[i]
            guard c == UInt8(ascii: "\\") else {
                scratch.append(c)
                i += 1
                continue
            }
            let e = p[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): scratch.append(0x08)
            case UInt8(ascii: "f"): scratch.append(0x0C)
            case UInt8(ascii: "n"): scratch.append(0x0A)
            case UInt8(ascii: "r"): scratch.append(0x0D)
            case UInt8(ascii: "t"): scratch.append(0x09)
            case UInt8(ascii: "u"):
                var code = hex4(at: i)
                i += 4
                if (0xD800..<0xDC00).contains(code), i + 6 <= end,
                   p[i] == UInt8(ascii: "\\"), p[i + 1] == UInt8(ascii: "u")
                {
                    let low = hex4(at: i + 2)
                    if (0xDC00..<0xE000).contains(low) {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                    }
                }
                let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"  // nil for lone surrogates
                UTF8.encode(scalar) { scratch.append($0) }
            default:  // '"', '\\', '/'
                scratch.append(e)
            }
        }
    }

    /// Builds a `String` the way Go does: valid UTF-8 is kept as is, and every byte that does
    /// not start a valid sequence becomes U+FFFD. (Swift's own repair merges some invalid
    /// sequences into one U+FFFD, which would make names differ from Go's.)
    static func makeString(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        var ascii = true
        for b in bytes where b >= 0x80 {
            ascii = false
            break
        }
        if ascii || validUTF8Prefix(bytes, from: 0) == bytes.count {
            return String(decoding: bytes, as: UTF8.self)
        }
        var repaired: [UInt8] = []
        repaired.reserveCapacity(bytes.count + 8)
        var i = 0
        while i < bytes.count {
            let validEnd = validUTF8Prefix(bytes, from: i)
            repaired.append(contentsOf: bytes[i..<validEnd])
            i = validEnd
            if i < bytes.count {
                repaired.append(contentsOf: [0xEF, 0xBF, 0xBD])
                i += 1
            }
        }
        return String(decoding: repaired, as: UTF8.self)
    }

    /// The end of the longest run of well-formed UTF-8 starting at `from`.
    static func validUTF8Prefix(_ b: UnsafeBufferPointer<UInt8>, from: Int) -> Int {
        var i = from
        let n = b.count
        @inline(__always) func cont(_ k: Int) -> Bool { k < n && b[k] & 0xC0 == 0x80 }
        while i < n {
            let c = b[i]
            switch c {
            case 0x00...0x7F:
                i += 1
            case 0xC2...0xDF where cont(i + 1):
                i += 2
            case 0xE0...0xEF where cont(i + 1) && cont(i + 2):
                let c1 = b[i + 1]
                if c == 0xE0 && c1 < 0xA0 { return i }  // overlong
                if c == 0xED && c1 > 0x9F { return i }  // UTF-16 surrogate
                i += 3
            case 0xF0...0xF4 where cont(i + 1) && cont(i + 2) && cont(i + 3):
                let c1 = b[i + 1]
                if c == 0xF0 && c1 < 0x90 { return i }  // overlong
                if c == 0xF4 && c1 > 0x8F { return i }  // beyond U+10FFFF
                i += 4
            default:
                return i
            }
        }
        return i
    }

    // MARK: - Skipping

    /// Skips any JSON value (used for unknown fields), validating its syntax.
    mutating func skipValue() throws(JSONSyntaxError) {
        switch try peek() {
        case UInt8(ascii: "{"):
            try enterObject()
            var first = true
            while try nextMember(&first) {
                _ = try scanString()
                try expect(UInt8(ascii: ":"))
                try skipValue()
            }
        case UInt8(ascii: "["):
            try enterArray()
            var first = true
            while try nextElement(&first) {
                try skipValue()
            }
        case UInt8(ascii: "\""):
            _ = try scanString()
        case UInt8(ascii: "t"):
            try literal("true")
        case UInt8(ascii: "f"):
            try literal("false")
        case UInt8(ascii: "n"):
            try literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try skipNumber()
        default:
            throw failure("expected a value, found \(foundDescription())")
        }
    }

    /// Skips a number of any JSON form: `-? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?`.
    private mutating func skipNumber() throws(JSONSyntaxError) {
        @inline(__always) func isDigit(_ i: Int) -> Bool {
            i < count && p[i] &- UInt8(ascii: "0") < 10
        }
        if p[pos] == UInt8(ascii: "-") { pos += 1 }
        guard isDigit(pos) else { throw failure("invalid number") }
        if p[pos] == UInt8(ascii: "0") {
            pos += 1
        } else {
            while isDigit(pos) { pos += 1 }
        }
        if pos < count, p[pos] == UInt8(ascii: ".") {
            pos += 1
            guard isDigit(pos) else { throw failure("invalid number") }
            while isDigit(pos) { pos += 1 }
        }
        if pos < count, p[pos] | 0x20 == UInt8(ascii: "e") {
            pos += 1
            if pos < count, p[pos] == UInt8(ascii: "+") || p[pos] == UInt8(ascii: "-") {
                pos += 1
            }
            guard isDigit(pos) else { throw failure("invalid number") }
            while isDigit(pos) { pos += 1 }
        }
    }
}

/// A small direct-mapped cache of recently decoded strings, keyed by a hash of their bytes.
struct JSONStringCache {
    private var slots = [String](repeating: "", count: 16)

    mutating func string(for bytes: UnsafeBufferPointer<UInt8>, isASCII: Bool) -> String {
        // Small strings live inline in `String` and cost no allocation; only cache the rest.
        guard bytes.count > 15, bytes.count <= 64 else {
            return isASCII ? String(decoding: bytes, as: UTF8.self) : JSONScanner.makeString(bytes)
        }
        var h: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        let slot = Int(truncatingIfNeeded: h >> 60)
        if JSONScanner.equals(slots[slot], bytes) { return slots[slot] }
        let s = isASCII ? String(decoding: bytes, as: UTF8.self) : JSONScanner.makeString(bytes)
        slots[slot] = s
        return s
    }
}
