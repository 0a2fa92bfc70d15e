/// How a layer blob is compressed: the one thing eStargz and zstd:chunked differ in.
///
/// Both formats cut the uncompressed tar stream the same way (every chunk of a regular file
/// starts a new compressed unit, so it can be fetched and decompressed on its own) and carry the
/// same TOC JSON. They differ only in
///
/// - how a unit is compressed: a gzip member, or an independent zstd frame;
/// - how the TOC is stored: a gzip member holding a tar of `stargz.index.json`, or the bare JSON
///   as a zstd frame inside a zstd skippable frame (so it is not part of the layer's tar stream);
/// - how the footer points at the TOC: ``Footer`` (51 bytes, itself an empty gzip member) or
///   ``ZstdChunkedFooter`` (a 48-byte skippable frame).
///
/// `LayerWriter`, `LayerReader`, the caches and everything above them are shared; they ask this
/// type for the few format-specific steps. It plays the part of the Go reference's
/// `Compressor`/`Decompressor` interfaces (`estargz/gzip.go`, `estargz/zstdchunked`).
public enum LayerCompression: String, Sendable, Equatable, CaseIterable, CustomStringConvertible {
    /// eStargz (gzip members, TOC in a gzip member, the eStargz footer). Also legacy stargz when reading.
    case gzip
    /// zstd:chunked (zstd frames, TOC in a skippable frame, the zstd:chunked footer), as the Go
    /// reference's `estargz/zstdchunked` writes it and containers/storage reads it.
    case zstdChunked

    /// The OCI media type of a layer in this format.
    public var mediaType: String {
        switch self {
        case .gzip: return "application/vnd.oci.image.layer.v1.tar+gzip"
        case .zstdChunked: return "application/vnd.oci.image.layer.v1.tar+zstd"
        }
    }

    /// The compression level used when none is given: gzip 9 (the reference's
    /// `gzip.BestCompression`), zstd 3 (zstd's default, what the reference's `zstd.SpeedDefault` aims at).
    public var defaultLevel: Int {
        switch self {
        case .gzip: return 9
        case .zstdChunked: return 3
        }
    }

    /// The levels accepted: gzip 1...9; zstd whatever libzstd allows (1...22, and negative levels
    /// that trade size for speed).
    public var levels: ClosedRange<Int> {
        switch self {
        case .gzip: return 1 ... 9
        case .zstdChunked: return Kernel.zstdLevels
        }
    }

    /// The name users type and see: `estargz` or `zstd:chunked`.
    public var description: String {
        switch self {
        case .gzip: return "estargz"
        case .zstdChunked: return "zstd:chunked"
        }
    }

    // MARK: Chunks

    /// One complete, independently decodable unit (gzip member or zstd frame) holding `plain`.
    func compress(_ plain: UnsafeRawBufferPointer, level: Int) throws(KernelError) -> [UInt8] {
        switch self {
        case .gzip: return try Kernel.compressGzipMember(plain, level: level)
        case .zstdChunked: return try Kernel.zstdCompress(plain, level: level)
        }
    }

    /// Decodes the unit at the start of `compressed` until `destination` is full, hashing the
    /// bytes in the same pass; returns their SHA-256 (the caller compares it with the TOC's).
    @inline(__always)
    func decodeChunk(_ compressed: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer)
        throws(KernelError) -> SHA256Digest
    {
        switch self {
        case .gzip: return try Kernel.inflateChunk(compressed, into: destination, expecting: nil)
        case .zstdChunked: return try Kernel.zstdDecompressChunk(compressed, into: destination, expecting: nil)
        }
    }

    /// Decodes the unit at the start of `compressed` until `destination` is full, without checking
    /// anything: for a chunk that starts `innerOffset` bytes into its unit, whose caller hashes only
    /// the chunk's part. Throws `isTruncated` when the unit ends first.
    func decodePrefix(_ compressed: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) throws(KernelError) {
        switch self {
        case .gzip: try Kernel.inflatePrefix(compressed, into: destination)
        case .zstdChunked: _ = try Kernel.zstdDecompressChunk(compressed, into: destination, expecting: nil)
        }
    }
}

extension FooterFormat {
    /// The compression of a blob that ends with this footer.
    public var compression: LayerCompression {
        switch self {
        case .estargz, .legacyStargz, .externalTOC: return .gzip
        case .zstdChunked: return .zstdChunked
        }
    }
}
