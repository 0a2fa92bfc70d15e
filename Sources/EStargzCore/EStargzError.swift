/// Everything that can go wrong while reading or writing eStargz, said precisely:
/// what was wrong and where (entry name, blob offset, expected and actual digests).
public enum EStargzError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The source ended before `needed` bytes at `offset` could be read.
    case truncated(what: String, offset: Int64, needed: Int64)
    /// The blob's last bytes are neither an eStargz nor a legacy stargz footer.
    case invalidFooter(String)
    /// The TOC could not be decompressed or parsed, or it contradicts itself or the blob.
    case invalidTOC(String)
    /// The TOC JSON does not hash to the digest the caller trusts.
    case tocDigestMismatch(expected: String, actual: String)
    /// The blob's footer says its TOC is in a TOC image (`--estargz-external-toc`), and none was given.
    case externalTOCRequired
    /// A chunk decompressed fine but its SHA-256 differs from the TOC's `chunkDigest`.
    case chunkDigestMismatch(entry: String, chunkOffset: Int64, expected: String, actual: String)
    /// A chunk's compressed bytes at blob offset `offset` could not be decoded.
    case corruptChunk(entry: String, offset: Int64, reason: String)
    /// The tar stream is malformed at `offset` (an uncompressed tar offset).
    case invalidTar(offset: Int64, reason: String)
    /// A name that would escape the layer root (`..`, absolute after cleaning, NUL bytes).
    case hostilePath(String)
    /// No entry with this name in the layer.
    case notFound(String)
    /// The entry exists but is not of the kind the operation needs.
    case wrongType(entry: String, expected: String, actual: String)
    /// A system call failed.
    case io(operation: String, path: String, errno: Int32)
    /// A size or count beyond what the reader accepts (gzip bombs, absurd TOCs).
    case limitExceeded(String)
    /// The compression kernel failed (with the kernel's status text).
    case compression(String)
    /// An argument made no sense (e.g. a chunk size of zero).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .truncated(what, offset, needed):
            return "truncated \(what): needed \(needed) bytes at offset \(offset)"
        case let .invalidFooter(reason):
            return "invalid footer: \(reason)"
        case let .invalidTOC(reason):
            return "invalid TOC: \(reason)"
        case let .tocDigestMismatch(expected, actual):
            return "TOC digest mismatch: expected \(expected), got \(actual)"
        case .externalTOCRequired:
            return "the layer's TOC is external (in the image's TOC image, its tag + \"-esgztoc\"; for a local blob: --external-toc FILE) and none was given"
        case let .chunkDigestMismatch(entry, chunkOffset, expected, actual):
            return "chunk digest mismatch in \(entry) at chunk offset \(chunkOffset): expected \(expected), got \(actual)"
        case let .corruptChunk(entry, offset, reason):
            return "corrupt chunk of \(entry) at blob offset \(offset): \(reason)"
        case let .invalidTar(offset, reason):
            return "invalid tar at offset \(offset): \(reason)"
        case let .hostilePath(name):
            return "refusing hostile path \(String(reflecting: name))"
        case let .notFound(name):
            return "no such entry: \(name)"
        case let .wrongType(entry, expected, actual):
            return "\(entry): expected \(expected), found \(actual)"
        case let .io(operation, path, errno):
            return "\(operation) \(path): \(String(cString: strerror(errno)))"
        case let .limitExceeded(reason):
            return "limit exceeded: \(reason)"
        case let .compression(reason):
            return "compression error: \(reason)"
        case let .invalidArgument(reason):
            return "invalid argument: \(reason)"
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
