import CStargzSystem
#if canImport(Glibc)
import Glibc
#endif

/// Small POSIX helpers shared by the writer and the extractor; errors carry the path.
enum FileIO {
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw EStargzError.io(operation: "write", path: path, errno: errno)
            }
            done += n
        }
    }

    static func preadAll(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw EStargzError.io(operation: "pread", path: path, errno: errno)
            }
            if n == 0 { throw EStargzError.truncated(what: path, offset: offset + Int64(done), needed: Int64(buffer.count - done)) }
            done += n
        }
    }

    /// Reads up to `buffer.count` bytes; 0 at end of file.
    static func readSome(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, path: String) throws -> Int {
        while true {
            let n = read(fd, buffer.baseAddress!, buffer.count)
            if n >= 0 { return n }
            if errno != EINTR { throw EStargzError.io(operation: "read", path: path, errno: errno) }
        }
    }

    /// An anonymous temporary file in `directory` (unlinked at once, gone when closed).
    static func anonymousTemporaryFile(in directory: String) throws -> Int32 {
        let fd = open(directory, sgs_o_tmpfile | O_RDWR | O_CLOEXEC, 0o600)
        if fd >= 0 { return fd }
        var template = Array((directory + "/estargz-XXXXXX").utf8CString)
        let fallback = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fallback >= 0 else { throw EStargzError.io(operation: "create temporary file in", path: directory, errno: errno) }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return fallback
    }

    static var temporaryDirectory: String {
        if let value = getenv("TMPDIR"), value.pointee != 0 { return String(cString: value) }
        return "/tmp"
    }
}

/// Buffered sequential writer that counts what it wrote.
final class BufferedOutput {
    let fd: Int32
    let path: String
    private(set) var written: Int64 = 0
    private var buffer: [UInt8] = []
    private let capacity = 1 << 20

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
        buffer.reserveCapacity(capacity)
    }

    func write(_ bytes: [UInt8]) throws {
        written += Int64(bytes.count)
        if buffer.count + bytes.count > capacity { try flush() }
        if bytes.count >= capacity {
            try bytes.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: path) }
        } else {
            buffer += bytes
        }
    }

    func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: path) }
        buffer.removeAll(keepingCapacity: true)
    }
}
