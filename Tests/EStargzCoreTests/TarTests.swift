import Foundation
import TestSupport
import Testing
@testable import EStargzCore
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Helpers

/// Every entry of a tar with its content.
private func readAll(_ input: TarInput) throws -> [(header: TarHeader, content: [UInt8])] {
    let reader = TarReader(input)
    var entries: [(TarHeader, [UInt8])] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while let entry = try reader.next() {
        var content: [UInt8] = []
        while true {
            let got = try buffer.withUnsafeMutableBytes { try reader.readContent(into: $0) }
            if got == 0 { break }
            content += buffer[0 ..< got]
        }
        entries.append((entry.header, content))
    }
    return entries
}

private func readAll(_ bytes: [UInt8]) throws -> [(header: TarHeader, content: [UInt8])] {
    try readAll(MemoryTarInput(bytes))
}

/// Runs a command, returning its exit status and standard output.
@discardableResult
private func run(_ arguments: [String], in directory: String? = nil) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// A fresh temporary directory, removed by the caller with `cleanup`.
private func makeTemporaryDirectory() throws -> String {
    var template = Array((NSTemporaryDirectory() + "/tartests.XXXXXX").utf8CString)
    let path = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    guard let path else { throw EStargzError.io(operation: "mkdtemp", path: "", errno: errno) }
    return String(cString: path)
}

private func cleanup(_ directory: String) {
    try? FileManager.default.removeItem(atPath: directory)
}


// Glibc's module map leaves out <sys/xattr.h>; look the two calls up by name instead.
private typealias SetXattr = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeRawPointer?, Int, Int32) -> Int32
private typealias GetXattr = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeMutableRawPointer?, Int) -> Int
private let lsetxattr = unsafeBitCast(dlsym(nil, "lsetxattr")!, to: SetXattr.self)
private let lgetxattr = unsafeBitCast(dlsym(nil, "lgetxattr")!, to: GetXattr.self)

private func setXattr(_ path: String, _ name: String, _ value: [UInt8]) -> Bool {
    value.withUnsafeBytes { lsetxattr(path, name, $0.baseAddress, value.count, 0) } == 0
}

private func getXattr(_ path: String, _ name: String) -> [UInt8]? {
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = buffer.withUnsafeMutableBytes { lgetxattr(path, name, $0.baseAddress, $0.count) }
    return count < 0 ? nil : Array(buffer[0 ..< count])
}

/// A header with the test's usual owner and time.
private func header(_ name: String, _ kind: TarHeader.Kind, mode: Int64 = 0o644) -> TarHeader {
    var header = TarHeader(name: name, kind: kind, mode: mode)
    header.uid = 1000
    header.gid = 1001
    header.userName = "alice"
    header.groupName = "staff"
    header.modificationTime = TarTimestamp(seconds: 1_700_000_000)
    return header
}

private let longComponent = String(repeating: "d", count: 60)
/// 300+ bytes: needs PAX or GNU 'L' (not splittable into prefix + name either).
private let longName = (0 ..< 5).map { _ in longComponent }.joined(separator: "/") + "/" + String(repeating: "f", count: 10)
private let binaryXattr: [UInt8] = [0x01, 0x00, 0x00, 0x02, 0xff, 0x00, 0xfe, 0x0a, 0x3d]

/// One of every kind and every extension, for round trips and interop.
private func sampleEntries() -> [(TarHeader, [UInt8])] {
    var entries: [(TarHeader, [UInt8])] = []
    entries.append((header("./dir/", .directory, mode: 0o755), []))
    entries.append((header("./dir/file.txt", .regular), Array("hello, tar\n".utf8)))
    var setuid = header("dir/setuid", .regular, mode: 0o4755)
    setuid.modificationTime = TarTimestamp(seconds: 1_700_000_000, nanoseconds: 123_456_789)
    entries.append((setuid, Array(repeating: 0x5a, count: 513)))
    var symlink = header("dir/link", .symlink, mode: 0o777)
    symlink.linkName = "file.txt"
    entries.append((symlink, []))
    var hardlink = header("dir/hard", .hardlink)
    hardlink.linkName = "./dir/file.txt"
    entries.append((hardlink, []))
    var char = header("dev/null", .characterDevice, mode: 0o666)
    char.devMajor = 1
    char.devMinor = 3
    entries.append((char, []))
    var block = header("dev/sda1", .blockDevice, mode: 0o660)
    block.devMajor = 8
    block.devMinor = 1
    entries.append((block, []))
    entries.append((header("dir/fifo", .fifo), []))
    var long = header(longName, .regular)
    long.uid = 1 << 21 + 1
    long.gid = 1 << 31
    long.xattrs = ["user.bin": binaryXattr, "security.capability": [0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
    entries.append((long, Array("long".utf8)))
    var longLink = header("dir/longlink", .symlink, mode: 0o777)
    longLink.linkName = String(repeating: "t/", count: 150) + "target"
    entries.append((longLink, []))
    var old = header("dir/old", .regular)
    old.modificationTime = TarTimestamp(seconds: -2, nanoseconds: 500_000_000)
    old.accessTime = TarTimestamp(seconds: 1_600_000_000, nanoseconds: 5)
    old.changeTime = TarTimestamp(seconds: 1_650_000_000)
    old.paxRecords = ["LIBARCHIVE.creationtime": Array("1600000000".utf8)]
    entries.append((old, []))
    var big = header("dir/bigowner", .regular)
    big.uid = 1 << 31
    big.gid = (1 << 21) + 7
    big.userName = String(repeating: "u", count: 40)
    entries.append((big, Array("x".utf8)))
    return entries
}

private func buildSample(_ format: TarFormat) throws -> [UInt8] {
    var builder = TarBuilder(format: format)
    for (header, content) in sampleEntries() { try builder.append(header, content: content) }
    return builder.finish()
}

// MARK: - Round trips

@Suite struct TarTests {
    @Test(arguments: [TarFormat.pax, .gnu])
    func roundTripEveryKindAndExtension(format: TarFormat) throws {
        let bytes = try buildSample(format)
        #expect(bytes.count % 512 == 0)
        let read = try readAll(bytes)
        let expected = sampleEntries()
        #expect(read.count == expected.count)
        for ((got, content), (want, wantContent)) in zip(read, expected) {
            var want = want
            if want.kind == .regular { want.size = Int64(wantContent.count) }
            #expect(got == want, "\(want.name)")
            #expect(content == wantContent, "\(want.name)")
        }
    }

    @Test func shortEntriesArePlainUstar() throws {
        var builder = TarBuilder()
        let name = String(repeating: "p", count: 120) + "/" + String(repeating: "n", count: 90)
        try builder.append(header(name, .regular), content: [1, 2, 3])
        let bytes = builder.finish()
        // One header, one content block, end: no 'x' blocks because the name splits into prefix + name.
        #expect(bytes.count == 512 * 4)
        #expect(bytes[156] == UInt8(ascii: "0"))
        #expect(Array(bytes[257 ..< 263]) == Array("ustar\0".utf8))
        #expect(try readAll(bytes).first?.header.name == name)
    }

    @Test func hugeSizeHeaderRoundTrips() throws {
        for format in [TarFormat.pax, .gnu] {
            var big = header("huge", .regular)
            big.size = 10 << 30
            let bytes = try TarWriter.encodeHeader(big, format: format)
            let reader = TarReader(MemoryTarInput(bytes))
            let entry = try #require(try reader.next())
            #expect(entry.header.size == 10 << 30)
            #expect(entry.dataOffset == Int64(bytes.count))
        }
    }

    @Test func offsetsPointAtBlocks() throws {
        var builder = TarBuilder()
        try builder.append(header("a", .regular), content: Array(repeating: 1, count: 700))
        try builder.append(header(longName, .regular), content: [9])
        let bytes = builder.finish()
        let reader = TarReader(MemoryTarInput(bytes))
        let first = try #require(try reader.next())
        #expect(first.headerOffset == 0)
        #expect(first.dataOffset == 512)
        let second = try #require(try reader.next())
        #expect(second.headerOffset == 512 + 1024)
        #expect(bytes[Int(second.headerOffset) + 156] == UInt8(ascii: "x"))
        #expect(bytes[Int(second.dataOffset)] == 9)
        #expect(try reader.next() == nil)
        #expect(reader.offset == Int64(bytes.count))
    }

    @Test func globalPAXHeaderAppliesToLaterEntries() throws {
        var builder = TarBuilder()
        try builder.append(header("before", .regular))
        builder.appendGlobalHeader(["uname": Array("global".utf8), "comment": Array("hi".utf8), "mtime": Array("5.25".utf8)])
        var own = header("own", .regular)
        own.userName = "x"
        own.paxRecords = ["uname": Array("local".utf8)]
        try builder.append(own)
        try builder.append(header("after", .regular))
        let read = try readAll(builder.finish())
        #expect(read.map(\.header.name) == ["before", "own", "after"])
        #expect(read[0].header.userName == "alice")
        #expect(read[0].header.paxRecords.isEmpty)
        #expect(read[1].header.userName == "local")
        #expect(read[2].header.userName == "global")
        #expect(read[2].header.paxRecords == ["comment": Array("hi".utf8)])
        #expect(read[2].header.modificationTime == TarTimestamp(seconds: 5, nanoseconds: 250_000_000))
    }

    @Test func paxRecordLengthsAroundDigitBoundaries() throws {
        for valueLength in 80 ... 120 {
            let value = [UInt8](repeating: UInt8(ascii: "v"), count: valueLength)
            let record = TarWriter.formatPAXRecord(key: "k", value: value)
            let text = String(decoding: record, as: UTF8.self)
            #expect(Int(text.prefix { $0 != " " }) == record.count)
            #expect(try TarReader.parsePAXRecords(record, at: 0) == ["k": value])
        }
    }

    @Test func paxTimes() throws {
        let cases: [(String, TarTimestamp)] = [
            ("0", TarTimestamp(seconds: 0)),
            ("1700000000.123456789", TarTimestamp(seconds: 1_700_000_000, nanoseconds: 123_456_789)),
            ("1.5", TarTimestamp(seconds: 1, nanoseconds: 500_000_000)),
            ("-1.5", TarTimestamp(seconds: -2, nanoseconds: 500_000_000)),
            ("-0.25", TarTimestamp(seconds: -1, nanoseconds: 750_000_000)),
            ("-3", TarTimestamp(seconds: -3)),
            ("2.0000000019", TarTimestamp(seconds: 2, nanoseconds: 1)),
        ]
        for (text, stamp) in cases {
            #expect(TarReader.parsePAXTime(Array(text.utf8)) == stamp, "\(text)")
        }
        for (text, stamp) in cases where !text.hasSuffix("19") {
            #expect(String(decoding: TarWriter.formatPAXTime(stamp), as: UTF8.self) == text)
        }
        #expect(TarReader.parsePAXTime(Array("1.x".utf8)) == nil)
        #expect(TarReader.parsePAXTime(Array("".utf8)) == nil)
    }

    @Test func numericFields() {
        #expect(TarReader.parseNumeric(Array("0000644\0".utf8)[...]) == 0o644)
        #expect(TarReader.parseNumeric(Array("  644 \0\0".utf8)[...]) == 0o644)
        #expect(TarReader.parseNumeric(Array("\0\0\0\0\0\0\0\0".utf8)[...]) == 0)
        #expect(TarReader.parseNumeric(Array("0008".utf8)[...]) == nil)
        #expect(TarReader.parseNumeric([0x80, 0, 0, 0, 0, 0, 0x01, 0x00][...]) == 256)
        #expect(TarReader.parseNumeric([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe][...]) == -2)
        #expect(TarReader.parseNumeric([0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0][...]) == nil) // > 64 bits
        var block = [UInt8](repeating: 0, count: 512)
        TarWriter.putBase256(-5, into: &block, 136 ..< 148)
        #expect(TarReader.parseNumeric(block[136 ..< 148]) == -5)
        TarWriter.putBase256(1 << 40, into: &block, 108 ..< 116)
        #expect(TarReader.parseNumeric(block[108 ..< 116]) == 1 << 40)
    }

    // MARK: - Odd and hostile input

    @Test func truncatedArchivesFailCleanly() throws {
        let bytes = try buildSample(.pax)
        var cuts = Array(stride(from: 0, to: bytes.count, by: 1))
        if cuts.count > 6000 { cuts = Array(stride(from: 0, to: bytes.count, by: 7)) }
        // Where the archive's blocks end, a clean EOF may be read as end of archive.
        let contentEnd = bytes.count - 1024
        for cut in cuts {
            let prefix = Array(bytes[0 ..< cut])
            for skipContent in [false, true] {
                do {
                    let reader = TarReader(MemoryTarInput(prefix))
                    var count = 0
                    var buffer = [UInt8](repeating: 0, count: 100)
                    while try reader.next() != nil {
                        count += 1
                        if !skipContent {
                            while try buffer.withUnsafeMutableBytes({ try reader.readContent(into: $0) }) > 0 {}
                        }
                        #expect(count <= 100)
                    }
                    // Accepted only when cut exactly before a header or inside the end-of-archive blocks.
                    #expect(cut % 512 == 0, "cut \(cut) accepted")
                    if cut < contentEnd { #expect(count < sampleEntries().count) }
                } catch let error as EStargzError {
                    switch error {
                    case .truncated, .invalidTar: break
                    default: Issue.record("cut \(cut): unexpected \(error)")
                    }
                }
            }
        }
    }

    @Test func truncatedFileDetectedWhenSkippingBySeek() throws {
        let directory = try makeTemporaryDirectory()
        defer { cleanup(directory) }
        var builder = TarBuilder()
        try builder.append(header("big", .regular), content: Array(repeating: 7, count: 5000))
        let bytes = builder.finish()
        let path = directory + "/cut.tar"
        try writeFile(path, Array(bytes[0 ..< 2048]))
        let reader = TarReader(try FileTarInput(path: path))
        #expect(try reader.next()?.header.size == 5000)
        #expect(throws: EStargzError.self) { try reader.next() }

        try writeFile(path, bytes)
        let whole = try readAll(try FileTarInput(path: path))
        #expect(whole.first?.content == Array(repeating: 7, count: 5000))
    }

    @Test func mutatedHeadersNeverCrash() throws {
        // Deterministic xorshift so a failure reproduces.
        var state: UInt64 = 0x9e37_79b9_7f4a_7c15
        func random(_ bound: Int) -> Int {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return Int(state % UInt64(bound))
        }
        for format in [TarFormat.pax, .gnu] {
            let original = try buildSample(format)
            for _ in 0 ..< 800 {
                var bytes = original
                for _ in 0 ... random(3) {
                    let position = random(bytes.count)
                    let interesting: [UInt8] = [0, 0x80, 0xff, UInt8(ascii: "7"), UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "x"), UInt8(ascii: "L")]
                    bytes[position] = random(2) == 0 ? UInt8(random(256)) : interesting[random(interesting.count)]
                    // Re-sign the block so the mutation gets past the checksum and into the parser.
                    let start = position / 512 * 512
                    var block = Array(bytes[start ..< start + 512])
                    TarWriter.setChecksum(&block)
                    bytes.replaceSubrange(start ..< start + 512, with: block)
                }
                do {
                    let entries = try readAll(bytes)
                    #expect(entries.count < 100)
                } catch is EStargzError {
                    // Refusing is fine; crashing or hanging is not.
                }
            }
        }
    }

    @Test func pipeInputSkipsByReading() throws {
        let directory = try makeTemporaryDirectory()
        defer { cleanup(directory) }
        var builder = TarBuilder()
        try builder.append(header("big", .regular), content: Array(repeating: 3, count: 3 << 20))
        try builder.append(header("small", .regular), content: [4, 5])
        let bytes = builder.finish()
        try writeFile(directory + "/p.tar", bytes)
        for (length, shouldFail) in [(bytes.count, false), (1 << 20, true)] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/head")
            process.arguments = ["-c", String(length), directory + "/p.tar"]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            defer { process.waitUntilExit() }
            let input = FileTarInput(fileDescriptor: pipe.fileHandleForReading.fileDescriptor, ownsDescriptor: false)
            let reader = TarReader(input)
            #expect(try reader.next()?.header.name == "big")
            if shouldFail {
                #expect(throws: EStargzError.self) { try reader.next() }
            } else {
                let small = try #require(try reader.next())
                #expect(small.dataOffset == 512 + (3 << 20) + 512)
                var two = [UInt8](repeating: 0, count: 8)
                #expect(try two.withUnsafeMutableBytes { try reader.readContent(into: $0) } == 2)
                #expect(two[0 ..< 2] == [4, 5])
                #expect(try reader.next() == nil)
            }
        }
    }

    @Test func corruptedChecksumIsRefused() throws {
        var bytes = try buildSample(.pax)
        bytes[0] ^= 0x01
        #expect(throws: EStargzError.self) { try readAll(bytes) }
        var plain = TarBuilder()
        try plain.append(header("f", .regular), content: [1])
        var other = plain.finish()
        other[148] = UInt8(ascii: "9")
        #expect(throws: EStargzError.self) { try readAll(other) }
    }

    @Test func signedChecksumIsAccepted() throws {
        var builder = TarBuilder(format: .gnu)
        try builder.append(header("caf\u{e9}", .regular), content: [1])
        var bytes = builder.finish()
        var signed: Int64 = 0
        for index in 0 ..< 512 { signed += Int64(Int8(bitPattern: (148 ..< 156).contains(index) ? 0x20 : bytes[index])) }
        let digits = Array(String(signed, radix: 8).utf8)
        bytes.replaceSubrange(148 ..< 156, with: [UInt8](repeating: UInt8(ascii: "0"), count: 6 - digits.count) + digits + [0, 0x20])
        #expect(try readAll(bytes).first?.header.name == "caf\u{e9}")
    }

    @Test func unsupportedTypesAndVolumeLabels() throws {
        func retyped(_ flag: UInt8) throws -> [UInt8] {
            var builder = TarBuilder()
            try builder.append(header("f", .regular))
            try builder.append(header("g", .regular))
            var bytes = builder.finish()
            bytes[156] = flag
            var first = Array(bytes[0 ..< 512])
            TarWriter.setChecksum(&first)
            bytes.replaceSubrange(0 ..< 512, with: first)
            return bytes
        }
        for flag in ["S", "M", "D", "N", "X"] {
            #expect(throws: EStargzError.self) { try readAll(try retyped(UInt8(ascii: Unicode.Scalar(flag)!))) }
        }
        #expect(try readAll(try retyped(UInt8(ascii: "V"))).map(\.header.name) == ["g"])
        #expect(try readAll(try retyped(UInt8(ascii: "7"))).first?.header.kind == .regular)
    }

    @Test func slashNameMakesRegularADirectory() throws {
        var builder = TarBuilder()
        try builder.append(header("old-style-dir/", .regular))
        #expect(try readAll(builder.finish()).first?.header.kind == .directory)
    }

    @Test func hostileExtensionSizesAreRefused() throws {
        var huge = [UInt8](repeating: 0, count: 512)
        TarWriter.put(Array("big".utf8), into: &huge, 0 ..< 100)
        TarWriter.putOctal(2 << 20, into: &huge, 124 ..< 136)
        huge[156] = UInt8(ascii: "x")
        TarWriter.setChecksum(&huge)
        #expect(throws: EStargzError.self) { try readAll(huge + [UInt8](repeating: 0, count: 4096)) }

        var negative = [UInt8](repeating: 0, count: 512)
        TarWriter.put(Array("neg".utf8), into: &negative, 0 ..< 100)
        TarWriter.putBase256(-100, into: &negative, 124 ..< 136)
        negative[156] = UInt8(ascii: "0")
        TarWriter.setChecksum(&negative)
        #expect(throws: EStargzError.self) { try readAll(negative + TarWriter.endOfArchive) }

        // Many extension headers, each under the limit, must not add up without bound.
        var many: [UInt8] = []
        for _ in 0 ..< 5 {
            many += TarWriter.extensionBlocks(name: Array("x".utf8), typeflag: UInt8(ascii: "x"),
                                              payload: TarWriter.formatPAXRecord(key: "k", value: [UInt8](repeating: 1, count: 300_000)), gnu: false)
        }
        #expect(throws: EStargzError.self) { try readAll(many + TarWriter.encodeHeader(header("f", .regular)) + TarWriter.endOfArchive) }
        var globals: [UInt8] = []
        for index in 0 ..< 5 {
            globals += TarWriter.encodeGlobalHeader(["k\(index)": [UInt8](repeating: 1, count: 300_000)])
        }
        #expect(throws: EStargzError.self) { try readAll(globals + TarWriter.endOfArchive) }

        var negativeExtension = huge
        TarWriter.putBase256(-1024, into: &negativeExtension, 124 ..< 136)
        TarWriter.setChecksum(&negativeExtension)
        #expect(throws: EStargzError.self) { try readAll(negativeExtension + TarWriter.endOfArchive) }

        // A PAX size near Int64.max must be refused, not overflow the offset arithmetic.
        var absurd = header("absurd", .regular)
        absurd.paxRecords = ["size": Array(String(Int64.max).utf8)]
        let absurdBytes = try TarWriter.encodeHeader(absurd) + TarWriter.endOfArchive
        let reader = TarReader(MemoryTarInput(absurdBytes))
        #expect(throws: EStargzError.self) { try reader.next() }
        // The reader stays failed instead of resynchronizing somewhere random.
        #expect(throws: EStargzError.self) { try reader.next() }

        for bad in ["5 a=b\n", "99 a=b\n", "x a=b\n", "6 =bb\n", "8 path=\0\n"] {
            #expect(throws: EStargzError.self) { try TarReader.parsePAXRecords(Array(bad.utf8), at: 0) }
        }
    }

    @Test func singleZeroBlockThenDataIsRefused() throws {
        var builder = TarBuilder()
        try builder.append(header("a", .regular))
        let entry = builder.bytes
        #expect(throws: EStargzError.self) { try readAll(entry + [UInt8](repeating: 0, count: 512) + entry) }
        // One zero block then clean EOF ends the archive, as in Go.
        #expect(try readAll(entry + [UInt8](repeating: 0, count: 512)).count == 1)
        #expect(try readAll(entry).count == 1)
        #expect(try readAll([]).isEmpty)
    }

    @Test func closureInputAndSmallReads() throws {
        let bytes = try buildSample(.gnu)
        var position = 0
        // Hand out at most 3 bytes at a time to exercise partial reads.
        let input = ClosureTarInput { buffer in
            let count = min(3, buffer.count, bytes.count - position)
            for index in 0 ..< count { buffer[index] = bytes[position + index] }
            position += count
            return count
        }
        #expect(try readAll(input).map(\.header) == (try readAll(bytes)).map(\.header))
    }

    // MARK: - Paths

    @Test func cleanMatchesReference() {
        // Expected values are Go's path.Clean("/" + name) with the leading "/" removed.
        let table: [(String, String)] = [
            ("", ""), ("/", ""), (".", ""), ("./", ""), ("..", ""), ("../", ""),
            ("a", "a"), ("./a//b/../c/", "a/c"), ("/a/b", "a/b"), ("a/./b", "a/b"),
            ("../x", "x"), ("a/../../x", "x"), ("a/b/c/../../d", "a/d"), ("//a//", "a"),
            (".../a", ".../a"), ("a/..b/c", "a/..b/c"), ("a/b/..", "a"), ("a/b/.", "a/b"),
            // The fast path (names clean but for leading "./" or "/" and one trailing "/").
            ("./usr/bin/", "usr/bin"), ("/./a", "a"), (".//a/", "a"), ("./.a", ".a"), ("a/", "a"),
            ("./", ""), ("./..", ""), ("./a/./b", "a/b"), ("./a//", "a"), ("a.", "a."), ("./../a", "a"),
        ]
        for (name, cleaned) in table {
            #expect(TarPath.clean(name) == cleaned, "\(name)")
        }
    }

    @Test func safeComponentsRule() throws {
        let allowed: [(String, [String])] = [
            ("a/b", ["a", "b"]), ("./a//b/", ["a", "b"]), ("/etc/passwd", ["etc", "passwd"]),
            ("a/../b", ["b"]), ("", []), ("/", []), (".", []), ("a/..", []), ("...", ["..."]),
        ]
        for (name, components) in allowed {
            #expect(try TarPath.safeComponents(name) == components, "\(name)")
        }
        for hostile in ["../x", "a/../../x", "..", "/../etc", "a/b/../../..", "a\0b", "./../x"] {
            #expect(throws: EStargzError.hostilePath(hostile)) { try TarPath.safeComponents(hostile) }
        }
    }

    // MARK: - Interop: archives made by GNU tar

    @Test(arguments: ["gnu", "posix", "ustar", "v7"])
    func readsGNUTarArchives(format: String) throws {
        let directory = try makeTemporaryDirectory()
        defer { cleanup(directory) }
        let root = directory + "/root"
        let deep = root + "/" + (0 ..< 4).map { _ in longComponent }.joined(separator: "/")
        try FileManager.default.createDirectory(atPath: deep, withIntermediateDirectories: true)
        let longFile = deep + "/" + String(repeating: "f", count: 50)
        try writeFile(longFile, Array("deep".utf8))
        try writeFile(root + "/small", Array(repeating: 0x41, count: 1000))
        try FileManager.default.createSymbolicLink(atPath: root + "/sym", withDestinationPath: "small")
        #expect(link(root + "/small", root + "/zhard") == 0)
        #expect(mkfifo(root + "/fifo", 0o600) == 0)
        let hasXattrs = format == "posix" && setXattr(root + "/small", "user.bin", binaryXattr)

        var arguments = ["tar", "--format=\(format)", "-cf", directory + "/out.tar", "--sort=name"]
        if hasXattrs { arguments += ["--xattrs", "--xattrs-include=*"] }
        // "keyword=value" goes into a global ('g') header at the start of the archive.
        if format == "posix" { arguments += ["--pax-option=comment=from-global"] }
        // v7 and ustar cannot hold the 300-byte name; GNU tar skips it with an error, which is fine.
        let status = try run(arguments + ["-C", root, "."]).status
        #expect(status == 0 || format == "v7" || format == "ustar")

        let entries = try readAll(try FileTarInput(path: directory + "/out.tar"))
        let byName = Dictionary(entries.map { (TarPath.clean($0.header.name), $0) }, uniquingKeysWith: { first, _ in first })
        let small = try #require(byName["small"])
        #expect(small.header.kind == .regular)
        #expect(small.content.count == 1000 && small.content.allSatisfy { $0 == 0x41 })
        #expect(small.header.uid == Int(getuid()))
        #expect(byName["sym"]?.header.kind == .symlink)
        #expect(byName["sym"]?.header.linkName == "small")
        if format != "v7" { #expect(byName["fifo"]?.header.kind == .fifo) } // v7 has no fifos
        #expect(byName["zhard"]?.header.linkName == "./small")
        #expect(byName[""]?.header.kind == .directory)
        // With --sort=name, "small" is archived first and "zhard" links to it.
        let links = entries.filter { $0.header.kind == .hardlink }
        #expect(links.count == 1)
        if format == "gnu" || format == "posix" {
            let relative = String(longFile.dropFirst(root.count + 1))
            #expect(byName[relative]?.content == Array("deep".utf8))
            #expect(byName[relative]?.header.kind == .regular)
        }
        if hasXattrs {
            #expect(small.header.xattrs["user.bin"] == binaryXattr)
        }
        if format == "posix" {
            #expect(entries.allSatisfy { $0.header.paxRecords["comment"] == Array("from-global".utf8) })
            #expect(small.header.accessTime != nil && small.header.changeTime != nil)
        }
    }

    // MARK: - Interop: our archives read by GNU tar and Python

    @Test(arguments: [TarFormat.pax, .gnu])
    func gnuTarReadsOurArchives(format: TarFormat) throws {
        let directory = try makeTemporaryDirectory()
        defer { cleanup(directory) }
        let path = directory + "/ours.tar"
        // Devices cannot be created by an unprivileged extractor; list them, extract the rest.
        try writeFile(path, try buildSample(format))
        let listing = try run(["tar", "--numeric-owner", "-tvf", path])
        #expect(listing.status == 0)
        let lines = listing.output.split(separator: "\n")
        #expect(lines.count == sampleEntries().count)
        for (line, (header, _)) in zip(lines, sampleEntries()) {
            #expect(line.contains(header.name), "\(line)")
            #expect(line.contains("\(header.uid)/\(header.gid)"), "\(line)")
        }
        #expect(lines.contains { $0.hasPrefix("crw-rw-rw-") && $0.contains("1,3") })
        #expect(lines.contains { $0.hasPrefix("-rwsr-xr-x") })

        let out = directory + "/x"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let extract = try run(["tar", "-xf", path, "--xattrs", "--xattrs-include=*", "--no-same-owner", "-C", out,
                               "--exclude=dev/*"])
        #expect(extract.status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/dir/file.txt")) == Data("hello, tar\n".utf8))
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/" + longName)) == Data("long".utf8))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out + "/dir/longlink") == String(repeating: "t/", count: 150) + "target")
        // user.* xattrs extract where the filesystem allows them.
        if setXattr(out + "/dir/file.txt", "user.probe", [1]) {
            #expect(getXattr(out + "/" + longName, "user.bin") == binaryXattr)
        }
        var info = stat()
        #expect(stat(out + "/dir/setuid", &info) == 0)
        #expect(info.st_mtim.tv_nsec == 123_456_789 || format == .gnu || info.st_mtim.tv_nsec == 0)
    }

    @Test(arguments: [TarFormat.pax, .gnu])
    func pythonReadsOurArchives(format: TarFormat) throws {
        let directory = try makeTemporaryDirectory()
        defer { cleanup(directory) }
        let path = directory + "/ours.tar"
        try writeFile(path, try buildSample(format))
        let script = """
        import sys, tarfile
        with tarfile.open(sys.argv[1]) as t:
            for m in t:
                x = m.pax_headers.get('SCHILY.xattr.user.bin')
                x = x.encode('utf-8', 'surrogateescape').hex() if x is not None else '-'
                print(m.name, m.type.decode() if m.type != b'\\0' else '0', m.size, m.uid, m.gid, m.linkname or '-', m.devmajor, m.devminor, x, repr(m.mtime), sep='|')
        """
        let result = try run(["python3", "-c", script, path])
        #expect(result.status == 0)
        let lines = result.output.split(separator: "\n").map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
        let expected = sampleEntries()
        #expect(lines.count == expected.count)
        for (fields, (header, content)) in zip(lines, expected) {
            guard fields.count == 10 else { Issue.record("bad line \(fields)"); continue }
            // Python strips a directory's trailing slash.
            #expect(fields[0] == (header.kind == .directory ? String(header.name.dropLast()) : header.name))
            #expect(fields[1] == String(Character(Unicode.Scalar(header.kind.typeflag))))
            #expect(fields[2] == String(content.count))
            #expect(fields[3] == String(header.uid))
            #expect(fields[4] == String(header.gid))
            #expect(fields[5] == (header.linkName.isEmpty ? "-" : header.linkName))
            if header.kind == .characterDevice || header.kind == .blockDevice {
                #expect(fields[6] == String(header.devMajor) && fields[7] == String(header.devMinor))
            }
            if let xattr = header.xattrs["user.bin"] {
                #expect(fields[8] == xattr.map { String(format: "%02x", $0) }.joined())
            }
        }
        #expect(lines[2][9].hasPrefix("1700000000.123456"))
    }

    @Test(.enabled(if: (try? run(["go", "version"]).status) == 0, "needs a Go toolchain"), arguments: [TarFormat.pax, .gnu])
    func goReadsOurArchives(format: TarFormat) throws {
        let directory = try makeTemporaryDirectory()
        defer { cleanup(directory) }
        let path = directory + "/ours.tar"
        try writeFile(path, try buildSample(format))
        try writeFile(directory + "/main.go", Array(goLister.utf8))
        let result = try run(["go", "run", directory + "/main.go", path])
        #expect(result.status == 0, "\(result.output)")
        let lines = result.output.split(separator: "\n").map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
        let expected = sampleEntries()
        #expect(lines.count == expected.count)
        for (fields, (header, content)) in zip(lines, expected) {
            guard fields.count == 10 else { Issue.record("bad line \(fields)"); continue }
            #expect(fields[0] == header.name)
            #expect(fields[1] == String(Character(Unicode.Scalar(header.kind.typeflag))))
            #expect(fields[2] == String(content.count))
            #expect(fields[3] == String(header.uid) && fields[4] == String(header.gid))
            #expect(fields[5] == header.linkName)
            #expect(fields[6] == String(header.devMajor) && fields[7] == String(header.devMinor))
            #expect(fields[8] == (header.xattrs["user.bin"].map { $0.map { String(format: "%02x", $0) }.joined() } ?? "-"))
            let time = header.modificationTime
            #expect(fields[9] == "\(time.seconds).\(String(format: "%09d", time.nanoseconds))", "\(header.name)")
        }
    }
}

/// Lists a tar with Go's archive/tar, one "|"-separated line per entry.
private let goLister = #"""
package main

import (
	"archive/tar"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

func main() {
	f, err := os.Open(os.Args[1])
	if err != nil { panic(err) }
	r := tar.NewReader(f)
	for {
		h, err := r.Next()
		if err == io.EOF { break }
		if err != nil { fmt.Println("ERROR", err); os.Exit(1) }
		n, _ := io.Copy(io.Discard, r)
		x := "-"
		if v, ok := h.PAXRecords["SCHILY.xattr.user.bin"]; ok { x = hex.EncodeToString([]byte(v)) }
		fmt.Printf("%s|%c|%d|%d|%d|%s|%d|%d|%s|%d.%09d\n", h.Name, h.Typeflag, n, h.Uid, h.Gid, h.Linkname, h.Devmajor, h.Devminor, x, h.ModTime.Unix(), h.ModTime.Nanosecond())
	}
}
"""#
