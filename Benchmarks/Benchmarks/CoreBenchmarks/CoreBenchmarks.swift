// EStargzCore through its public API: TOC JSON parse per entry, tar header parse, opening a
// layer (footer + TOC + index), and reading one 4 MiB chunk with verification.
import Benchmark
import BenchData
import EStargzCore
#if canImport(Glibc)
import Glibc
#endif

let entryCount = 10_000

/// A TOC like a rootfs's: a directory every 50 files, regular files with digests.
func syntheticTOC() -> TOC {
    var toc = TOC()
    for i in 0 ..< entryCount {
        if i % 50 == 0 {
            var dir = TOCEntry(name: "usr/lib/d\(i / 50)/", type: .directory)
            dir.mode = 0o755
            dir.modTime = "2024-01-01T00:00:00Z"
            toc.entries.append(dir)
        }
        var file = TOCEntry(name: "usr/lib/d\(i / 50)/file-\(i).so", type: .regular)
        file.size = Int64(1000 + i)
        file.mode = 0o644
        file.modTime = "2024-01-01T00:00:00Z"
        file.offset = Int64(100 + i * 600)
        let digest = SHA256Digest.of([UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 8)).description
        file.digest = digest
        file.chunkDigest = digest
        toc.entries.append(file)
    }
    return toc
}

/// A plain tar of `files` small files plus one 4 MiB file `big.bin`.
func syntheticTar(files: Int) throws -> [UInt8] {
    var tar = TarBuilder()
    for i in 0 ..< files {
        if i % 50 == 0 { try tar.append(TarHeader(name: "d\(i / 50)/", kind: .directory, mode: 0o755)) }
        let content = Array("file \(i) of the benchmark layer\n".utf8)
        try tar.append(TarHeader(name: "d\(i / 50)/f\(i).txt", kind: .regular, size: Int64(content.count)), content: content)
    }
    let big = layerLikeBytes(4 << 20)
    try tar.append(TarHeader(name: "big.bin", kind: .regular, size: Int64(big.count)), content: big)
    return tar.finish()
}

/// Converts `tar` with LayerWriter (temporary files) and returns the blob.
func convert(_ tar: [UInt8]) throws -> [UInt8] {
    let input = "/tmp/estargz-bench-\(getpid()).tar", output = input + ".esgz"
    defer { unlink(input); unlink(output) }
    let fd = open(input, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    _ = tar.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    _ = try LayerWriter.convert(inputPath: input, outputPath: output)
    let source = try FileSource(path: output)
    return try source.read(at: 0, count: Int(source.size))
}

let benchmarks: @Sendable () -> Void = {
    let toc = syntheticTOC()
    let json = TOCJSON.encode(toc)
    let tar = try! syntheticTar(files: entryCount)
    let blob = try! convert(tar)
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .throughput, .mallocCountTotal], maxDuration: .seconds(3))

    Benchmark("TOC JSON parse, \(toc.entries.count) entries", configuration: configuration) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try TOCJSON.decode(json))
        }
    }

    Benchmark("tar parse, \(entryCount + entryCount / 50 + 1) headers", configuration: configuration) { benchmark in
        for _ in benchmark.scaledIterations {
            let reader = TarReader(MemoryTarInput(tar))
            var n = 0
            while let entry = try reader.next() {
                n += 1
                blackHole(entry)
            }
            precondition(n == entryCount + entryCount / 50 + 1)
        }
    }

    Benchmark("open layer (footer, TOC, index), \(entryCount) files", configuration: configuration) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try LayerReader(source: MemorySource(blob)))
        }
    }

    let layer = try! LayerReader(source: MemorySource(blob))
    let big = layer.entry(at: "big.bin")!
    Benchmark("read + verify one 4 MiB chunk", configuration: configuration) { benchmark in
        var buffer = [UInt8](repeating: 0, count: Int(big.size))
        for _ in benchmark.scaledIterations {
            let n = try buffer.withUnsafeMutableBytes { try layer.read(big, into: $0, at: 0) }
            precondition(n == Int(big.size))
        }
        blackHole(buffer)
    }
}
