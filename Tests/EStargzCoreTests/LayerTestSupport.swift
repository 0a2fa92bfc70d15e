@testable import EStargzCore
#if canImport(Glibc)
import Glibc
#endif

/// A temporary directory removed when the value is dropped.
final class TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/estargz-test-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    deinit { _ = system("rm -rf '\(path)'") }

    func file(_ name: String) -> String { path + "/" + name }
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw EStargzError.io(operation: "create", path: path, errno: errno) }
    defer { close(fd) }
    try bytes.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: path) }
}

func readFile(_ path: String) throws -> [UInt8] {
    let source = try FileSource(path: path)
    return try source.read(at: 0, count: Int(source.size))
}

/// Deterministic pseudo-random bytes, half of them compressible text.
func testBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var out = [UInt8](repeating: 0, count: count)
    for i in 0 ..< count {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        out[i] = (i / 4096) % 2 == 0 ? UInt8(truncatingIfNeeded: state) : UInt8(ascii: "a") + UInt8(state % 26)
    }
    return out
}

func header(_ name: String, _ kind: TarHeader.Kind, mode: Int64 = 0o644, size: Int64 = 0) -> TarHeader {
    var h = TarHeader(name: name, kind: kind, size: size, mode: mode)
    h.modificationTime = TarTimestamp(seconds: 1_700_000_000)
    return h
}

/// Converts an in-memory tar with the writer and returns the blob and the result.
func convert(_ tar: [UInt8], in dir: TemporaryDirectory, options: LayerWriter.Options = LayerWriter.Options(),
             name: String = "layer") throws -> (blob: [UInt8], result: LayerWriter.Result, path: String) {
    let input = dir.file(name + ".tar")
    let output = dir.file(name + ".esgz")
    try writeFile(input, tar)
    let result = try LayerWriter.convert(inputPath: input, outputPath: output, options: options)
    return (try readFile(output), result, output)
}

/// Replaces a blob's TOC with `toc` (keeping its data members), for hostile-TOC tests.
func blob(_ original: [UInt8], withTOC toc: TOC) throws -> [UInt8] {
    let reader = try LayerReader(source: MemorySource(original))
    var bytes = Array(original[0 ..< Int(reader.tocOffset)])
    let tar = try TOCMember.tarBytes(json: TOCJSON.encode(toc))
    bytes += try tar.withUnsafeBytes { try Kernel.compressGzipMember($0, level: 6) }
    bytes += Footer.encode(tocOffset: reader.tocOffset)
    return bytes
}

/// The TOC stored in a blob.
func storedTOC(_ blob: [UInt8]) throws -> TOC {
    let reader = try LayerReader(source: MemorySource(blob))
    let member = Array(blob[Int(reader.tocOffset) ..< blob.count - reader.footerFormat.size])
    return try TOCJSON.decode(try TOCMember.decompressJSON(member, limit: 1 << 30))
}
