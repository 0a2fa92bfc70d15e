#if canImport(Glibc)
import Glibc
#endif

/// Random access to the bytes of a blob of known size: the one seam between the
/// format and where the bytes live (a local file, memory, a registry, a cache).
///
/// Implementations may block (a registry source waits for the network); they
/// must be safe to call from several threads at once.
public protocol RandomAccessSource: Sendable {
    /// Size of the whole blob in bytes.
    var size: Int64 { get }
    /// Fill `buffer` completely with the bytes at `offset ..< offset + buffer.count`.
    /// Throws ``EStargzError/truncated(what:offset:needed:)`` when the blob ends first.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws
    /// Forgets any cached copy of `range`, so the next read fetches it again. The reader calls
    /// this when bytes failed verification: a source that caches (a registry blob) must not keep
    /// serving bytes that were damaged on the way. Sources without a cache do nothing.
    func invalidate(_ range: Range<Int64>)
    /// Says that `range` is about to be read in pieces, in order. A source that pays per request
    /// (a registry blob) can start fetching all of it at once, so the pieces wait on one round
    /// trip instead of one each; the reader calls this before a TOC that is not in the tail it
    /// read first. Sources without a cost per request do nothing.
    func willRead(_ range: Range<Int64>)
    /// A guess that `range` will be read soon (``LazyFS``'s read-ahead: the libraries of a
    /// program being loaded, the rest of a directory being read file by file). A source that pays
    /// per request starts fetching it alongside the reads that wait, never in their way, and keeps
    /// the bytes for the read that comes; nothing is verified until it is read. Sources without a
    /// cost per request do nothing.
    func readAhead(_ range: Range<Int64>)
    /// How much of the blob's end a reader opening a layer should read first, hoping it holds the
    /// footer and the whole TOC (the rest of a larger TOC is read next). 512 KiB by default; a
    /// registry source that already fetched its tail says how much it has, so opening a layer
    /// reads nothing beyond it unless the TOC needs it.
    var openingTailSize: Int64 { get }
}

extension RandomAccessSource {
    public func invalidate(_ range: Range<Int64>) {}
    public func willRead(_ range: Range<Int64>) {}
    public func readAhead(_ range: Range<Int64>) {}
    public var openingTailSize: Int64 { 512 << 10 }

    /// The `count` bytes at `offset`, as a new array.
    public func read(at offset: Int64, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        return try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            try read(into: UnsafeMutableRawBufferPointer(buffer), at: offset)
            initialized = count
        }
    }
}

/// A blob held in memory.
public struct MemorySource: RandomAccessSource {
    public let bytes: [UInt8]
    public var size: Int64 { Int64(bytes.count) }

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws {
        guard offset >= 0, offset + Int64(buffer.count) <= size else {
            throw EStargzError.truncated(what: "blob", offset: offset, needed: Int64(buffer.count))
        }
        bytes.withUnsafeBytes { all in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: all[Int(offset) ..< Int(offset) + buffer.count]))
        }
    }
}

/// A blob in a local file, read with `pread(2)`; the descriptor closes with the last copy.
public final class FileSource: RandomAccessSource {
    public let path: String
    public let size: Int64
    private let descriptor: Int32

    /// Opens `path` read-only.
    public init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw EStargzError.io(operation: "open", path: path, errno: errno) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            close(fd)
            throw EStargzError.io(operation: "fstat", path: path, errno: code)
        }
        self.path = path
        self.descriptor = fd
        self.size = Int64(info.st_size)
    }

    deinit { close(descriptor) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws {
        guard offset >= 0, offset + Int64(buffer.count) <= size else {
            throw EStargzError.truncated(what: "blob \(path)", offset: offset, needed: Int64(buffer.count))
        }
        try FileIO.preadAll(descriptor, buffer, at: offset, path: path)
    }
}
