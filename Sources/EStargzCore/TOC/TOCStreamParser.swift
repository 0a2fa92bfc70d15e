/// Parses TOC JSON as it streams in, straight into a ``NodeTableBuilder``: the document is
/// never whole in memory and no `TOCEntry` is built.
///
/// The JSON arrives in a window that is refilled as parsing goes. Parsing proceeds in units
/// (the root object's opening, one root member, one array element); a unit that runs into
/// the end of the window is parsed again after a refill, so values never straddle windows.
/// An entry's strings are spans of the window until the entry is committed.
///
/// Accepts and rejects what ``TOCJSON/decode(_:)-(UnsafeRawBufferPointer)`` does, with the
/// same error messages (entry index and name, field, byte offset in the JSON).
struct TOCStreamParser {
    /// Fills a buffer with the next JSON bytes; 0 at the end.
    typealias Fill = (UnsafeMutableRawBufferPointer) throws(EStargzError) -> Int

    private var window: UnsafeMutableRawBufferPointer
    /// Consumed and filled bytes of the window.
    private var start = 0, end = 0
    /// JSON offset of `window[0]`.
    private var base = 0
    private var atEnd = false
    private var depth = 0
    private let fill: Fill
    private let totalSize: Int
    /// Strings of the current entry that are not in the window as they are.
    private var side: [UInt8] = []
    private var pending = PendingEntry()
    private var field: TOCJSONField?
    private var fieldDetail: String?
    private var entryName: String?
    private var inEntry = false

    var builder: NodeTableBuilder

    init(totalSize: Int, builder: NodeTableBuilder, windowSize: Int = 256 << 10, fill: @escaping Fill) {
        self.totalSize = totalSize
        self.builder = builder
        self.fill = fill
        window = .allocate(byteCount: max(4096, min(windowSize, totalSize + 16)), alignment: 16)
    }

    /// A parser over a document that is already whole in memory: `json` is the JSON's range of
    /// `document`, which the parser takes over (``release()`` frees it). Nothing is copied or
    /// refilled.
    init(document: UnsafeMutableRawBufferPointer, json: Range<Int>, builder: NodeTableBuilder) {
        totalSize = json.count
        self.builder = builder
        fill = { (_: UnsafeMutableRawBufferPointer) throws(EStargzError) -> Int in 0 }
        window = document
        start = json.lowerBound
        end = json.upperBound
        base = -json.lowerBound
        atEnd = true
    }

    /// Hands over the builder (the parser keeps an empty one), so finishing it copies nothing.
    mutating func takeBuilder() -> NodeTableBuilder {
        let empty = NodeTableBuilder(tocOffset: builder.tocOffset, limits: builder.limits)
        var taken = empty
        Swift.swap(&builder, &taken)
        return taken
    }

    /// Frees the window (the parser is not usable afterwards).
    mutating func release() {
        window.deallocate()
        window = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    }

    // MARK: Driving

    /// Parses the whole document, for a TOC trusted by digest: when parsing fails and `expected` is
    /// given, what the parser left unread is read through `fill` too (hashing it), `finish` stops any
    /// read-ahead, and a TOC whose `digest()` is not the expected one is reported as the digest
    /// mismatch it is rather than as whatever parse error the damage caused. The window is released
    /// on failure.
    mutating func parse(expected: SHA256Digest?, fill: Fill, finish: () -> Void, digest: () -> SHA256Digest) throws(EStargzError) {
        do {
            try parse()
        } catch {
            release()
            if let expected {
                var scratch = [UInt8](repeating: 0, count: 64 << 10)
                let drained: Bool
                do {
                    while try scratch.withUnsafeMutableBytes({ (buffer) throws(EStargzError) -> Int in try fill(buffer) }) > 0 {}
                    drained = true
                } catch {
                    drained = false
                }
                finish()
                if drained, case let actual = digest(), actual != expected {
                    throw .tocDigestMismatch(expected: expected.description, actual: actual.description)
                }
            }
            throw error
        }
    }

    /// Parses the whole document.
    mutating func parse() throws(EStargzError) {
        try refill()
        try unit { (_: inout Self, s: inout JSONScanner) throws(JSONSyntaxError) in try s.enterObject("TOC object") }
        var first = true
        var sawEntries = false
        while true {
            enum Root { case version, entries, unknown, done }
            let key = try unit { (me: inout Self, s: inout JSONScanner) throws(JSONSyntaxError) -> Root in
                var f = first
                guard try s.nextMember(&f) else { return .done }
                let key = try s.readKey { k -> Root in
                    if k.elementsEqual("version".utf8) { return .version }
                    if k.elementsEqual("entries".utf8) { return .entries }
                    let folded = String(decoding: k, as: UTF8.self).lowercased()
                    return folded == "version" ? .version : folded == "entries" ? .entries : .unknown
                }
                switch key {
                case .version:
                    me.fieldDetail = "version"
                    if let v = try s.readInt64(), Int(exactly: v) == nil { throw s.failure("version out of range") }
                    me.fieldDetail = nil
                case .entries:
                    me.fieldDetail = "entries"
                    if try s.consumeNull() {
                        me.fieldDetail = nil
                        return .unknown
                    }
                    try s.enterArray("array of entries")
                    me.fieldDetail = nil
                case .unknown:
                    try s.skipValue()
                case .done:
                    break
                }
                return key
            }
            first = false
            if key == .done { break }
            if key == .entries {
                if sawEntries {
                    // Go's decoder starts the slice afresh for a repeated key: so do we.
                    builder = NodeTableBuilder(tocOffset: builder.tocOffset, limits: builder.limits)
                }
                sawEntries = true
                try parseEntries()
            }
        }
        // Only whitespace may follow.
        while true {
            try unit { (_: inout Self, s: inout JSONScanner) throws(JSONSyntaxError) in
                s.skipWhitespace()
                if s.pos < s.count { throw s.failure("unexpected data after the top-level value") }
            }
            start = end
            if atEnd { break }
            try refill()
        }
    }

    private mutating func parseEntries() throws(EStargzError) {
        var first = true
        let sampleSize = 64
        let sampleStart = base + start
        var index = 0
        while true {
            let more = try unit { (me: inout Self, s: inout JSONScanner) throws(JSONSyntaxError) -> Bool in
                var f = first
                guard try s.nextElement(&f) else { return false }
                me.inEntry = true
                try me.parseEntry(&s)
                me.inEntry = false
                return true
            }
            guard more else { break }
            first = false
            let w = UnsafeRawBufferPointer(window)
            let result = side.withUnsafeBytes { sideBytes in
                Result { () throws(EStargzError) in try builder.add(pending, window: w, side: sideBytes) }
            }
            try result.get()
            index += 1
            if index == sampleSize {
                // Reserve for the rest from the average entry size: regrowth would copy the tables.
                let perEntry = max((base + start - sampleStart) / sampleSize, 32)
                builder.reserve(entries: (totalSize - base - start) / perEntry * 9 / 8, bytesPerName: 40)
            }
        }
    }

    /// Runs `body` on a scanner over the unconsumed window; on an error near the window's end
    /// while more input is coming, refills and runs it again.
    private mutating func unit<R>(_ body: (inout Self, inout JSONScanner) throws(JSONSyntaxError) -> R) throws(EStargzError) -> R {
        while true {
            field = nil
            fieldDetail = nil
            entryName = nil
            inEntry = false
            var scanner = JSONScanner(UnsafeRawBufferPointer(rebasing: window[start ..< end]), depth: depth)
            do {
                let result = try body(&self, &scanner)
                start += scanner.pos
                depth = scanner.depth
                return result
            } catch {
                if !atEnd, error.offset + 64 >= end - start {
                    try refill()
                    continue
                }
                throw .invalidTOC(describe(error, at: base + start + error.offset))
            }
        }
    }

    /// Moves the unconsumed bytes to the front, grows the window if they fill it, and reads
    /// until it is full or the JSON ends.
    private mutating func refill() throws(EStargzError) {
        guard !atEnd else { return }
        if start > 0 {
            let left = end - start
            if left > 0 {
                window.baseAddress!.copyMemory(from: window.baseAddress! + start, byteCount: left)
            }
            base += start
            end = left
            start = 0
        }
        if end == window.count {
            let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: window.count * 2, alignment: 16)
            bigger.baseAddress!.copyMemory(from: window.baseAddress!, byteCount: end)
            window.deallocate()
            window = bigger
        }
        while end < window.count {
            let n = try fill(UnsafeMutableRawBufferPointer(rebasing: window[end...]))
            if n == 0 {
                atEnd = true
                break
            }
            end += n
        }
    }

    // MARK: One entry

    private mutating func parseEntry(_ s: inout JSONScanner) throws(JSONSyntaxError) {
        pending.reset()
        side.removeAll(keepingCapacity: true)
        if try s.consumeNull() { throw s.failure("entry is null") }
        try s.enterObject("entry object")
        var first = true
        while try s.nextMember(&first) {
            let f = try s.readKey(TOCJSONField.classify)
            if f == .unknown {
                try s.skipValue()
                continue
            }
            field = f
            switch f {
            case .name:
                pending.name = try span(&s)
                if pending.name.present { entryName = string(pending.name, s) }
            case .type:
                let parsed = try s.readStringBytes { b -> Result<TOCEntry.Kind, TypeName> in
                    guard let kind = TOCEntry.Kind(jsonName: b) else { return .failure(TypeName(name: JSONScanner.makeString(b))) }
                    return .success(kind)
                }
                switch parsed {
                case nil: break
                case .success(let kind): pending.kind = kind
                case .failure(let unknown): throw s.failure("unknown entry type \(String(reflecting: unknown.name))")
                }
            case .size: if let v = try s.readInt64() { pending.size = v }
            case .modTime: pending.modTime = try span(&s)
            case .linkName: pending.linkName = try span(&s)
            case .mode: if let v = try s.readInt64() { pending.mode = v }
            case .uid: if let v = try readInt(&s) { pending.uid = v }
            case .gid: if let v = try readInt(&s) { pending.gid = v }
            case .userName: pending.userName = try span(&s)
            case .groupName: pending.groupName = try span(&s)
            case .offset: if let v = try s.readInt64() { pending.offset = v }
            case .devMajor: if let v = try readInt(&s) { pending.devMajor = v }
            case .devMinor: if let v = try readInt(&s) { pending.devMinor = v }
            case .xattrs: try parseXattrs(&s)
            case .digest: pending.digest = try span(&s)
            case .chunkOffset: if let v = try s.readInt64() { pending.chunkOffset = v }
            case .chunkSize: if let v = try s.readInt64() { pending.chunkSize = v }
            case .chunkDigest: pending.chunkDigest = try span(&s)
            case .innerOffset: if let v = try s.readInt64() { pending.innerOffset = v }
            case .unknown: break
            }
            field = nil
        }
        guard pending.kind != nil else { throw s.failure("missing \"type\"") }
    }

    private struct TypeName: Error { var name: String }

    /// A string field as a span; `null` leaves the field as it was (Go's rule).
    private mutating func span(_ s: inout JSONScanner) throws(JSONSyntaxError) -> ByteSpan {
        guard let value = try s.readStringSpan() else {
            switch field {
            case .name: return pending.name
            case .modTime: return pending.modTime
            case .linkName: return pending.linkName
            case .userName: return pending.userName
            case .groupName: return pending.groupName
            case .digest: return pending.digest
            case .chunkDigest: return pending.chunkDigest
            default: return ByteSpan()
            }
        }
        switch value {
        case let .input(from, to):
            // Window-relative: the scanner's input starts at `start`.
            return ByteSpan(start: start + from, count: to - from, decoded: false, present: true)
        case .scratch:
            let at = side.count
            s.withScratch { side.append(contentsOf: $0) }
            return ByteSpan(start: at, count: side.count - at, decoded: true, present: true)
        }
    }

    private func string(_ span: ByteSpan, _ s: JSONScanner) -> String {
        if span.decoded {
            return side.withUnsafeBufferPointer { String(decoding: $0[span.start ..< span.start + span.count], as: UTF8.self) }
        }
        return String(decoding: UnsafeRawBufferPointer(rebasing: window[span.start ..< span.start + span.count]), as: UTF8.self)
    }

    private func readInt(_ s: inout JSONScanner) throws(JSONSyntaxError) -> Int? {
        guard let v = try s.readInt64() else { return nil }
        guard let i = Int(exactly: v) else { throw s.failure("integer out of range for Int") }
        return i
    }

    private mutating func parseXattrs(_ s: inout JSONScanner) throws(JSONSyntaxError) {
        if try s.consumeNull() { return }
        try s.enterObject("object of base64 strings")
        var xattrs = pending.xattrs ?? [:]
        var first = true
        while try s.nextMember(&first) {
            let name = try s.readKey(JSONScanner.makeString)
            fieldDetail = "xattrs." + name
            switch try s.readStringBytes(XattrBase64.decode) {
            case nil: xattrs[name] = []
            case .some(nil): throw s.failure("invalid base64")
            case .some(.some(let value)): xattrs[name] = value
            }
            fieldDetail = nil
        }
        pending.xattrs = xattrs
    }

    /// "entry 3 ("usr/bin/env"), field "size": expected integer, found string at byte 812".
    private func describe(_ error: JSONSyntaxError, at offset: Int) -> String {
        var context = ""
        if inEntry {
            context += "entry \(builder.entryCount)"
            if let entryName { context += " (\(String(reflecting: entryName)))" }
            context += ", "
        }
        if let fieldDetail {
            context += "field \"\(fieldDetail)\": "
        } else if let field {
            context += "field \"\(field.key)\": "
        }
        return context + "\(error.reason) at byte \(offset)"
    }
}
