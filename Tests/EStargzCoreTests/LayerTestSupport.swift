@testable import EStargzCore
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

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
