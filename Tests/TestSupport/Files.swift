#if canImport(Glibc)
import Glibc
#endif

/// What a test helper could not do (a file, a process, a server), said in one sentence.
public struct TestSupportError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Writes `bytes` to `path` (created or truncated, mode 0644).
public func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw TestSupportError("cannot create \(path): errno \(errno)") }
    defer { close(fd) }
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0, errno == EINTR { continue }
        guard n > 0 else { throw TestSupportError("cannot write \(path): errno \(errno)") }
        done += n
    }
}

/// The whole content of the file at `path`.
public func readFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw TestSupportError("cannot open \(path): errno \(errno)") }
    defer { close(fd) }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        if n < 0, errno == EINTR { continue }
        guard n >= 0 else { throw TestSupportError("cannot read \(path): errno \(errno)") }
        if n == 0 { return out }
        out += buffer[0 ..< n]
    }
}

/// Deterministic pseudo-random bytes, half of them compressible text (alternating 4 KiB runs).
public func testBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var out = [UInt8](repeating: 0, count: count)
    for i in 0 ..< count {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        out[i] = (i / 4096) % 2 == 0 ? UInt8(truncatingIfNeeded: state) : UInt8(ascii: "a") + UInt8(state % 26)
    }
    return out
}

/// Incompressible pseudo-random bytes (so byte counts mean something).
public func noiseBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    var out = [UInt8](repeating: 0, count: count)
    for i in 0 ..< count {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        out[i] = UInt8(truncatingIfNeeded: state)
    }
    return out
}
