// The C kernel's jobs per MiB of uncompressed data, single thread: whole-chunk inflate (with and
// without the SHA-256 check), deflate at the default level, SHA-256.
import Benchmark
import BenchData
import BenchKernel

let mib = 1 << 20
let chunkSize = 4 * mib

let benchmarks: @Sendable () -> Void = {
    let plain = layerLikeBytes(chunkSize)
    let bound = sgk_gzip_member_bound(plain.count)
    var member = [UInt8](repeating: 0, count: bound)
    var memberLength = 0
    _ = plain.withUnsafeBufferPointer { p in
        member.withUnsafeMutableBufferPointer { m in
            sgk_gzip_member_compress(p.baseAddress, p.count, 9, m.baseAddress, m.count, &memberLength)
        }
    }
    member.removeLast(member.count - memberLength)

    // One iteration handles one 4 MiB chunk; throughput is reported in chunks/s, time per chunk;
    // divide by 4 for per MiB.
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .throughput], maxDuration: .seconds(3))

    Benchmark("inflate 4 MiB chunk (libdeflate, no digest)", configuration: configuration) { benchmark in
        var out = [UInt8](repeating: 0, count: chunkSize)
        for _ in benchmark.scaledIterations {
            let status = member.withUnsafeBufferPointer { m in
                out.withUnsafeMutableBufferPointer { o in
                    sgk_chunk_inflate(m.baseAddress, m.count, o.baseAddress, o.count, nil, nil)
                }
            }
            precondition(status == 0)
        }
        blackHole(out)
    }

    Benchmark("inflate + SHA-256 4 MiB chunk (one pass)", configuration: configuration) { benchmark in
        var out = [UInt8](repeating: 0, count: chunkSize)
        var digest = [UInt8](repeating: 0, count: 32)
        for _ in benchmark.scaledIterations {
            let status = member.withUnsafeBufferPointer { m in
                out.withUnsafeMutableBufferPointer { o in
                    sgk_chunk_inflate(m.baseAddress, m.count, o.baseAddress, o.count, nil, &digest)
                }
            }
            precondition(status == 0)
        }
        blackHole(digest)
    }

    Benchmark("deflate 4 MiB chunk (level 9 = libdeflate 6)", configuration: configuration) { benchmark in
        var out = [UInt8](repeating: 0, count: bound)
        var length = 0
        for _ in benchmark.scaledIterations {
            let status = plain.withUnsafeBufferPointer { p in
                out.withUnsafeMutableBufferPointer { o in
                    sgk_gzip_member_compress(p.baseAddress, p.count, 9, o.baseAddress, o.count, &length)
                }
            }
            precondition(status == 0)
        }
        blackHole(length)
    }

    Benchmark("SHA-256 4 MiB", configuration: configuration) { benchmark in
        var digest = [UInt8](repeating: 0, count: 32)
        for _ in benchmark.scaledIterations {
            plain.withUnsafeBufferPointer { sgk_sha256($0.baseAddress, $0.count, &digest) }
        }
        blackHole(digest)
    }
}
