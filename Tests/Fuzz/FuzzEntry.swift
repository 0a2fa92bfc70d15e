// libFuzzer entry point over everything that parses untrusted bytes: the footer and TOC
// (through LayerReader, which then reads every file it indexed), the TOC JSON codec on its
// own, and the tar reader. Built only by scripts/fuzz.sh (ESTARGZ_FUZZ=1).
import EStargzCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))

    // 1. A whole blob: footer, TOC member, TOC JSON, index, then every chunk.
    var limits = LayerReader.Limits()
    limits.maximumTOCSize = 16 << 20
    limits.maximumChunkSize = 16 << 20
    if let layer = try? LayerReader(source: MemorySource(bytes), limits: limits) {
        layer.walk { _, entry in
            if entry.kind == .regular { _ = try? layer.read(path: entry.path, count: 1 << 20) }
            return true
        }
        try? layer.verifyAllChunks(concurrency: 1)
    }

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
