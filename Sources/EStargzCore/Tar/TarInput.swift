#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where a tar reader gets bytes from.
public protocol TarInput: AnyObject {
    /// Read up to `buffer.count` bytes; 0 only at end of input.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    /// Skip exactly `count` bytes (default implementation reads and discards; file inputs seek).
    ///
    /// Throws ``EStargzError/truncated(what:offset:needed:)`` when the input ends first;
    /// the offset in that error is relative to where the skip started.
    func skip(_ count: Int64) throws
}

extension TarInput {
    /// Reads and discards `count` bytes, 64 KiB at a time.
    public func skip(_ count: Int64) throws {
        try discard(count, from: self)
    }
}

/// Reads and discards `count` bytes from `input`; shared by the default `skip` and
/// by ``FileTarInput`` when its descriptor cannot seek.
func discard(_ count: Int64, from input: TarInput) throws {
    guard count > 0 else { return }
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    defer { scratch.deallocate() }
    var left = count
    while left > 0 {
        let want = Int(min(left, Int64(scratch.count)))
        let got = try input.read(into: UnsafeMutableRawBufferPointer(rebasing: scratch[0 ..< want]))
        if got == 0 {
            throw EStargzError.truncated(what: "tar input while skipping", offset: count - left, needed: left)
        }
        left -= Int64(got)
    }
}

#if canImport(Glibc)
private let systemRead = Glibc.read
#elseif canImport(Musl)
private let systemRead = Musl.read
#endif

/// A tar held in memory.
public final class MemoryTarInput: TarInput {
    private let bytes: [UInt8]
    private var position = 0

    /// Reads from `bytes`.
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Copies the next bytes; 0 once all have been read.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let count = min(buffer.count, bytes.count - position)
        guard count > 0 else { return 0 }
        bytes.withUnsafeBytes { all in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: all[position ..< position + count]))
        }
        position += count
        return count
    }

    /// Moves past `count` bytes without copying them.
    public func skip(_ count: Int64) throws {
        guard count >= 0 else { throw EStargzError.invalidArgument("negative skip \(count)") }
        let available = Int64(bytes.count - position)
        guard count <= available else {
            position = bytes.count
            throw EStargzError.truncated(what: "tar input while skipping", offset: available, needed: count - available)
        }
        position += Int(count)
    }
}

/// Bytes from a closure, e.g. a decompressor's output.
public final class ClosureTarInput: TarInput {
    private let readBody: (UnsafeMutableRawBufferPointer) throws -> Int

    /// Reads by calling `read`, which fills up to `buffer.count` bytes and returns 0 only at the end.
    public init(_ read: @escaping (UnsafeMutableRawBufferPointer) throws -> Int) {
        self.readBody = read
    }

    /// Calls the closure.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try readBody(buffer)
    }
}

/// A tar in a file or pipe, read through a 1 MiB buffer.
///
/// Skips use `lseek(2)` when the descriptor is seekable, so skipping a large file's
/// content costs nothing; on pipes they read and discard.
public final class FileTarInput: TarInput {
    private let descriptor: Int32
    private let ownsDescriptor: Bool
    private let path: String
    private let buffer: UnsafeMutableRawBufferPointer
    private var bufferStart = 0
    private var bufferEnd = 0
    /// Whether `lseek` works on the descriptor.
    private let seekable: Bool
    /// Size of the underlying regular file, so a seek past its end is reported as
    /// truncation instead of silently looking like a clean end of archive later.
    private let regularFileSize: Int64?

    /// Opens `path` read-only.
    public convenience init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw EStargzError.io(operation: "open", path: path, errno: errno) }
        self.init(fileDescriptor: fd, ownsDescriptor: true, path: path)
    }

    /// Reads from an open descriptor, starting at its current position; closes it on deinit
    /// when `ownsDescriptor`.
    public convenience init(fileDescriptor: Int32, ownsDescriptor: Bool) {
        self.init(fileDescriptor: fileDescriptor, ownsDescriptor: ownsDescriptor, path: "fd \(fileDescriptor)")
    }

    private init(fileDescriptor: Int32, ownsDescriptor: Bool, path: String) {
        self.descriptor = fileDescriptor
        self.ownsDescriptor = ownsDescriptor
        self.path = path
        self.buffer = .allocate(byteCount: 1 << 20, alignment: 16)
        self.seekable = lseek(fileDescriptor, 0, SEEK_CUR) >= 0
        var info = stat()
        if fstat(fileDescriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG {
            regularFileSize = Int64(info.st_size)
        } else {
            regularFileSize = nil
        }
    }

    deinit {
        buffer.deallocate()
        if ownsDescriptor { close(descriptor) }
    }

    /// Serves from the buffer, refilling it with one `read(2)` when empty.
    public func read(into destination: UnsafeMutableRawBufferPointer) throws -> Int {
        guard destination.count > 0 else { return 0 }
        if bufferStart == bufferEnd {
            // Large reads go straight to the caller; the buffer only helps small ones.
            if destination.count >= buffer.count { return try readSystem(into: destination) }
            bufferStart = 0
            bufferEnd = try readSystem(into: buffer)
            if bufferEnd == 0 { return 0 }
        }
        let count = min(destination.count, bufferEnd - bufferStart)
        destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[bufferStart ..< bufferStart + count]))
        bufferStart += count
        return count
    }

    /// Drops buffered bytes, then seeks past the rest (or reads and discards on a pipe).
    public func skip(_ count: Int64) throws {
        guard count >= 0 else { throw EStargzError.invalidArgument("negative skip \(count)") }
        let buffered = Int64(bufferEnd - bufferStart)
        if count <= buffered {
            bufferStart += Int(count)
            return
        }
        bufferStart = bufferEnd
        let rest = count - buffered
        guard seekable else { return try discard(rest, from: self) }
        let position = lseek(descriptor, off_t(rest), SEEK_CUR)
        guard position >= 0 else { throw EStargzError.io(operation: "lseek", path: path, errno: errno) }
        if let size = regularFileSize, Int64(position) > size {
            let missing = Int64(position) - size
            throw EStargzError.truncated(what: "tar input while skipping", offset: count - missing, needed: missing)
        }
    }

    private func readSystem(into destination: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let got = systemRead(descriptor, destination.baseAddress, destination.count)
            if got >= 0 { return got }
            if errno == EINTR { continue }
            throw EStargzError.io(operation: "read", path: path, errno: errno)
        }
    }
}
