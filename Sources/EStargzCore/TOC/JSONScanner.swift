/// A syntax or type error found by `JSONScanner`, with the byte offset where it was found.
/// `TOCJSON` turns it into `EStargzError.invalidTOC` after adding which entry and field it was in.
struct JSONSyntaxError: Error {
    var reason: String
    var offset: Int
}

/// A minimal, allocation-free JSON tokenizer over a byte buffer, made for the one document shape
/// eStargz needs (objects of integers, strings and base64). It reads values on demand instead of
/// building a tree, so the TOC parser maps keys to fields without materializing key strings.
///
/// Strictness follows Go's `encoding/json` (RFC 8259): no trailing commas, no leading zeros, no
/// control characters inside strings, only the standard escapes. Invalid UTF-8 inside strings is
/// accepted and each bad byte becomes U+FFFD, exactly as Go's decoder does.
struct JSONScanner {
    /// Deeper documents are rejected: a TOC needs 4 levels, and unbounded recursion on hostile
    /// input would overflow the stack.
    static let maxDepth = 64

    let input: UnsafeRawBufferPointer
    private(set) var pos = 0
    private var depth = 0
    /// Reused buffer for strings that contain escapes (the rare path).
    private var scratch: [UInt8] = []

    init(_ input: UnsafeRawBufferPointer) {
        self.input = input
    }

    // MARK: - Errors

    func failure(_ reason: String) -> JSONSyntaxError {
        JSONSyntaxError(reason: reason, offset: pos)
    }

    /// Describes the token at `pos` for "expected X, found Y" messages.
    func foundDescription() -> String {
        guard pos < input.count else { return "end of input" }
        switch input[pos] {
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
        while pos < input.count {
            switch input[pos] {
            case 0x20, 0x0A, 0x0D, 0x09: pos += 1
            default: return
            }
        }
    }

    /// The next non-whitespace byte, without consuming it.
    @inline(__always)
    mutating func peek() throws(JSONSyntaxError) -> UInt8 {
        skipWhitespace()
        guard pos < input.count else { throw failure("unexpected end of input") }
        return input[pos]
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
        guard input[pos] == UInt8(ascii: "\"") else {
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
        guard pos == input.count else {
            throw failure("unexpected data after the top-level value")
        }
    }

    private mutating func literal(_ text: StaticString) throws(JSONSyntaxError) {
        let n = text.utf8CodeUnitCount
        guard input.count - pos >= n else { throw failure("invalid literal") }
        let expected = UnsafeRawBufferPointer(start: text.utf8Start, count: n)
        for i in 0..<n where input[pos + i] != expected[i] {
            throw failure("invalid literal")
        }
        pos += n
    }

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
    mutating func readKey<R>(_ classify: (UnsafeRawBufferPointer) -> R) throws(JSONSyntaxError) -> R {
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
        guard pos < input.count, input[pos] &- UInt8(ascii: "0") < 10 else {
            pos = start
            throw failure("expected integer, found \(foundDescription())")
        }
        // Magnitude accumulates as UInt64 so that Int64.min (one larger than .max) parses.
        let limit: UInt64 = negative ? UInt64(Int64.max) + 1 : UInt64(Int64.max)
        var magnitude: UInt64 = 0
        let firstDigit = input[pos]
        while pos < input.count {
            let d = input[pos] &- UInt8(ascii: "0")
            guard d < 10 else { break }
            let (m, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(d))
            guard !o1, !o2, s <= limit else {
                pos = start
                throw failure("integer out of range for Int64")
            }
            magnitude = s
            pos += 1
        }
        if firstDigit == UInt8(ascii: "0"), pos - start > (negative ? 2 : 1) {
            pos = start
            throw failure("invalid number: leading zero")
        }
        if pos < input.count {
            switch input[pos] {
            case UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"):
                pos = start
                throw failure("expected integer, found non-integer number")
            default:
                break
            }
        }
        return negative ? Int64(bitPattern: 0 &- magnitude) : Int64(magnitude)
    }

    /// Reads a string, or `nil` for `null`.
    @inline(__always)
    mutating func readString() throws(JSONSyntaxError) -> String? {
        if try consumeNull() { return nil }
        guard input[pos] == UInt8(ascii: "\"") else {
            throw failure("expected string, found \(foundDescription())")
        }
        return try withStringBytes(Self.makeString)
    }

    /// Reads a string (or `nil` for `null`) and hands its unescaped bytes to `body`.
    mutating func readStringBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) throws(JSONSyntaxError) -> R? {
        if try consumeNull() { return nil }
        guard input[pos] == UInt8(ascii: "\"") else {
            throw failure("expected string, found \(foundDescription())")
        }
        return try withStringBytes(body)
    }

    /// Scans the string at `pos` (which must be its opening quote) and calls `body` with its
    /// unescaped bytes: a slice of the input when there are no escapes (the common case),
    /// otherwise the scratch buffer.
    @inline(__always)
    private mutating func withStringBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) throws(JSONSyntaxError) -> R {
        let (start, end, hasEscapes) = try scanString()
        if !hasEscapes {
            return body(UnsafeRawBufferPointer(rebasing: input[start..<end]))
        }
        unescape(start, end)
        return scratch.withUnsafeBytes(body)
    }

    /// Finds the end of the string at `pos`, validating escapes and rejecting raw control
    /// characters; leaves `pos` after the closing quote.
    @inline(__always)
    private mutating func scanString() throws(JSONSyntaxError) -> (start: Int, end: Int, hasEscapes: Bool) {
        pos += 1
        let start = pos
        var hasEscapes = false
        while pos < input.count {
            let c = input[pos]
            if c == UInt8(ascii: "\"") {
                pos += 1
                return (start, pos - 1, hasEscapes)
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
        guard pos + 1 < input.count else { throw failure("unterminated string") }
        switch input[pos + 1] {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
             UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            pos += 2
        case UInt8(ascii: "u"):
            guard pos + 6 <= input.count else { throw failure("unterminated string") }
            for i in 2..<6 where Self.hexValue(input[pos + i]) == nil {
                throw failure("invalid \\u escape")
            }
            pos += 6
        default:
            throw failure("invalid escape '\\\(Character(Unicode.Scalar(input[pos + 1])))'")
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
        for k in 0..<4 { v = v << 4 | (Self.hexValue(input[i + k]) ?? 0) }
        return v
    }

    /// Decodes the escapes of an already-validated string body into `scratch`. A UTF-16
    /// surrogate pair becomes one scalar; an unpaired surrogate becomes U+FFFD (as in Go).
    private mutating func unescape(_ start: Int, _ end: Int) {
        scratch.removeAll(keepingCapacity: true)
        var i = start
        while i < end {
            let c = input[i]
            guard c == UInt8(ascii: "\\") else {
                scratch.append(c)
                i += 1
                continue
            }
            let e = input[i + 1]
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
                   input[i] == UInt8(ascii: "\\"), input[i + 1] == UInt8(ascii: "u")
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
    static func makeString(_ bytes: UnsafeRawBufferPointer) -> String {
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
    private static func validUTF8Prefix(_ b: UnsafeRawBufferPointer, from: Int) -> Int {
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
        @inline(__always) func isDigit(_ p: Int) -> Bool {
            p < input.count && input[p] &- UInt8(ascii: "0") < 10
        }
        if input[pos] == UInt8(ascii: "-") { pos += 1 }
        guard isDigit(pos) else { throw failure("invalid number") }
        if input[pos] == UInt8(ascii: "0") {
            pos += 1
        } else {
            while isDigit(pos) { pos += 1 }
        }
        if pos < input.count, input[pos] == UInt8(ascii: ".") {
            pos += 1
            guard isDigit(pos) else { throw failure("invalid number") }
            while isDigit(pos) { pos += 1 }
        }
        if pos < input.count, input[pos] | 0x20 == UInt8(ascii: "e") {
            pos += 1
            if pos < input.count, input[pos] == UInt8(ascii: "+") || input[pos] == UInt8(ascii: "-") {
                pos += 1
            }
            guard isDigit(pos) else { throw failure("invalid number") }
            while isDigit(pos) { pos += 1 }
        }
    }
}
