import CStargzKernel
import Dispatch

// The only Swift file that calls the C kernel (`CStargzKernel`). Everything
// else in the package goes through the types below, so the C API can change
// without touching readers and writers.

// MARK: - SHA-256 digest

/// A SHA-256 digest; text form `"sha256:<64 lowercase hex>"` (OCI digest syntax).
public struct SHA256Digest: Hashable, Sendable, CustomStringConvertible {
    // The 32 digest bytes in memory order, as four native-endian words
    // (cheap to hash and compare; `withUnsafeBytes` yields the raw bytes).
    private var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    /// Builds a digest from exactly 32 raw bytes.
    init(rawBytes bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == 32, "a SHA-256 digest has 32 bytes")
        w0 = bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
        w1 = bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        w2 = bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        w3 = bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
    }

    /// Parses `"sha256:"` followed by exactly 64 lowercase hex digits; anything else is `nil`.
    public init?(parsing text: String) {
        var text = text
        // Parsed without allocating: TOCs hold one digest per chunk.
        let parsed = text.withUTF8 { utf8 -> SHA256Digest? in
            guard utf8.count == 71, utf8[0] == UInt8(ascii: "s"), utf8[1] == UInt8(ascii: "h"),
                  utf8[2] == UInt8(ascii: "a"), utf8[3] == UInt8(ascii: "2"), utf8[4] == UInt8(ascii: "5"),
                  utf8[5] == UInt8(ascii: "6"), utf8[6] == UInt8(ascii: ":") else { return nil }
            var raw = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
            let ok = Swift.withUnsafeMutableBytes(of: &raw) { out -> Bool in
                for i in 0..<32 {
                    guard let hi = Self.nibble(utf8[7 + 2 * i]), let lo = Self.nibble(utf8[8 + 2 * i]) else { return false }
                    out[i] = hi << 4 | lo
                }
                return true
            }
            guard ok else { return nil }
            return Swift.withUnsafeBytes(of: &raw) { SHA256Digest(rawBytes: $0) }
        }
        guard let parsed else { return nil }
        self = parsed
    }

    @inline(__always)
    private static func nibble(_ c: UInt8) -> UInt8? {
        let digit = c &- UInt8(ascii: "0"), letter = c &- UInt8(ascii: "a")
        if digit < 10 { return digit }
        if letter < 6 { return letter &+ 10 }
        return nil
    }

    /// The SHA-256 of `bytes`.
    public static func of(_ bytes: UnsafeRawBufferPointer) -> SHA256Digest {
        var raw = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &raw) { out in
            sgk_sha256(bytes.baseAddress, bytes.count, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return Swift.withUnsafeBytes(of: &raw) { SHA256Digest(rawBytes: $0) }
    }

    /// The SHA-256 of `bytes`.
    public static func of(_ bytes: [UInt8]) -> SHA256Digest {
        bytes.withUnsafeBytes { of($0) }
    }

    /// Calls `body` with the 32 raw digest bytes.
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var raw = (w0, w1, w2, w3)
        return try Swift.withUnsafeBytes(of: &raw, body)
    }

    /// The 32 raw digest bytes.
    var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// The digest as 64 lowercase hex digits, without the `sha256:` prefix.
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        return withUnsafeBytes { raw in
            String(unsafeUninitializedCapacity: 64) { out in
                for (i, b) in raw.enumerated() {
                    out[2 * i] = digits[Int(b >> 4)]
                    out[2 * i + 1] = digits[Int(b & 15)]
                }
                return 64
            }
        }
    }

    /// The OCI text form, `"sha256:<hex>"`.
    public var description: String { "sha256:" + hex }
}

// MARK: - Incremental hashing

/// Incremental SHA-256: feed bytes with `update`, then `finalize`.
///
/// A value type: copying a hasher mid-way forks the computation.
public struct SHA256Hasher: Sendable {
    // `sgk_sha256_ctx` is plain bytes (no pointers to owned memory; the block
    // function pointer inside refers to static code), so copies are independent
    // and the imported struct is Sendable as is.
    private var ctx = sgk_sha256_ctx()

    /// A hasher with nothing hashed yet.
    public init() {
        sgk_sha256_init(&ctx)
    }

    /// Hashes `bytes` after everything hashed so far.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        sgk_sha256_update(&ctx, bytes.baseAddress, bytes.count)
    }

    /// Hashes `bytes` after everything hashed so far.
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The digest of everything hashed; the hasher then starts over empty.
    public mutating func finalize() -> SHA256Digest {
        var raw = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &raw) { out in
            sgk_sha256_final(&ctx, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        sgk_sha256_init(&ctx)
        return Swift.withUnsafeBytes(of: &raw) { SHA256Digest(rawBytes: $0) }
    }
}

/// A SHA-256 computed on another thread while the caller goes on with the same bytes (the TOC
/// JSON is hashed while it is parsed: the two cores share the load).
///
/// The bytes must stay valid and unchanged until ``wait()`` returns, and `wait()` must be called
/// before they are freed, also on error paths.
final class BackgroundSHA256: @unchecked Sendable {
    // `digest` is written by the worker before `done` is signalled and read after it is waited
    // for, so the semaphore orders the two accesses.
    private let done = DispatchSemaphore(value: 0)
    private var digest: SHA256Digest?

    /// Starts hashing `bytes` on a global queue.
    init(_ bytes: UnsafeRawBufferPointer) {
        let start = bytes.baseAddress.map { UInt(bitPattern: $0) } ?? 0
        let count = bytes.count
        DispatchQueue.global().async { [self] in
            digest = SHA256Digest.of(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: start), count: count))
            done.signal()
        }
    }

    /// The digest, once the worker has it.
    func wait() -> SHA256Digest {
        done.wait()
        return digest!
    }
}

// MARK: - Errors

/// A failure in the C kernel: the status code and its text.
struct KernelError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The `sgk_status` code (negative).
    var status: Int32
    /// The kernel's text for `status`.
    var description: String

    init(status: Int32) {
        self.status = status
        self.description = String(cString: sgk_status_string(status))
    }

    /// The produced bytes did not hash to the expected digest.
    var isDigestMismatch: Bool { status == SGK_ERR_DIGEST.rawValue }
    /// The input ended before the requested output was produced.
    var isTruncated: Bool { status == SGK_ERR_TRUNCATED.rawValue }
    /// The input is not gzip/zstd or its compressed data is corrupt.
    var isFormat: Bool { status == SGK_ERR_FORMAT.rawValue }
    /// The output buffer was too small (e.g. a zstd frame larger than expected).
    var isSpace: Bool { status == SGK_ERR_SPACE.rawValue }

    /// Throws unless `status` is `SGK_OK`.
    @inline(__always)
    static func check(_ status: Int32) throws(KernelError) {
        if status != SGK_OK.rawValue { throw KernelError(status: status) }
    }
}

// MARK: - One-shot kernel jobs

/// The C kernel's one-shot jobs: chunk inflate with verification, gzip and zstd
/// compression, and fast non-cryptographic hashes.
enum Kernel {
    /// Inflates the gzip member at the start of `source` into all of `destination`;
    /// verifies against `expected` when given; returns the digest of the produced bytes.
    ///
    /// The member may hold more bytes than `destination` (tar padding and following
    /// headers); they are not produced. `source` may extend past the member, but
    /// passing exactly the member's span lets the kernel use its fastest path.
    /// - Throws: `KernelError` — truncated input, corrupt data, or a digest mismatch
    ///   (then `destination` holds unverified bytes that must not be used).
    static func inflateChunk(
        _ source: UnsafeRawBufferPointer,
        into destination: UnsafeMutableRawBufferPointer,
        expecting expected: SHA256Digest?
    ) throws(KernelError) -> SHA256Digest {
        try verifiedDecode(sgk_chunk_inflate, source, into: destination, expecting: expected)
    }

    /// A kernel entry point that decodes a chunk into `dst` hashing it in the same pass
    /// (`sgk_chunk_inflate`, `sgk_zstd_chunk_decompress`: one C signature).
    private typealias ChunkDecoder = @convention(c) (
        UnsafePointer<UInt8>?, Int, UnsafeMutablePointer<UInt8>?, Int, UnsafePointer<UInt8>?, UnsafeMutablePointer<UInt8>?
    ) -> Int32

    /// Calls `decode` with the buffers and the optional expected digest; returns the produced bytes' digest.
    @inline(__always)
    private static func verifiedDecode(
        _ decode: ChunkDecoder,
        _ source: UnsafeRawBufferPointer,
        into destination: UnsafeMutableRawBufferPointer,
        expecting expected: SHA256Digest?
    ) throws(KernelError) -> SHA256Digest {
        var actual = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let status: Int32 = withUnsafeMutableBytes(of: &actual) { act in
            let actPtr = act.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let src = source.baseAddress?.assumingMemoryBound(to: UInt8.self)
            let dst = destination.baseAddress?.assumingMemoryBound(to: UInt8.self)
            if let expected {
                return expected.withUnsafeBytes { exp in
                    decode(src, source.count, dst, destination.count, exp.baseAddress!.assumingMemoryBound(to: UInt8.self), actPtr)
                }
            }
            return decode(src, source.count, dst, destination.count, nil, actPtr)
        }
        try KernelError.check(status)
        return Swift.withUnsafeBytes(of: &actual) { SHA256Digest(rawBytes: $0) }
    }

    /// Inflates the gzip member at the start of `source` into all of `destination`, without
    /// hashing: for a chunk that starts `innerOffset` bytes into its member, the caller hashes
    /// only the chunk's part. Throws `isTruncated` when the member ends first.
    static func inflatePrefix(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) throws(KernelError) {
        try KernelError.check(sgk_chunk_inflate(source.baseAddress?.assumingMemoryBound(to: UInt8.self), source.count,
                                                destination.baseAddress?.assumingMemoryBound(to: UInt8.self), destination.count,
                                                nil, nil))
    }

    /// Inflates the one gzip member that is exactly `source` into exactly all of `destination`
    /// (libdeflate, one pass), checking the trailer's CRC-32 and ISIZE.
    ///
    /// For members small enough to hold whole (the TOC): `destination` is sized from the
    /// trailer's ISIZE, which the caller bounds first, since a hostile trailer may lie.
    /// - Throws: `KernelError` — `isSpace` if the member holds more bytes than `destination`,
    ///   `isTruncated` if fewer, `isFormat` if it is corrupt, its trailer does not match, or
    ///   bytes follow it (then `destination` holds unchecked bytes that must not be used).
    static func inflateGzipMember(_ source: UnsafeRawBufferPointer,
                                  into destination: UnsafeMutableRawBufferPointer) throws(KernelError) {
        try KernelError.check(sgk_gzip_member_inflate(
            source.baseAddress?.assumingMemoryBound(to: UInt8.self), source.count,
            destination.baseAddress?.assumingMemoryBound(to: UInt8.self), destination.count))
    }

    /// One complete gzip member (standard 10-byte header) holding `source`,
    /// compressed at `level` 1...12 (9 is the eStargz default).
    static func compressGzipMember(_ source: UnsafeRawBufferPointer, level: Int) throws(KernelError) -> [UInt8] {
        guard (1...12).contains(level) else { throw KernelError(status: SGK_ERR_ARGUMENT.rawValue) }
        let bound = sgk_gzip_member_bound(source.count)
        var status: Int32 = 0
        let out = [UInt8](unsafeUninitializedCapacity: bound) { buf, count in
            var n = 0
            status = sgk_gzip_member_compress(source.baseAddress?.assumingMemoryBound(to: UInt8.self), source.count,
                                              Int32(level), buf.baseAddress, bound, &n)
            count = status == SGK_OK.rawValue ? n : 0
        }
        try KernelError.check(status)
        return out
    }

    /// One zstd frame holding `source`, at zstd `level` (e.g. 3 is zstd's default).
    static func zstdCompress(_ source: UnsafeRawBufferPointer, level: Int) throws(KernelError) -> [UInt8] {
        guard let lvl = Int32(exactly: level) else { throw KernelError(status: SGK_ERR_ARGUMENT.rawValue) }
        let bound = sgk_zstd_bound(source.count)
        var status: Int32 = 0
        let out = [UInt8](unsafeUninitializedCapacity: bound) { buf, count in
            var n = 0
            status = sgk_zstd_compress(source.baseAddress?.assumingMemoryBound(to: UInt8.self), source.count,
                                       lvl, buf.baseAddress, bound, &n)
            count = status == SGK_OK.rawValue ? n : 0
        }
        try KernelError.check(status)
        return out
    }

    /// Decodes the one zstd frame that is exactly `source` into exactly all of `destination`
    /// (the frame's checksum, when it has one, is checked).
    /// - Throws: `KernelError` with `isSpace` if the frame holds more bytes (decoding stops at the
    ///   first byte too many, so a zstd bomb costs nothing), `isTruncated` if fewer (or the input
    ///   ends early), `isFormat` if corrupt or bytes follow the frame.
    static func zstdDecompress(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) throws(KernelError) {
        try KernelError.check(sgk_zstd_decompress(
            source.baseAddress?.assumingMemoryBound(to: UInt8.self), source.count,
            destination.baseAddress?.assumingMemoryBound(to: UInt8.self), destination.count))
    }

    /// Decodes the zstd frame at the start of `source` until all of `destination` is filled,
    /// hashing block by block as it goes; verifies against `expected` when given; returns the
    /// digest of the produced bytes. The zstd twin of ``inflateChunk(_:into:expecting:)``.
    ///
    /// The frame may hold more bytes than `destination` (tar padding and following headers);
    /// they are neither produced nor buffered.
    /// - Throws: `KernelError` — truncated input, not zstd or corrupt, or a digest mismatch
    ///   (then `destination` holds unverified bytes that must not be used).
    static func zstdDecompressChunk(
        _ source: UnsafeRawBufferPointer,
        into destination: UnsafeMutableRawBufferPointer,
        expecting expected: SHA256Digest?
    ) throws(KernelError) -> SHA256Digest {
        try verifiedDecode(sgk_zstd_chunk_decompress, source, into: destination, expecting: expected)
    }

    /// The content size the zstd frame header at the start of `source` declares (nil: not said).
    /// - Throws: `KernelError` — `isFormat` if `source` does not start with a zstd frame header,
    ///   `isTruncated` if it ends inside one.
    static func zstdFrameContentSize(_ source: UnsafeRawBufferPointer) throws(KernelError) -> UInt64? {
        var size: UInt64 = 0
        try KernelError.check(sgk_zstd_frame_content_size(source.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                                          source.count, &size))
        return size == .max ? nil : size
    }

    /// The zstd compression levels libzstd accepts.
    static var zstdLevels: ClosedRange<Int> {
        var low: Int32 = 0, high: Int32 = 0
        _ = sgk_zstd_level_range(&low, &high)
        return Int(low) ... Int(high)
    }

    /// Length of the gzip member header (RFC 1952, optional fields included) at the start of `source`.
    static func gzipHeaderLength(_ source: UnsafeRawBufferPointer) throws(KernelError) -> Int {
        var n = 0
        try KernelError.check(sgk_gzip_header_length(source.baseAddress?.assumingMemoryBound(to: UInt8.self), source.count, &n))
        return n
    }

    /// Hints that the cache line at `pointer` will be read and written soon (no effect on results).
    @inline(__always)
    static func prefetch(_ pointer: UnsafeRawPointer) {
        sgk_prefetch(pointer)
    }

    /// XXH64 of `bytes` with `seed`.
    static func xxh64(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        sgk_xxh64(bytes.baseAddress, bytes.count, seed)
    }

    /// XXH3 (64-bit) of `bytes`.
    static func xxh3(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        sgk_xxh3_64(bytes.baseAddress, bytes.count)
    }

    /// Which backends run on this machine (for `--version`-style diagnostics).
    static var implementations: (sha256: String, inflate: String, deflate: String, zstd: String) {
        (String(cString: sgk_sha256_implementation()),
         String(cString: sgk_inflate_implementation()),
         String(cString: sgk_deflate_implementation()),
         "libzstd " + String(cString: sgk_zstd_implementation()))
    }
}

// MARK: - Streaming gzip

/// Streaming decoder of concatenated gzip members (.tar.gz input, whole-blob scans).
///
/// Not `Sendable`: it owns mutable decoder state; use one per task.
final class GzipStreamDecoder {
    private let inflater: OpaquePointer

    /// A decoder positioned before the first member.
    init() throws(KernelError) {
        guard let f = sgk_inflater_new() else { throw KernelError(status: SGK_ERR_NOMEM.rawValue) }
        inflater = f
    }

    deinit { sgk_inflater_free(inflater) }

    /// Consumes some of `input` and produces some into `output`.
    ///
    /// `memberEnded` is true when a member ended exactly at the end of the consumed
    /// input and no partial member is pending; call again with more input to continue
    /// with the next member (or stop, if the input has ended). Members are checked
    /// against their CRC-32 and length trailers. Damage found after some bytes were
    /// consumed or produced is thrown by the *next* call, so the intact bytes before
    /// it are delivered first; the decoder then keeps throwing.
    func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(KernelError)
        -> (consumed: Int, produced: Int, memberEnded: Bool)
    {
        var used = 0, made = 0
        var end: Int32 = 0
        try KernelError.check(sgk_inflater_step(
            inflater,
            input.baseAddress?.assumingMemoryBound(to: UInt8.self), input.count, &used,
            output.baseAddress?.assumingMemoryBound(to: UInt8.self), output.count, &made,
            &end))
        return (used, made, end != 0)
    }

    /// Total uncompressed bytes produced so far.
    var totalOut: UInt64 { sgk_inflater_total_out(inflater) }
}

// MARK: - Streaming zstd

/// A decoder of a compressed stream fed piece by piece (gzip members or zstd frames).
protocol StreamDecoder: AnyObject {
    /// Consumes some of `input` and produces some into `output`; `memberEnded` is true when a
    /// member or frame ended exactly at the end of the consumed input.
    func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(KernelError)
        -> (consumed: Int, produced: Int, memberEnded: Bool)
    /// Total uncompressed bytes produced so far.
    var totalOut: UInt64 { get }
}

extension GzipStreamDecoder: StreamDecoder {}

/// Streaming decoder of concatenated zstd frames (.tar.zst input, whole zstd:chunked blobs);
/// skippable frames are skipped. The zstd twin of ``GzipStreamDecoder``.
final class ZstdStreamDecoder: StreamDecoder {
    private let stream: OpaquePointer

    /// A decoder positioned before the first frame.
    init() throws(KernelError) {
        guard let s = sgk_zstd_stream_new() else { throw KernelError(status: SGK_ERR_NOMEM.rawValue) }
        stream = s
    }

    deinit { sgk_zstd_stream_free(stream) }

    func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(KernelError)
        -> (consumed: Int, produced: Int, memberEnded: Bool)
    {
        var used = 0, made = 0
        var end: Int32 = 0
        try KernelError.check(sgk_zstd_stream_step(
            stream,
            input.baseAddress?.assumingMemoryBound(to: UInt8.self), input.count, &used,
            output.baseAddress?.assumingMemoryBound(to: UInt8.self), output.count, &made,
            &end))
        return (used, made, end != 0)
    }

    var totalOut: UInt64 { sgk_zstd_stream_total_out(stream) }
}
