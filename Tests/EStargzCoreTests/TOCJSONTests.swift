import Testing
@testable import EStargzCore

@Suite struct TOCJSONTests {
    // MARK: - Helpers

    private func decode(_ text: String) throws(EStargzError) -> TOC {
        try TOCJSON.decode(Array(text.utf8))
    }

    /// Asserts that `text` is rejected with `.invalidTOC` whose message contains `fragment`.
    private func expectInvalid(_ text: String, _ fragment: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
        expectInvalid(bytes: Array(text.utf8), fragment, sourceLocation: sourceLocation)
    }

    private func expectInvalid(bytes: [UInt8], _ fragment: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let toc = try TOCJSON.decode(bytes)
            Issue.record("accepted invalid TOC: \(String(decoding: bytes, as: UTF8.self)) -> \(toc)", sourceLocation: sourceLocation)
        } catch {
            guard case .invalidTOC(let message) = error else {
                Issue.record("wrong error \(error)", sourceLocation: sourceLocation)
                return
            }
            #expect(fragment.isEmpty || message.contains(fragment), "\(message) lacks \(fragment)", sourceLocation: sourceLocation)
        }
    }

    /// One entry wrapped in a TOC document.
    private func doc(_ entryBody: String) -> String {
        #"{"version":1,"entries":[{"#  + entryBody + "}]}"
    }

    // MARK: - Go compatibility

    /// The TOC that `goMarshalIndentOutput` was produced from, built in Go with the reference
    /// `estargz.JTOC` type and `json.MarshalIndent(toc, "", "\t")` (Go 1.19).
    static var goFixtureTOC: TOC {
        var dir = TOCEntry(name: "bin/", type: .directory)
        dir.modTime = "2022-01-02T15:04:05Z"
        dir.mode = 0o755
        dir.userName = "root"
        dir.groupName = "root"

        var reg = TOCEntry(name: "a<b>&c\"d\\e\n\r\t\u{0}\u{1}\u{1f}\u{7f}\u{8}\u{c} é 日本 \u{2028}\u{2029} 😀", type: .regular)
        reg.size = 1_234_567_890_123
        reg.modTime = "2022-01-02T15:04:05Z"
        reg.mode = 0o100644
        reg.uid = 1000
        reg.gid = -5
        reg.userName = "us</er>"
        reg.groupName = "grp"
        reg.offset = 42
        reg.digest = "sha256:abc"
        reg.chunkSize = Int64.max
        reg.chunkDigest = "sha256:def"
        reg.xattrs = [
            "user.b": [0, 0xFF, 1], "user.a": [], "security.capability": [1, 0, 0, 2],
            "user.é": Array("x".utf8), "user.Z<": Array("ab".utf8),
        ]

        var dev = TOCEntry(name: "dev/null", type: .characterDevice)
        dev.devMajor = 1
        dev.devMinor = 3
        dev.mode = 0o20666

        var link = TOCEntry(name: "ln", type: .symlink)
        link.linkName = "../x y"

        var chunk = TOCEntry(name: "big", type: .chunk)
        chunk.offset = Int64.min
        chunk.chunkOffset = 4_194_304
        chunk.chunkSize = 4_194_304
        return TOC(version: 1, entries: [dir, reg, dev, link, chunk])
    }

    @Test func encodeMatchesGoMarshalIndentByteForByte() {
        let ours = TOCJSON.encode(Self.goFixtureTOC)
        let go = Array(Self.goMarshalIndentOutput.utf8)
        #expect(ours == go, "ours:\n\(String(decoding: ours, as: UTF8.self))")
    }

    @Test func decodesGoOutput() throws {
        let toc = try TOCJSON.decode(Array(Self.goMarshalIndentOutput.utf8))
        #expect(toc == Self.goFixtureTOC)
    }

    @Test func emptyEntriesEncodeAsNullLikeGosNilSlice() throws {
        let bytes = TOCJSON.encode(TOC(version: 1, entries: []))
        #expect(String(decoding: bytes, as: UTF8.self) == "{\n\t\"version\": 1,\n\t\"entries\": null\n}")
        #expect(try TOCJSON.decode(bytes) == TOC(version: 1, entries: []))
        #expect(try decode(#"{"version":1,"entries":[]}"#) == TOC(version: 1, entries: []))
        #expect(try decode(#"{}"#) == TOC(version: 0, entries: []))
    }

    // MARK: - Round trips

    @Test func roundTripsEveryField() throws {
        var e = TOCEntry(name: "usr/lib/x86_64-linux-gnu/libc.so.6", type: .regular)
        e.size = 1
        e.modTime = "2024-02-29T23:59:59Z"
        e.linkName = "target"
        e.mode = 0o4755
        e.uid = 65534
        e.gid = 65534
        e.userName = "nobody"
        e.groupName = "nogroup"
        e.devMajor = 7
        e.devMinor = 9
        e.xattrs = ["user.bin": [0, 0xFF, 0x80, 0, 0x0A], "trusted.empty": [], "user.one": [0x41]]
        e.digest = "sha256:" + String(repeating: "ab", count: 32)
        e.offset = 1 << 40
        e.innerOffset = 12345
        e.chunkOffset = 99
        e.chunkSize = 4096
        e.chunkDigest = "sha256:" + String(repeating: "cd", count: 32)
        var toc = TOC(version: 1, entries: [e])
        for kind in TOCEntry.Kind.allCases {
            toc.entries.append(TOCEntry(name: "k/\(kind.rawValue)", type: kind))
        }
        let bytes = TOCJSON.encode(toc)
        let decoded = try TOCJSON.decode(bytes)
        #expect(decoded == toc)
        #expect(TOCJSON.encode(decoded) == bytes)
        #expect(String(decoding: bytes, as: UTF8.self).contains("\"innerOffset\": 12345\n\t\t}"))
    }

    @Test func roundTripsUnicodeAndEscapes() throws {
        let names = [
            "plain", "ü/ñ/日本語/😀🇯🇵", "quote\"back\\slash/solidus", "ctl\u{0}\u{1}\u{8}\u{9}\u{a}\u{c}\u{d}\u{1b}\u{1f}",
            "html<>&", "seps\u{2028}\u{2029}", "del\u{7f}", "é vs e\u{301}", String(repeating: "long/", count: 500),
        ]
        let toc = TOC(version: 1, entries: names.map { TOCEntry(name: $0, type: .regular) })
        let bytes = TOCJSON.encode(toc)
        let decoded = try TOCJSON.decode(bytes)
        // Compare scalars, not String ==, which would equate canonically equivalent names.
        #expect(decoded.entries.map { Array($0.name.unicodeScalars) } == names.map { Array($0.unicodeScalars) })
    }

    // MARK: - Decoding details

    @Test func decodesEscapesLikeGo() throws {
        let toc = try decode(doc(#""name":"\u00e9\/\b\f\n\r\t\"\\\ud83d\ude00|\ud800|\udc00|\ud800\u0041|\u0000","type":"reg""#))
        #expect(Array(toc.entries[0].name.unicodeScalars) == Array("é/\u{8}\u{c}\n\r\t\"\\😀|\u{FFFD}|\u{FFFD}|\u{FFFD}A|\u{0}".unicodeScalars))
    }

    @Test func invalidUTF8BecomesOneReplacementPerByteLikeGo() throws {
        // E2 82 is a truncated 3-byte sequence: Go's utf8.DecodeRune rejects it one byte at a time.
        var bytes = Array(doc(#""name":"a#@#b","type":"reg""#).utf8)
        let at = bytes.firstIndex(of: UInt8(ascii: "#")) ?? 0
        bytes.replaceSubrange(at..<(at + 3), with: [0xE2, 0x82, 0xFF])
        let toc = try TOCJSON.decode(bytes)
        #expect(Array(toc.entries[0].name.unicodeScalars) == Array("a\u{FFFD}\u{FFFD}\u{FFFD}b".unicodeScalars))
    }

    /// The string scanner reads eight bytes at a time; put each kind of special byte at every
    /// offset within and across those words.
    @Test func specialBytesAtEveryOffsetOfTheWordScan() throws {
        let specials = ["\"", "\\", "\n", "\u{1f}", "é", "😀", "<", "\u{2028}", "\u{7f}"]
        for special in specials {
            for before in 0..<18 {
                let name = String(repeating: "a", count: before) + special + String(repeating: "b", count: 17 - before)
                let toc = TOC(version: 1, entries: [TOCEntry(name: name, type: .regular)])
                let decoded = try TOCJSON.decode(TOCJSON.encode(toc))
                #expect(Array(decoded.entries[0].name.unicodeScalars) == Array(name.unicodeScalars))
            }
        }
        for before in 0..<18 {
            var bytes = Array(doc(#""type":"reg","name":""# + String(repeating: "a", count: before) + "#" + String(repeating: "b", count: 17 - before) + "\"").utf8)
            let at = bytes.firstIndex(of: UInt8(ascii: "#")) ?? 0
            bytes[at] = 0x01
            expectInvalid(bytes: bytes, "control character 0x1")
            bytes[at] = 0xFF
            let toc = try TOCJSON.decode(bytes)
            #expect(toc.entries[0].name.unicodeScalars.filter { $0 == "\u{FFFD}" }.count == 1)
        }
    }

    @Test func ignoresUnknownFieldsOfEveryType() throws {
        let text = #"""
         { "future": {"a": [1, 2.5e-3, -0, true, false, null, "s\"\u1234", {"deep": [[{}], []]}]},
           "entries": [ { "zzz": null, "type": "dir", "n": 1, "flt": -12.5E+10, "t": true, "f": false,
                          "arr": [[], [[]], {}], "obj": {"x": {"y": "z"}}, "str": "\\", "name": "d/" } ],
           "version": 2, "tail": [] }
        """#
        let toc = try decode(text)
        #expect(toc == TOC(version: 2, entries: [TOCEntry(name: "d/", type: .directory)]))
    }

    @Test func fieldOrderDoesNotMatterAndNullLeavesFieldUnset() throws {
        let toc = try decode(doc(#""size":5,"digest":"sha256:x","type":"reg","name":"f","size":null,"uid":null,"xattrs":null"#))
        var expected = TOCEntry(name: "f", type: .regular)
        expected.size = 5
        expected.digest = "sha256:x"
        #expect(toc.entries == [expected])
    }

    @Test func keysMatchCaseInsensitivelyLikeGo() throws {
        let toc = try decode(#"{"VERSION":1,"Entries":[{"NAME":"x","Type":"reg","chunksize":7,"LINKNAME":"l"}]}"#)
        #expect(toc.entries[0].name == "x")
        #expect(toc.entries[0].chunkSize == 7)
        #expect(toc.entries[0].linkName == "l")
        #expect(toc.version == 1)
    }

    @Test func xattrBase64Decoding() throws {
        let toc = try decode(doc(#""name":"x","type":"reg","xattrs":{"a":"AP8=","b":"","c":"QUJD\nREVG","d":"QQ==","e":"QUI\u003d"}"#))
        #expect(toc.entries[0].xattrs == ["a": [0, 0xFF], "b": [], "c": Array("ABCDEF".utf8), "d": [0x41], "e": [0x41, 0x42]])
    }

    @Test func integerEdges() throws {
        let toc = try decode(doc(#""name":"x","type":"reg","size":9223372036854775807,"offset":-9223372036854775808,"mode":-0"#))
        #expect(toc.entries[0].size == Int64.max)
        #expect(toc.entries[0].offset == Int64.min)
        #expect(toc.entries[0].mode == 0)
    }

    // MARK: - Malformed input

    @Test func rejectsMalformedDocuments() {
        let cases: [(String, String)] = [
            ("", "end of input"),
            ("[]", "expected TOC object"),
            (#"{"version":1,"entries":[]} x"#, "after the top-level value"),
            (#"{"version":1,}"#, "trailing comma"),
            (#"{"version":1 "entries":[]}"#, "expected ','"),
            (#"{"version":"1"}"#, #"field "version": expected integer, found string"#),
            (#"{"version":1.5}"#, "non-integer"),
            (#"{"entries":{}}"#, "expected array of entries"),
            (#"{"entries":[1]}"#, "entry 0, expected entry object, found number"),
            (#"{"entries":[null]}"#, "entry is null"),
            (doc(#""name":"x""#), #"entry 0 ("x"), missing "type""#),
            (doc(#""name":"x","type":"socket""#), #"entry 0 ("x"), field "type": unknown entry type "socket""#),
            (doc(#""name":"x","type":"reg","size":"12""#), #"entry 0 ("x"), field "size": expected integer, found string"#),
            (doc(#""name":"x","type":"reg","uid":1e3"#), #"field "uid": expected integer, found non-integer"#),
            (doc(#""name":"x","type":"reg","size":9223372036854775808"#), "out of range"),
            (doc(#""name":"x","type":"reg","size":-9223372036854775809"#), "out of range"),
            (doc(#""name":"x","type":"reg","size":123456789012345678901234567890"#), "out of range"),
            (doc(#""name":"x","type":"reg","size":01"#), "leading zero"),
            (doc(#""name":"x","type":"reg","size":-"#), "expected integer"),
            (doc(#""name":"x","type":"reg","size":+1"#), "expected integer"),
            (doc(#""name":5,"type":"reg""#), #"field "name": expected string, found number"#),
            (doc(#""name":"a\x","type":"reg""#), "invalid escape"),
            (doc(#""name":"a\u12","type":"reg""#), "invalid \\u escape"),
            (doc(#""name":"a\u12g4","type":"reg""#), "invalid \\u escape"),
            (doc("\"name\":\"a\u{1}b\",\"type\":\"reg\""), "control character"),
            (doc("\"name\":\"a\tb\",\"type\":\"reg\""), "control character"),
            (doc(#""name":"x","type":"reg","xattrs":{"a":"A"}"#), #"field "xattrs.a": invalid base64"#),
            (doc(#""name":"x","type":"reg","xattrs":{"a":"AA=A"}"#), "invalid base64"),
            (doc(#""name":"x","type":"reg","xattrs":{"a":"A==="}"#), "invalid base64"),
            (doc(#""name":"x","type":"reg","xattrs":{"a":"AA*="}"#), "invalid base64"),
            (doc(#""name":"x","type":"reg","xattrs":{"a":"AA==AA=="}"#), "invalid base64"),
            (doc(#""name":"x","type":"reg","xattrs":{"a":1}"#), "expected string"),
            (doc(#""name":"x","type":"reg","xattrs":["a"]"#), "expected object of base64 strings"),
            (doc(#""name":"x","type":"reg","u":tru"#), "invalid literal"),
            (doc(#""name":"x","type":"reg","u":nul"#), "invalid literal"),
            (doc(#""name":"x","type":"reg","u":1."#), "invalid number"),
            (doc(#""name":"x","type":"reg","u":.5"#), "expected a value"),
            (doc(#""name":"x","type":"reg","u":[1,]"#), "trailing comma"),
            (doc(#""name":"x","type":"reg","u":{"a"}"#), "expected ':'"),
            (doc(#""name":"x","type":"reg","u":{1:2}"#), "expected object key"),
            (doc(#""name":"x","type":"reg","u":'s'"#), "expected a value"),
        ]
        for (text, fragment) in cases {
            expectInvalid(text, fragment)
        }
    }

    @Test func rejectsDeepNestingWithoutRecursingDeeply() {
        for depth in [65, 1000, 100_000] {
            let nested = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            expectInvalid(#"{"x":"# + nested + "}", "nesting deeper than 64")
            let objects = String(repeating: #"{"a":"#, count: depth) + "1" + String(repeating: "}", count: depth)
            expectInvalid(#"{"entries":[{"u":"# + objects + "}]}", "nesting deeper than 64")
        }
        // Just under the limit is fine: document (1) + unknown field value levels (63).
        let ok = String(repeating: "[", count: 63) + String(repeating: "]", count: 63)
        #expect(throws: Never.self) { try decode(#"{"x":"# + ok + "}") }
    }

    @Test func everyTruncationOfAValidDocumentIsAnError() {
        let full = Array(Self.goMarshalIndentOutput.utf8)
        for n in 0..<full.count {
            // A prefix ending right after the final '}' is the whole document.
            expectInvalid(bytes: Array(full[0..<n]))
        }
    }

    @Test func everySingleByteCorruptionIsHandled() {
        // Not all corruptions are errors (a changed digit is still valid JSON); this checks
        // that none crash and that every failure is reported as .invalidTOC.
        let full = Array(Self.goMarshalIndentOutput.utf8)
        for i in stride(from: 0, to: full.count, by: 3) {
            for replacement: UInt8 in [0x00, UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "{"), UInt8(ascii: "]"), 0xFF] {
                var bytes = full
                bytes[i] = replacement
                do {
                    _ = try TOCJSON.decode(bytes)
                } catch {
                    guard case .invalidTOC = error else {
                        Issue.record("unexpected error \(error)")
                        return
                    }
                }
            }
        }
    }

    // MARK: - Scale

    static func largeTOC(entries count: Int) -> TOC {
        var entries: [TOCEntry] = []
        entries.reserveCapacity(count)
        for i in 0..<count {
            var e = TOCEntry(name: "usr/share/doc/package-\(i / 100)/file-\(i)-with-a-longer-name.txt", type: .regular)
            e.size = Int64(i * 37 % 100_000)
            e.modTime = "2023-05-0\(i % 9 + 1)T12:34:56Z"
            e.mode = 0o100644
            e.uid = i % 3 == 0 ? 0 : 1000
            e.gid = i % 3 == 0 ? 0 : 1000
            e.offset = Int64(i) * 512 + 1
            let hex = String(repeating: String(i, radix: 16, uppercase: false), count: 64).prefix(64)
            e.digest = "sha256:" + hex
            e.chunkDigest = "sha256:" + hex
            e.chunkSize = e.size
            entries.append(e)
        }
        return TOC(version: 1, entries: entries)
    }

    @Test func hundredThousandEntriesRoundTripToIdenticalBytes() throws {
        let toc = Self.largeTOC(entries: 100_000)
        let bytes = TOCJSON.encode(toc)
        let decoded = try TOCJSON.decode(bytes)
        #expect(decoded.entries.count == 100_000)
        #expect(decoded == toc)
        #expect(TOCJSON.encode(decoded) == bytes)
    }
}

extension TOCJSONTests {
    /// Output of Go 1.19 `json.MarshalIndent(toc, "", "\t")` for `goFixtureTOC`, using the
    /// reference `estargz.JTOC` type (a fixture from the other implementation, pasted verbatim;
    /// the one raw DEL byte is written as an escape).
    static let goMarshalIndentOutput = #"""
{
	"version": 1,
	"entries": [
		{
			"name": "bin/",
			"type": "dir",
			"modtime": "2022-01-02T15:04:05Z",
			"mode": 493,
			"userName": "root",
			"groupName": "root"
		},
		{
			"name": "a\u003cb\u003e\u0026c\"d\\e\n\r\t\u0000\u0001\u001f\#u{7F}\u0008\u000c é 日本 \u2028\u2029 😀",
			"type": "reg",
			"size": 1234567890123,
			"modtime": "2022-01-02T15:04:05Z",
			"mode": 33188,
			"uid": 1000,
			"gid": -5,
			"userName": "us\u003c/er\u003e",
			"groupName": "grp",
			"offset": 42,
			"xattrs": {
				"security.capability": "AQAAAg==",
				"user.Z\u003c": "YWI=",
				"user.a": "",
				"user.b": "AP8B",
				"user.é": "eA=="
			},
			"digest": "sha256:abc",
			"chunkSize": 9223372036854775807,
			"chunkDigest": "sha256:def"
		},
		{
			"name": "dev/null",
			"type": "char",
			"mode": 8630,
			"devMajor": 1,
			"devMinor": 3
		},
		{
			"name": "ln",
			"type": "symlink",
			"linkName": "../x y"
		},
		{
			"name": "big",
			"type": "chunk",
			"offset": -9223372036854775808,
			"chunkOffset": 4194304,
			"chunkSize": 4194304
		}
	]
}
"""#
}
