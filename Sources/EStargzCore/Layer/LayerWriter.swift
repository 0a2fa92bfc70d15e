import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Converts a tar or tar.gz layer into an eStargz blob, compatible with the
/// reference's `estargz.Build`: the same TOC, landmark files and member layout
/// (every chunk of a regular file starts a new gzip member, so it can be fetched
/// and inflated on its own), with the members compressed on all cores. With
/// ``Options/compression`` `.zstdChunked` it writes zstd:chunked instead (zstd
/// frames, as the reference's `estargz/zstdchunked`); see ``LayerCompression``.
///
/// ```swift
/// let result = try LayerWriter.convert(inputPath: "layer.tar", outputPath: "layer.esgz")
/// print(result.tocDigest)   // annotate the layer with this
/// ```
///
/// Memory stays bounded whatever the layer size: the input is indexed in one pass
/// (a `.tar.gz` is first inflated to an anonymous temporary file), then read again
/// entry by entry; at most a few chunks per core are held at once.
public enum LayerWriter {
    /// How to build the blob.
    public struct Options: Sendable {
        /// Largest chunk of a regular file (bytes); default 4 MiB like the reference.
        public var chunkSize: Int = 4 << 20
        /// gzip level 1...9 (default 9 like the reference); levels map to the kernel's fastest
        /// compressor setting that is at least as small as zlib at that level.
        public var compressionLevel: Int = 9
        /// How chunks and the TOC are compressed: eStargz (gzip, the default) or zstd:chunked.
        public var compression: LayerCompression = .gzip
        /// zstd level for zstd:chunked (default 3, zstd's default; any level libzstd accepts).
        public var zstdCompressionLevel: Int = LayerCompression.zstdChunked.defaultLevel
        /// Files to put first, in this order (their parents and hardlink targets come along),
        /// followed by `.prefetch.landmark`. Empty: `.no.prefetch.landmark` goes first.
        public var prioritizedFiles: [String] = []
        /// Skip prioritized files that are not in the layer instead of failing.
        public var allowMissingPrioritizedFiles = false
        /// Compression threads.
        public var concurrency: Int = System.activeProcessorCount
        /// Where a `.tar.gz` input is inflated to (an anonymous file, gone when done).
        public var temporaryDirectory: String = FileIO.temporaryDirectory
        /// Uncompressed bytes a gzip member must hold before a chunk may start a new one
        /// (`--estargz-min-chunk-size`). 0 (default): every chunk starts its own member. Above 0,
        /// small files and chunks share members and their TOC entries carry `innerOffset`.
        /// Unlike the reference, which counts the member's compressed bytes and so compresses on
        /// one thread, this counts uncompressed bytes and keeps compressing on all cores.
        public var minimumChunkSize: Int = 0
        /// Leave the TOC out of the blob (which then ends with the external-TOC footer) and return
        /// its gzip member in ``Result/externalTOC``, for a TOC image (`--estargz-external-toc`).
        public var externalTOC = false
        /// Keep the input tar's bytes exactly (headers, padding, order, duplicates, end blocks), so
        /// the blob's uncompressed bytes and diffID are the input's (`--estargz-keep-diff-id`).
        /// Needs ``externalTOC`` (an in-blob TOC would add bytes); no prioritized files or
        /// landmarks (they reorder and add entries).
        public var keepDiffID = false

        public init() {}
    }

    /// What was built.
    public struct Result: Sendable, Equatable {
        /// SHA-256 of the TOC JSON: the `containerd.io/snapshot/stargz/toc.digest` annotation.
        public var tocDigest: SHA256Digest
        /// SHA-256 of the uncompressed blob (the layer's diffID).
        public var diffID: SHA256Digest
        /// Size of the uncompressed blob (`io.containers.estargz.uncompressed-size`).
        public var uncompressedSize: Int64
        /// Size of the blob.
        public var compressedSize: Int64
        /// Prioritized files that were not found (only with `allowMissingPrioritizedFiles`).
        public var missingPrioritizedFiles: [String]
        /// Number of TOC entries written.
        public var tocEntryCount: Int
        /// Format-specific annotations for the layer's descriptor (zstd:chunked:
        /// `io.containers.zstd-chunked.manifest-checksum` and `-position`; none for eStargz).
        public var annotations: [String: String] = [:]
        /// With ``Options/externalTOC``: the TOC as the gzip member a TOC image's layer holds
        /// (a tar with `stargz.index.json`); nil otherwise.
        public var externalTOC: [UInt8]? = nil
    }

    /// Converts the tar or tar.gz at `inputPath` into an eStargz blob at `outputPath`.
    /// The output appears only when complete; on failure nothing is left behind.
    public static func convert(inputPath: String, outputPath: String, options: Options = Options(),
                               progress: ((_ bytesDone: Int64, _ bytesTotal: Int64) -> Void)? = nil) throws -> Result {
        let input = open(inputPath, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw EStargzError.io(operation: "open", path: inputPath, errno: errno) }
        defer { close(input) }
        let partial = outputPath + ".partial"
        let output = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw EStargzError.io(operation: "create", path: partial, errno: errno) }
        var succeeded = false
        defer {
            close(output)
            if !succeeded { unlink(partial) }
        }
        let result = try convert(input: input, inputPath: inputPath, output: output, outputPath: outputPath,
                                 options: options, progress: progress)
        guard fsync(output) == 0 else { throw EStargzError.io(operation: "fsync", path: partial, errno: errno) }
        guard rename(partial, outputPath) == 0 else { throw EStargzError.io(operation: "rename", path: outputPath, errno: errno) }
        succeeded = true
        return result
    }

    /// Converts the tar or tar.gz readable from `input` (any descriptor; a plain seekable tar is
    /// read in place) into an eStargz blob written sequentially to `output`.
    public static func convert(input: Int32, inputPath: String = "input", output: Int32, outputPath: String = "output",
                               options: Options = Options(),
                               progress: ((_ bytesDone: Int64, _ bytesTotal: Int64) -> Void)? = nil) throws -> Result {
        guard options.chunkSize > 0 else { throw EStargzError.invalidArgument("chunk size must be positive") }
        let level = options.compression == .gzip ? options.compressionLevel : options.zstdCompressionLevel
        guard options.compression.levels.contains(level) else {
            throw EStargzError.invalidArgument("\(options.compression) compression level \(level) is not in \(options.compression.levels)")
        }
        guard options.minimumChunkSize >= 0 else { throw EStargzError.invalidArgument("minimum chunk size must not be negative") }
        if options.externalTOC, options.compression != .gzip {
            throw EStargzError.invalidArgument("an external TOC is an eStargz option; zstd:chunked keeps its TOC in a skippable frame")
        }
        if options.keepDiffID {
            guard options.externalTOC else { throw EStargzError.invalidArgument("keeping the diffID needs an external TOC") }
            guard options.prioritizedFiles.isEmpty else {
                throw EStargzError.invalidArgument("keeping the diffID cannot reorder entries for prioritized files")
            }
        }
        let tar = try SeekableTar.open(input, path: inputPath, temporaryDirectory: options.temporaryDirectory)
        defer { if tar.owned { close(tar.fd) } }
        if options.keepDiffID { return try convertLossless(tar, output: output, outputPath: outputPath, options: options, progress: progress) }
        var build: BlobBuild
        let missing: [String]
        do {  // the index goes out of scope (and is freed) before the TOC is encoded
            let index = try TarIndex.read(tar)
            let first: [Int], rest: [Int]
            (first, rest, missing) = try index.order(prioritized: options.prioritizedFiles,
                                                     allowMissing: options.allowMissingPrioritizedFiles)
            build = BlobBuild(tar: tar, output: BufferedOutput(fd: output, path: outputPath), options: options,
                              totalBytes: index.contentBytes, progress: progress)
            for item in first { try build.append(index.entries[item]) }
            // The reference writes the prefetch landmark whenever prioritized files were asked for.
            try build.appendLandmark(options.prioritizedFiles.isEmpty ? Landmark.noPrefetch : Landmark.prefetch)
            for item in rest { try build.append(index.entries[item]) }
        }
        var result = try build.finish(endOfArchive: options.externalTOC)
        result.missingPrioritizedFiles = missing
        return result
    }

    /// The keep-diff-id build: every input entry in input order, each preceded by the input's own
    /// bytes since the previous entry's content, and the input's tail at the end.
    private static func convertLossless(_ tar: SeekableTar, output: Int32, outputPath: String, options: Options,
                                        progress: ((Int64, Int64) -> Void)?) throws -> Result {
        let index = try TarIndex.read(tar, lossless: true)
        var build = BlobBuild(tar: tar, output: BufferedOutput(fd: output, path: outputPath), options: options,
                              totalBytes: index.contentBytes, progress: progress)
        var cursor: Int64 = 0
        func raw(upTo end: Int64) throws -> [UInt8] {
            guard end >= cursor else { throw EStargzError.invalidTar(offset: cursor, reason: "entries overlap") }
            var bytes = [UInt8](repeating: 0, count: Int(end - cursor))
            try bytes.withUnsafeMutableBytes { try FileIO.preadAll(tar.fd, $0, at: cursor, path: tar.path) }
            return bytes
        }
        for item in index.entries {
            try build.appendLossless(item, raw: try raw(upTo: item.dataOffset))
            // Only a regular file's content is copied as content; anything else a header claims rides in the next raw span.
            cursor = item.dataOffset + (item.header.kind == .regular ? item.header.size : 0)
        }
        build.appendLosslessTail(try raw(upTo: tar.size))
        return try build.finish()
    }
}

/// The input as a seekable plain tar: the descriptor itself when it is a regular file holding a
/// plain tar, else an anonymous temporary file the input was inflated or copied to.
struct SeekableTar {
    let fd: Int32
    let path: String
    let size: Int64
    let owned: Bool

    static func open(_ fd: Int32, path: String, temporaryDirectory: String) throws -> SeekableTar {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw EStargzError.io(operation: "fstat", path: path, errno: errno) }
        let isRegular = (info.st_mode & S_IFMT) == S_IFREG
        var magic = [UInt8](repeating: 0, count: 4)
        var magicCount = 0
        if isRegular {
            magicCount = pread(fd, &magic, 4, 0)
            if magicCount < 0 { throw EStargzError.io(operation: "pread", path: path, errno: errno) }
            if !(magicCount >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
                if magicCount == 4, magic == [0x28, 0xb5, 0x2f, 0xfd] {
                    throw EStargzError.invalidArgument("\(path) is zstd-compressed; decompress it first (only tar and tar.gz are accepted)")
                }
                guard lseek(fd, 0, SEEK_SET) == 0 else { throw EStargzError.io(operation: "lseek", path: path, errno: errno) }
                return SeekableTar(fd: fd, path: path, size: Int64(info.st_size), owned: false)
            }
        }
        // Not seekable, or gzip: spool the plain tar to an anonymous file.
        let spool = try FileIO.anonymousTemporaryFile(in: temporaryDirectory)
        do {
            let size = try inflateOrCopy(from: fd, path: path, to: spool)
            guard lseek(spool, 0, SEEK_SET) == 0 else { throw EStargzError.io(operation: "lseek", path: "temporary file", errno: errno) }
            return SeekableTar(fd: spool, path: path, size: size, owned: true)
        } catch {
            close(spool)
            throw error
        }
    }

    /// Copies `fd` to `spool`, inflating it when it starts like gzip (all members).
    private static func inflateOrCopy(from fd: Int32, path: String, to spool: Int32) throws -> Int64 {
        let inputBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        let outputBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { inputBuffer.deallocate(); outputBuffer.deallocate() }
        var available = try FileIO.readSome(fd, inputBuffer, path: path)
        var start = 0
        let gzip = available >= 2 && inputBuffer[0] == 0x1f && inputBuffer[1] == 0x8b
        var total: Int64 = 0
        if !gzip {
            while available > 0 {
                try FileIO.writeAll(spool, UnsafeRawBufferPointer(rebasing: inputBuffer[0 ..< available]), path: "temporary file")
                total += Int64(available)
                available = try FileIO.readSome(fd, inputBuffer, path: path)
            }
            return total
        }
        let decoder: GzipStreamDecoder
        do { decoder = try GzipStreamDecoder() } catch { throw EStargzError.compression(error.description) }
        var atMemberBoundary = false
        while true {
            if start == available {
                available = try FileIO.readSome(fd, inputBuffer, path: path)
                start = 0
                if available == 0 { break }
            }
            let step: (consumed: Int, produced: Int, memberEnded: Bool)
            do {
                step = try decoder.decode(UnsafeRawBufferPointer(rebasing: inputBuffer[start ..< available]), into: outputBuffer)
            } catch {
                throw EStargzError.invalidArgument("\(path): corrupt gzip data after \(decoder.totalOut) uncompressed bytes: \(error.description)")
            }
            start += step.consumed
            if step.produced > 0 {
                try FileIO.writeAll(spool, UnsafeRawBufferPointer(rebasing: outputBuffer[0 ..< step.produced]), path: "temporary file")
                total += Int64(step.produced)
            }
            if step.consumed > 0 || step.produced > 0 { atMemberBoundary = step.memberEnded }
        }
        guard atMemberBoundary else {
            throw EStargzError.truncated(what: "gzip stream \(path)", offset: total, needed: 1)
        }
        return total
    }
}

/// The input tar's entries (headers and content offsets), deduplicated: a later entry with
/// the same cleaned name replaces the earlier one and takes its own position, as the reference does.
struct TarIndex {
    struct Item {
        var header: TarHeader
        var dataOffset: Int64
    }

    var entries: [Item] = []
    var live: [Bool] = []
    var byName: [String: Int] = [:]
    var contentBytes: Int64 = 0

    /// `lossless`: every entry, duplicates and landmarks included (a TOC entry is an error, as
    /// the reference's `AppendTarLossLess` has it: it cannot be dropped without changing the bytes).
    static func read(_ tar: SeekableTar, lossless: Bool = false) throws -> TarIndex {
        var index = TarIndex()
        let input = try FileTarInput(fileDescriptor: tar.fd, ownsDescriptor: false)
        let reader = TarReader(input)
        while let entry = try reader.next() {
            let name = TarPath.clean(entry.header.name)
            if lossless {
                guard name != TOCMember.fileName else {
                    throw EStargzError.invalidArgument("\(tar.path) already holds \(TOCMember.fileName); it cannot be converted keeping its diffID")
                }
                guard entry.dataOffset + entry.header.size <= tar.size else {
                    throw EStargzError.truncated(what: "content of \(entry.header.name) in \(tar.path)",
                                                 offset: entry.dataOffset, needed: entry.header.size)
                }
                index.entries.append(Item(header: entry.header, dataOffset: entry.dataOffset))
                index.contentBytes += entry.header.size
                continue
            }
            if name == TOCMember.fileName || Landmark.isLandmark(name) { continue }
            guard entry.dataOffset + entry.header.size <= tar.size else {
                throw EStargzError.truncated(what: "content of \(entry.header.name) in \(tar.path)",
                                             offset: entry.dataOffset, needed: entry.header.size)
            }
            if let previous = index.byName[name] { index.live[previous] = false }
            index.byName[name] = index.entries.count
            index.entries.append(Item(header: entry.header, dataOffset: entry.dataOffset))
            index.live.append(true)
            index.contentBytes += entry.header.size
        }
        return index
    }

    /// The order entries are written in: the prioritized files (with their parents and hardlink
    /// targets, as the reference's `moveRec`) and then everything else in input order.
    func order(prioritized: [String], allowMissing: Bool) throws -> (first: [Int], rest: [Int], missing: [String]) {
        var moved = [Bool](repeating: false, count: entries.count)
        var first: [Int] = []
        var missing: [String] = []
        func move(_ rawName: String, depth: Int) throws -> Bool {
            let name = TarPath.clean(rawName)
            guard depth < 4096 else { throw EStargzError.invalidArgument("prioritized file \(rawName): link chain too deep") }
            let index = byName[name]
            if name.isEmpty {
                if let index, !moved[index] { moved[index] = true; first.append(index) }
                return true
            }
            // Parents come first when the tar has them; unlike the reference, a parent the tar only
            // implies is not an error (readers create it).
            let parent = name.utf8.lastIndex(of: UInt8(ascii: "/")).map { String(name[..<$0]) } ?? ""
            _ = try move(parent, depth: depth + 1)
            guard let index else { return false }
            if !moved[index], entries[index].header.kind == .hardlink {
                _ = try move(entries[index].header.linkName, depth: depth + 1)
            }
            if !moved[index] { moved[index] = true; first.append(index) }
            return true
        }
        for name in prioritized {
            if try !move(name, depth: 0) {
                guard allowMissing else {
                    throw EStargzError.notFound("prioritized file \(name)")
                }
                missing.append(name)
            }
        }
        let rest = entries.indices.filter { live[$0] && !moved[$0] }
        return (first, rest, missing)
    }
}
