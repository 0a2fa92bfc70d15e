import ArgumentParser
import EStargzCore

/// Options shared by the commands that talk to registries.
///
/// Declared here, beside the local commands, because `ls` and `cat` take them too: the lite
/// `estargz` parses and validates them the same way before it hands a registry reference to
/// `estargz-remote`, which adds what turns them into a registry client.
public struct RegistryOptions: ParsableArguments, Sendable {
    @Flag(help: "Use plain HTTP for the registry (loopback registries always use it).")
    public var plainHTTP = false

    @Option(help: "The platform to choose from a multi-platform image, os/arch[/variant].")
    public var platform: String?

    @Option(help: "Keep verified chunks in this directory (shared by layers and runs; verified again on every hit).")
    public var cacheDir: String?

    @Option(help: ArgumentHelp("Give up on a request (and retry it) after this many seconds without a byte from the registry.",
                               valueName: "SECONDS"))
    public var readTimeout: Int = 120

    @Option(help: ArgumentHelp("Give up on opening a connection (and retry) after this many seconds.", valueName: "SECONDS"))
    public var connectTimeout: Int = 10

    public init() {}

    public func validate() throws {
        guard readTimeout > 0, connectTimeout > 0 else { throw ValidationError("timeouts are whole seconds above 0") }
    }
}

/// `--level`, `--chunk-size`, `--zstdchunked`, `--zstd-level` and `--estargz-min-chunk-size`, for every command that writes layers.
public struct LayerFormatOptions: ParsableArguments, Sendable {
    @Option(help: "gzip compression level, 1 (fastest) to 9 (smallest).")
    public var level: Int = 9

    @Option(help: "Largest chunk of a regular file, in bytes.")
    public var chunkSize: Int = 4 << 20

    @Flag(help: "Write zstd:chunked (zstd frames, media type application/vnd.oci.image.layer.v1.tar+zstd) instead of eStargz.")
    public var zstdchunked = false

    @Option(help: ArgumentHelp("zstd compression level for --zstdchunked (default 3; up to 22, negative is faster).",
                               valueName: "N"))
    public var zstdLevel: Int?

    @Option(name: .customLong("estargz-min-chunk-size"),
            help: ArgumentHelp("Let small files and chunks share a gzip member until it holds BYTES of uncompressed data (entries get innerOffset; smaller blob, fewer members). 0: one member per chunk.",
                               valueName: "BYTES"))
    public var minimumChunkSize: Int = 0

    public init() {}

    public func validate() throws {
        guard minimumChunkSize >= 0 else { throw ValidationError("--estargz-min-chunk-size must not be negative") }
        if zstdLevel != nil && !zstdchunked { throw ValidationError("--zstd-level needs --zstdchunked") }
        if zstdchunked, let zstdLevel, !LayerCompression.zstdChunked.levels.contains(zstdLevel) {
            throw ValidationError("--zstd-level \(zstdLevel) is not in \(LayerCompression.zstdChunked.levels)")
        }
    }

    /// The format the layers are written in.
    public var compression: LayerCompression { zstdchunked ? .zstdChunked : .gzip }

    /// Sets the writer's format, compression level and chunk size from these options.
    public func apply(to options: inout LayerWriter.Options) {
        options.compressionLevel = level
        options.chunkSize = chunkSize
        options.compression = compression
        if let zstdLevel { options.zstdCompressionLevel = zstdLevel }
        options.minimumChunkSize = minimumChunkSize
    }
}
