// libFuzzer entry point over everything that parses untrusted bytes: the footer and TOC
// (through LayerReader, which then reads every file it indexed; eStargz, legacy stargz and
// zstd:chunked), the zstd:chunked TOC frame and footer on their own, the TOC JSON codec on its
// own, and the tar reader. Built only by scripts/fuzz.sh (ESTARGZ_FUZZ=1).
import EStargzCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))

    // 1. A whole blob: footer, TOC member, TOC JSON, index, then every chunk.
    var limits = LayerReader.Limits()
    limits.maximumTOCSize = 16 << 20
    limits.maximumChunkSize = 16 << 20
    openAndReadAll(bytes, limits: limits)

    // 1b. zstd:chunked: the input as the TOC frame's compressed bytes (its size in the footer taken
    //     from the first bytes, so lying sizes and bombs are tried), and as the TOC JSON stored in
    //     a frame of raw blocks (so the JSON reaches the parser through the zstd path).
    if size >= 2 {
        let claimed = Int(bytes[0]) << 8 | Int(bytes[1])
        openAndReadAll(zstdChunkedBlob(compressedTOC: Array(bytes.dropFirst(2)), tocSize: claimed << 4), limits: limits)
    }
    openAndReadAll(zstdChunkedBlob(compressedTOC: rawZstdFrame(bytes), tocSize: bytes.count), limits: limits)

    // 2. TOC JSON alone, and its re-encoding must decode to the same TOC.
    if let toc = try? TOCJSON.decode(bytes) {
        let again = try? TOCJSON.decode(TOCJSON.encode(toc))
        precondition(again == toc, "TOC JSON round trip changed the TOC")
    }

    // 3. A tar stream.
    let reader = TarReader(MemoryTarInput(bytes))
    var buffer = [UInt8](repeating: 0, count: 4096)
    var entries = 0
    while entries < 10_000, let entry = try? reader.next() {
        entries += 1
        _ = TarPath.clean(entry.header.name)
        _ = try? TarPath.safeComponents(entry.header.name)
        while let n = try? buffer.withUnsafeMutableBytes({ try reader.readContent(into: $0) }), n > 0 {}
    }
    return 0
}

/// Opens `blob` and, if that works, reads and verifies everything it indexed.
private func openAndReadAll(_ blob: [UInt8], limits: LayerReader.Limits) {
    guard let layer = try? LayerReader(source: MemorySource(blob), limits: limits) else { return }
    layer.walk { _, entry in
        if entry.kind == .regular { _ = try? layer.read(path: entry.path, count: 1 << 20) }
        return true
    }
    try? layer.verifyAllChunks(concurrency: 1)
}

/// A zstd:chunked blob with a one-chunk data frame, then `compressedTOC` in its skippable frame
/// and the 48-byte footer (ZstdChunkedFooter's layout) claiming `tocSize` JSON bytes.
private func zstdChunkedBlob(compressedTOC: [UInt8], tocSize: Int) -> [UInt8] {
    func le(_ value: UInt64, _ count: Int) -> [UInt8] { (0 ..< count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) } }
    let skippable: [UInt8] = [0x50, 0x2a, 0x4d, 0x18]
    var blob = rawZstdFrame(Array("hello\n".utf8))
    blob += skippable + le(UInt64(compressedTOC.count), 4) + compressedTOC
    let tocOffset = UInt64(blob.count - compressedTOC.count)
    blob += skippable + le(40, 4) + le(tocOffset, 8) + le(UInt64(compressedTOC.count), 8) + le(UInt64(tocSize), 8) + le(1, 8)
    return blob + Array("GnUlInUx".utf8)
}

/// `content` as one zstd frame of raw (stored) blocks: no content size, 128 KiB window.
private func rawZstdFrame(_ content: [UInt8]) -> [UInt8] {
    var frame: [UInt8] = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38]
    var start = 0
    repeat {
        let count = min(content.count - start, 128 << 10)
        let last = start + count == content.count ? 1 : 0
        let header = UInt32(count) << 3 | UInt32(last)
        frame += [UInt8(header & 0xff), UInt8(header >> 8 & 0xff), UInt8(header >> 16 & 0xff)]
        frame += content[start ..< start + count]
        start += count
    } while start < content.count
    return frame
}

// SwiftPM links executables with `main` aliased to `EStargzFuzz_main`; hand control to libFuzzer's driver from there.
@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> Int32
) -> Int32

@_cdecl("EStargzFuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments) { data, size in fuzzOneInput(data, size) }
}
