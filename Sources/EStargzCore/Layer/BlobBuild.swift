import Dispatch

/// One gzip member (zstd:chunked: zstd frame) being compressed on a worker: its uncompressed bytes and the
/// chunks it holds (which TOC entry each belongs to, where it starts in `plain` and how long it is).
/// Without a minimum chunk size a member holds at most one chunk, at its start.
private final class MemberJob: @unchecked Sendable {
    let plain: [UInt8]
    let chunks: [MemberChunk]
    // Written by the worker before `done` is signalled, read by the producer after waiting on it.
    var compressed: [UInt8] = []
    var chunkDigests: [SHA256Digest] = []
    var failure: KernelError?
    let done = DispatchSemaphore(value: 0)

    init(plain: [UInt8], chunks: [MemberChunk]) {
        self.plain = plain
        self.chunks = chunks
    }
}

/// A chunk inside a member: its TOC entry and its uncompressed span (`start` is the entry's `innerOffset`).
private struct MemberChunk {
    var tocIndex: Int
    var start: Int
    var length: Int
}

/// The blob as it is written: the uncompressed tar stream cut into members (a member starts at
/// every chunk of every regular file; headers and padding ride in the member before), members
/// compressed in parallel and written in order, the TOC filled in as offsets become known.
///
/// With a minimum chunk size, a chunk starts a new member only once the current one holds at
/// least that many uncompressed bytes (landmarks always start one); the chunks that share a
/// member get their `innerOffset`, the reference's layout for `--estargz-min-chunk-size`.
struct BlobBuild {
    private let tar: SeekableTar
    private let output: BufferedOutput
    private let chunkSize: Int
    private let compression: LayerCompression
    private let minimumChunkSize: Int
    private let externalTOC: Bool
    private let level: Int
    private let maximumInFlight: Int
    private let queue = DispatchQueue.global(qos: .userInitiated)
    private let progress: ((Int64, Int64) -> Void)?
    private let totalBytes: Int64

    private var toc = TOC()
    private var pending: [MemberJob] = []
    private var current: [UInt8] = []
    private var currentChunks: [MemberChunk] = []
    private var diffID = SHA256Hasher()
    private var uncompressedSize: Int64 = 0
    private var contentDone: Int64 = 0
    private var lastUserName: [Int: String] = [:]
    private var lastGroupName: [Int: String] = [:]
    private var lastModTime: (seconds: Int64, text: String) = (0, "")

    init(tar: SeekableTar, output: BufferedOutput, options: LayerWriter.Options, totalBytes: Int64,
         progress: ((Int64, Int64) -> Void)?) {
        self.tar = tar
        self.output = output
        self.chunkSize = options.chunkSize
        self.compression = options.compression
        self.level = options.compression == .gzip ? options.compressionLevel : options.zstdCompressionLevel
        self.minimumChunkSize = options.minimumChunkSize
        self.externalTOC = options.externalTOC
        self.maximumInFlight = max(2, options.concurrency * 2)
        self.progress = progress
        self.totalBytes = totalBytes
    }

    mutating func appendLandmark(_ name: String) throws {
        try append(TarHeader(name: name, kind: .regular, size: 1, mode: 0), content: .bytes(Landmark.contents))
    }

    mutating func append(_ item: TarIndex.Item) throws {
        try append(item.header, content: .input(item.dataOffset))
    }

    /// Appends an entry keeping the input's bytes as they are: `raw` (everything in the input
    /// between the previous entry's content and this one's: padding, extended headers, the
    /// header) goes in place of a re-encoded header, and no padding is added after the content.
    mutating func appendLossless(_ item: TarIndex.Item, raw: [UInt8]) throws {
        try append(item.header, content: .input(item.dataOffset), raw: raw)
    }

    /// Appends the input's bytes after its last entry's content (padding, end-of-archive blocks).
    mutating func appendLosslessTail(_ raw: [UInt8]) {
        appendPlain(raw)
    }

    private enum Content {
        case input(Int64)
        case bytes([UInt8])
    }

    private mutating func append(_ header: TarHeader, content: Content, raw: [UInt8]? = nil) throws {
        var entry = TOCEntry(name: header.name, type: kind(of: header))
        entry.mode = header.mode
        entry.uid = header.uid
        entry.gid = header.gid
        entry.userName = nameIfChanged(&lastUserName, header.uid, header.userName)
        entry.groupName = nameIfChanged(&lastGroupName, header.gid, header.groupName)
        entry.modTime = modTime(header.modificationTime)
        entry.xattrs = header.xattrs
        switch header.kind {
        case .hardlink, .symlink: entry.linkName = header.linkName
        case .characterDevice, .blockDevice:
            entry.devMajor = header.devMajor
            entry.devMinor = header.devMinor
        case .regular: entry.size = header.size
        default: break
        }
        appendPlain(try raw ?? TarWriter.encodeHeader(header))
        guard header.kind == .regular else {
            toc.entries.append(entry)
            return
        }
        var fileDigest = SHA256Hasher()
        var written: Int64 = 0
        let size = header.size
        var first = true
        var firstIndex = toc.entries.count
        let startsMember = minimumChunkSize == 0 || Landmark.isLandmark(TarPath.clean(header.name))
        while written < size {
            if startsMember || current.count >= minimumChunkSize { try cutMember() }
            let remaining = size - written
            let length = Int(min(Int64(chunkSize), remaining))
            var chunk = [UInt8](repeating: 0, count: length)
            switch content {
            case let .input(offset):
                try chunk.withUnsafeMutableBytes {
                    try FileIO.preadAll(tar.fd, $0, at: offset + written, path: tar.path)
                }
            case let .bytes(bytes):
                chunk = Array(bytes[Int(written) ..< Int(written) + length])
            }
            fileDigest.update(chunk)
            var chunkEntry = first ? entry : TOCEntry(name: header.name, type: .chunk)
            chunkEntry.chunkOffset = written
            // As the reference: chunkSize is recorded unless this is a shorter, final chunk.
            chunkEntry.chunkSize = remaining >= Int64(chunkSize) ? Int64(chunkSize) : 0
            toc.entries.append(chunkEntry)
            currentChunks.append(MemberChunk(tocIndex: toc.entries.count - 1, start: current.count, length: length))
            if current.capacity < current.count + length + 4096 {  // grows geometrically when members are shared
                current.reserveCapacity(max(current.count + length + 4096, current.isEmpty ? 0 : current.capacity * 2))
            }
            appendPlain(chunk)
            written += Int64(length)
            contentDone += Int64(length)
            first = false
            progress?(contentDone, totalBytes)
        }
        if size == 0 {
            firstIndex = toc.entries.count
            toc.entries.append(entry)
        }
        toc.entries[firstIndex].digest = fileDigest.finalize().description
        if raw == nil { appendPlain([UInt8](repeating: 0, count: TarWriter.paddingLength(forContentSize: size))) }
    }

    /// Finishes the data members, writes the TOC member and the footer. With an external TOC the
    /// blob ends with the external-TOC footer instead, and the TOC member is returned in the result.
    /// `endOfArchive`: close the tar with its two zero blocks (an external TOC built from re-encoded
    /// entries; the lossless path copies the input's own).
    mutating func finish(endOfArchive: Bool = false) throws -> LayerWriter.Result {
        if endOfArchive { appendPlain(TarWriter.endOfArchive) }
        try cutMember()
        while !pending.isEmpty { try writeOldest() }
        var json = TOCJSON.encode(toc)
        let tocEntryCount = toc.entries.count
        toc = TOC()  // free the entries before the JSON is copied into the TOC member (peak memory)
        let tocDigest = SHA256Digest.of(json)
        if compression == .zstdChunked {
            // The TOC is not part of the tar stream (nor of the diffID): a skippable frame.
            let compressed = try ZstdChunkedTOC.compress(json: json, level: level)
            let end = ZstdChunkedFooter.tocAndFooter(compressedTOC: compressed, tocSize: json.count, dataEnd: output.written)
            json = []
            try output.write(end.bytes)
            try output.flush()
            return LayerWriter.Result(tocDigest: tocDigest, diffID: diffID.finalize(), uncompressedSize: uncompressedSize,
                                      compressedSize: output.written, missingPrioritizedFiles: [], tocEntryCount: tocEntryCount,
                                      annotations: end.annotations)
        }
        var tocTar = try TOCMember.tarBytes(json: json)
        json = []
        if !externalTOC {
            diffID.update(tocTar)
            uncompressedSize += Int64(tocTar.count)
        }
        let tocOffset = output.written
        let member = try tocTar.withUnsafeBytes { bytes throws(EStargzError) in
            do { return try Kernel.compressGzipMember(bytes, level: level) } catch { throw .compression("\(error)") }
        }
        tocTar = []
        if externalTOC {
            try output.write(Footer.encodeExternalTOC())
        } else {
            try output.write(member)
            try output.write(Footer.encode(tocOffset: tocOffset))
        }
        try output.flush()
        return LayerWriter.Result(tocDigest: tocDigest, diffID: diffID.finalize(), uncompressedSize: uncompressedSize,
                                  compressedSize: output.written, missingPrioritizedFiles: [], tocEntryCount: tocEntryCount,
                                  externalTOC: externalTOC ? member : nil)
    }

    private mutating func appendPlain(_ bytes: [UInt8]) {
        diffID.update(bytes)
        uncompressedSize += Int64(bytes.count)
        current += bytes
    }

    /// Ends the current member (if it has bytes) and hands it to a worker.
    private mutating func cutMember() throws {
        guard !current.isEmpty else { return }
        let job = MemberJob(plain: current, chunks: currentChunks)
        current = []
        currentChunks = []
        while pending.count >= maximumInFlight { try writeOldest() }
        pending.append(job)
        let level = self.level, compression = self.compression
        queue.async {
            job.plain.withUnsafeBytes { plain in
                job.chunkDigests = job.chunks.map {
                    SHA256Digest.of(UnsafeRawBufferPointer(rebasing: plain[$0.start ..< $0.start + $0.length]))
                }
                do throws(KernelError) { job.compressed = try compression.compress(plain, level: level) } catch { job.failure = error }
            }
            job.done.signal()
        }
    }

    private mutating func writeOldest() throws {
        let job = pending.removeFirst()
        job.done.wait()
        if let failure = job.failure { throw EStargzError.compression(failure.description) }
        for (chunk, digest) in zip(job.chunks, job.chunkDigests) {
            let index = chunk.tocIndex
            toc.entries[index].offset = output.written
            toc.entries[index].innerOffset = Int64(chunk.start)
            let text = digest.description
            // A single-chunk file's chunk digest is its file digest: share the string's storage.
            toc.entries[index].chunkDigest = toc.entries[index].digest == text ? toc.entries[index].digest : text
        }
        try output.write(job.compressed)
    }

    private func kind(of header: TarHeader) -> TOCEntry.Kind {
        switch header.kind {
        case .regular: return .regular
        case .hardlink: return .hardlink
        case .symlink: return .symlink
        case .characterDevice: return .characterDevice
        case .blockDevice: return .blockDevice
        case .directory: return .directory
        case .fifo: return .fifo
        }
    }

    /// The reference records a user or group name only when it differs from the last one seen for that id.
    private func nameIfChanged(_ last: inout [Int: String], _ id: Int, _ name: String) -> String {
        guard !name.isEmpty, last[id] != name else { return "" }
        last[id] = name
        return name
    }

    /// RFC 3339 in UTC rounded to the second, empty for the zero time, like the reference's `formatModtime`.
    private mutating func modTime(_ time: TarTimestamp) -> String {
        guard time.seconds != 0 else { return "" }
        let seconds = time.seconds + (time.nanoseconds >= 500_000_000 ? 1 : 0)
        // Layers often share one mtime: reuse the last text (one allocation instead of one per entry).
        if seconds != lastModTime.seconds { lastModTime = (seconds, RFC3339.format(seconds: seconds)) }
        return lastModTime.text
    }
}
