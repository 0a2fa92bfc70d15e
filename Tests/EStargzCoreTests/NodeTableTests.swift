@testable import EStargzCore
import Testing
import TestSupport

/// A blob whose TOC member holds exactly `json` (data members taken from `original`).
func blob(_ original: [UInt8], withJSON json: [UInt8]) throws -> [UInt8] {
    let reader = try LayerReader(source: MemorySource(original))
    var bytes = Array(original[0 ..< Int(reader.tocOffset)])
    let tar = try TOCMember.tarBytes(json: json)
    bytes += try tar.withUnsafeBytes { try Kernel.compressGzipMember($0, level: 6) }
    bytes += Footer.encode(tocOffset: reader.tocOffset)
    return bytes
}

/// The reader's node table: lookups, directories, hardlinks, chunks, xattrs, entries rebuilt
/// on demand, TOCs far larger than the parse window, and hostile JSON.
@Suite struct NodeTableTests {
    static func sample() throws -> (blob: [UInt8], layer: LayerReader, dir: TemporaryDirectory) {
        let dir = TemporaryDirectory()
        var options = LayerWriter.Options()
        options.chunkSize = LayerRoundTripTests.chunkSize
        let (blob, result, _) = try convert(try LayerRoundTripTests.sampleTar().tar, in: dir, options: options)
        return (blob, try LayerReader(source: MemorySource(blob), tocDigest: result.tocDigest), dir)
    }

    @Test func entriesRebuiltFromTheTableEqualTheTOC() throws {
        let (blob, layer, _) = try Self.sample()
        let toc = try storedTOC(blob)
        #expect(layer.tocEntryCount == toc.entries.count)
        var checked = 0
        for entry in toc.entries where entry.type != .chunk && entry.type != .hardlink {
            let found = try #require(layer.entry(at: entry.name), "\(entry.name)")
            #expect(found.tocEntry == entry, "\(entry.name)")
            #expect(found.path == TarPath.clean(entry.name))
            #expect(found.modificationTimeText == entry.modTime)
            #expect(found.digest == entry.digest)
            checked += 1
        }
        #expect(checked >= 12)
    }

    @Test func lookupsCleanTheirNames() throws {
        let (_, layer, _) = try Self.sample()
        let small = try #require(layer.entry(at: "usr/lib/small.txt"))
        for spelling in ["/usr/lib/small.txt", "./usr/lib/small.txt", "usr//lib/./small.txt", "usr/lib/../lib/small.txt"] {
            #expect(layer.entry(at: spelling)?.id == small.id, "\(spelling)")
        }
        #expect(layer.entry(at: "usr/lib/missing") == nil)
        #expect(layer.entry(at: "usr/lib/small.txt/x") == nil)
        #expect(layer.entry(at: "")?.id == 0 && layer.entry(at: "/")?.id == 0)
        #expect(layer.entry(id: small.id)?.path == "usr/lib/small.txt")
        #expect(layer.entry(id: -1) == nil && layer.entry(id: 1 << 30) == nil)
    }

    @Test func directoriesListAndFindChildrenByName() throws {
        let (_, layer, _) = try Self.sample()
        let etc = try #require(layer.entry(at: "etc"))
        let children = layer.children(of: etc)
        #expect(children.map(\.name) == ["cap", "empty", "exact", "hard", "link", "one", "plusone"])
        for (name, entry) in children {
            #expect(layer.child(named: name, of: etc)?.id == entry.id)
        }
        #expect(layer.child(named: "nope", of: etc) == nil)
        #expect(layer.child(named: "", of: etc) == nil)
        // The root's children include implicit directories, and link counts follow subdirectories.
        let root = layer.root
        #expect(layer.children(of: root).map(\.name).contains("usr"))
        let usr = try #require(layer.entry(at: "usr"))
        #expect(usr.linkCount == 3)  // itself, "." and lib
        var walked: [String] = []
        layer.walk { path, _ in walked.append(path); return true }
        var raw: [String] = []
        layer.walkPaths { path, _ in raw.append(String(decoding: path, as: UTF8.self)); return true }
        #expect(walked == raw)
        #expect(walked.first == "" && walked.contains("usr/lib/multi.bin"))
    }

    @Test func hardlinksShareTheirTarget() throws {
        let (_, layer, _) = try Self.sample()
        let hard = try #require(layer.entry(at: "etc/hard"))
        let target = try #require(layer.entry(at: "usr/lib/multi.bin"))
        #expect(hard.id == target.id && hard.linkCount == 2 && hard.path == "usr/lib/multi.bin")
        let etc = try #require(layer.entry(at: "etc"))
        #expect(layer.child(named: "hard", of: etc)?.id == target.id)
        #expect(try layer.read(path: "etc/hard") == layer.read(path: "usr/lib/multi.bin"))
    }

    @Test func chunksTileTheirFile() throws {
        let (_, layer, _) = try Self.sample()
        let multi = try #require(layer.entry(at: "usr/lib/multi.bin"))
        let chunks = layer.chunks(of: multi)
        #expect(chunks.count == 6)
        var offset: Int64 = 0
        for c in chunks {
            #expect(c.fileOffset == offset && c.blobEnd > c.blobOffset)
            offset += c.size
        }
        #expect(offset == multi.size)
        let content = try layer.read(path: "usr/lib/multi.bin")
        for c in chunks {
            #expect(SHA256Digest.of(Array(content[Int(c.fileOffset) ..< Int(c.fileOffset + c.size)])) == c.digest)
        }
        #expect(layer.allChunks().count == layer.allChunks().map(\.chunk.blobOffset).count)
        #expect(layer.totalChunkBytes == layer.allChunks().reduce(0) { $0 + $1.chunk.size })
        #expect(layer.chunks(of: try #require(layer.entry(at: "etc/empty"))).isEmpty)
    }

    @Test func xattrsDevicesAndOwnersComeBack() throws {
        let (_, layer, _) = try Self.sample()
        let cap = try #require(layer.entry(at: "etc/cap"))
        #expect(cap.xattrs["user.note"] == Array("hello".utf8))
        #expect(cap.xattrs.count == 2)
        let device = try #require(layer.entry(at: "dev/null"))
        #expect(device.deviceMajor == 1 && device.deviceMinor == 3)
        let one = try #require(layer.entry(at: "etc/one"))
        #expect(one.uid == 1000 && one.gid == 1001 && one.mode == 0o755 && one.xattrs.isEmpty)
    }

    /// Far more JSON than the 256 KiB parse window, a name longer than the window, odd
    /// spellings of names, and duplicates: the table equals what the whole-document decoder says.
    @Test func hugeTOCStreamsThroughTheWindow() throws {
        let (original, sample, _) = try Self.sample()
        var sampleCount = 0
        sample.walk { _, _ in sampleCount += 1; return true }
        var toc = try storedTOC(original)
        let directories = 1_100, files = 99
        for d in 0 ..< directories {
            var dir = TOCEntry(name: "./dir\(d)/", type: .directory)
            dir.mode = 0o750
            dir.modTime = "2023-11-14T22:13:20Z"
            toc.entries.append(dir)
            for f in 0 ..< files {
                var e = TOCEntry(name: "dir\(d)/f\(files - f)", type: .regular)  // unsorted on purpose
                e.mode = 0o644
                e.uid = d
                e.modTime = f % 2 == 0 ? "2023-11-14T22:13:20Z" : "2024-01-01T00:00:00Z"
                e.digest = SHA256Digest.of([]).description
                toc.entries.append(e)
            }
        }
        let longName = "long/" + String(repeating: "n", count: 300 << 10)
        var long = TOCEntry(name: longName, type: .symlink)
        long.linkName = "é\u{1}\"target\\"
        toc.entries.append(long)
        var again = TOCEntry(name: "/dir7/f3", type: .symlink)  // replaces a file
        again.linkName = "f4"
        toc.entries.append(again)
        let json = TOCJSON.encode(toc)
        #expect(json.count > 10 << 20)
        // Streamed (through the parse window and the read-ahead thread), and inflated whole.
        let big = try blob(original, withJSON: json)
        var streaming = LayerReader.Limits()
        streaming.maximumWholeTOCSize = 0
        let layer = try LayerReader(source: MemorySource(big), tocDigest: SHA256Digest.of(json), limits: streaming)
        #expect(!layer.tocWasInflatedWhole)
        var inMemory = LayerReader.Limits()
        inMemory.maximumWholeTOCSize = 64 << 20
        let whole = try LayerReader(source: MemorySource(big), tocDigest: SHA256Digest.of(json), limits: inMemory)
        #expect(whole.tocWasInflatedWhole)
        // Compared as values: the text of an entry's xattrs dictionary has no fixed order.
        var streamedPaths: [String] = [], wholePaths: [String] = []
        var streamedEntries: [TOCEntry] = [], wholeEntries: [TOCEntry] = []
        layer.walk { path, entry in streamedPaths.append(path); streamedEntries.append(entry.tocEntry); return true }
        whole.walk { path, entry in wholePaths.append(path); wholeEntries.append(entry.tocEntry); return true }
        #expect(streamedPaths == wholePaths)
        #expect(streamedEntries == wholeEntries)
        #expect(layer.tocEntryCount == toc.entries.count)
        let d7 = try #require(layer.entry(at: "dir7"))
        #expect(d7.mode == 0o750 && d7.tocEntry.name == "./dir7/")
        let names = layer.children(of: d7).map(\.name)
        #expect(names.count == files && names == names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
        #expect(layer.entry(at: "dir7/f3")?.kind == .symlink && layer.entry(at: "dir7/f3")?.linkName == "f4")
        #expect(layer.entry(at: "dir1099/f99")?.uid == 1099)
        #expect(layer.entry(at: "dir5/f2")?.modificationTime == 1_704_067_200)
        let longEntry = try #require(layer.entry(at: longName))
        #expect(longEntry.linkName == "é\u{1}\"target\\" && longEntry.tocEntry == long)
        var count = 0
        layer.walkPaths { _, _ in count += 1; return true }
        #expect(count == sampleCount + directories * (files + 1) + 2)  // + the tree, long/ and its link
    }

    /// What the whole-document decoder accepts, the streaming parser accepts with the same
    /// result: escapes, invalid UTF-8, unknown fields, nulls and case-folded keys.
    @Test func oddButValidJSONMatchesTheDocumentDecoder() throws {
        let (original, _, _) = try Self.sample()
        var json = Array(#"{"entries":[{"name":"a\u00e9\/b","type":"dir","Mode":493,"unknown":{"x":[1,2.5e3,true,null]}},"#.utf8)
        json += Array(#"{"name":"a\u00e9/b/c","type":"symlink","linkName":"#.utf8) + [0x22, 0x78, 0xFF, 0x79, 0x22]
        json += Array(#","modtime":null,"uid":null,"xattrs":{"user.a":"aGk=","user.b":null}}],"version":1}"#.utf8)
        let expected = try TOCJSON.decode(json)
        let layer = try LayerReader(source: MemorySource(try blob(original, withJSON: json)))
        let dir = try #require(layer.entry(at: "aé/b"))
        #expect(dir.tocEntry == expected.entries[0])
        let link = try #require(layer.entry(at: "aé/b/c"))
        #expect(link.tocEntry == expected.entries[1])
        #expect(link.linkName == "x\u{FFFD}y")
        #expect(link.xattrs == ["user.a": Array("hi".utf8), "user.b": []])
    }

    /// Malformed and hostile JSON is an `invalidTOC` error naming the same place the
    /// whole-document decoder names.
    @Test(arguments: [
        #"{"entries":[{"name":"a","type":"reg","size":"1"}]}"#,
        #"{"entries":[{"name":"a","type":"nope"}]}"#,
        #"{"entries":[{"name":"a"}]}"#,
        #"{"entries":[null]}"#,
        #"{"entries":[{"name":"a","type":"dir"},]}"#,
        #"{"entries":[{"name":"a","type":"dir"}]} x"#,
        #"{"entries":[{"name":"a","type":"dir","mode":1.5}]}"#,
        #"{"entries":[{"name":"a","type":"dir","size":99999999999999999999}]}"#,
        #"{"entries":[{"name":"a\q","type":"dir"}]}"#,
        #"{"entries":[{"name":"a","type":"dir","xattrs":{"k":"***"}}]}"#,
        #"{"entries":{"name":"a"}}"#,
        #"{"entries":[{"name":"a","type":"dir""#,
        #"{"deep":"# + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}",
        #"{"version":"1"}"#,
        "",
    ])
    func malformedJSONIsATypedError(_ text: String) throws {
        let (original, _, _) = try Self.sample()
        let json = Array(text.utf8)
        var documentError: EStargzError?
        do { _ = try TOCJSON.decode(json) } catch { documentError = error }
        let broken = try blob(original, withJSON: json)
        do {
            _ = try LayerReader(source: MemorySource(broken))
            Issue.record("accepted \(text)")
        } catch let error as EStargzError {
            guard case .invalidTOC = error else {
                Issue.record("\(error)")
                return
            }
            #expect(error == documentError, "\(text)")
        }
    }

    @Test func malformedJSONWithTheWrongDigestIsADigestMismatch() throws {
        let (original, _, _) = try Self.sample()
        let json = Array(#"{"entries":[{"name":"a","type":"reg","size":"1"}]}"#.utf8)
        let wrong = SHA256Digest.of([7])
        #expect(throws: EStargzError.tocDigestMismatch(expected: wrong.description, actual: SHA256Digest.of(json).description)) {
            try LayerReader(source: MemorySource(try blob(original, withJSON: json)), tocDigest: wrong)
        }
    }

    @Test func entriesBelowAFileAreUnreachable() throws {
        let (original, _, _) = try Self.sample()
        let json = Array(#"{"version":1,"entries":[{"name":"f","type":"symlink","linkName":"x"},{"name":"f/g","type":"dir"},{"name":"f/g/h","type":"fifo"}]}"#.utf8)
        let layer = try LayerReader(source: MemorySource(try blob(original, withJSON: json)))
        #expect(layer.entry(at: "f")?.kind == .symlink)
        #expect(layer.entry(at: "f/g") == nil && layer.entry(at: "f/g/h") == nil)
        #expect(layer.children(of: layer.root).map(\.name) == ["f"])
    }
}
