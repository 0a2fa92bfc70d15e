import Dispatch

/// One gzip member (zstd:chunked: zstd frame) being compressed on a worker: its uncompressed bytes, and, when it
/// starts with a chunk, which TOC entry that chunk belongs to and how long it is.
private final class MemberJob: @unchecked Sendable {
    let plain: [UInt8]
    let chunkLength: Int
    let tocIndex: Int?
    // Written by the worker before `done` is signalled, read by the producer after waiting on it.
    var compressed: [UInt8] = []
    var chunkDigest: SHA256Digest?
    var failure: KernelError?
    let done = DispatchSemaphore(value: 0)

    init(plain: [UInt8], chunkLength: Int, tocIndex: Int?) {
        self.plain = plain
        self.chunkLength = chunkLength
        self.tocIndex = tocIndex
    }
}

/// The blob as it is written: the uncompressed tar stream cut into members (a member starts at
/// every chunk of every regular file; headers and padding ride in the member before), members
/// compressed in parallel and written in order, the TOC filled in as offsets become known.
struct BlobBuild {
    private let tar: SeekableTar
    private let output: BufferedOutput
    private let chunkSize: Int
    private let compression: LayerCompression
    private let level: Int
    private let maximumInFlight: Int
    private let queue = DispatchQueue.global(qos: .userInitiated)
    private let progress: ((Int64, Int64) -> Void)?
    private let totalBytes: Int64

    private var toc = TOC()
    private var pending: [MemberJob] = []
    private var current: [UInt8] = []
    private var currentChunkLength = 0
    private var currentTOCIndex: Int?
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

    private enum Content {
        case input(Int64)
        case bytes([UInt8])
    }

    private mutating func append(_ header: TarHeader, content: Content) throws {
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
        appendPlain(try TarWriter.encodeHeader(header))
        guard header.kind == .regular else {
            toc.entries.append(entry)
            return
        }
        var fileDigest = SHA256Hasher()
        var written: Int64 = 0
        let size = header.size
        // A file of one chunk has its chunk's digest, which a worker computes: no second pass here.
        let singleChunk = size > 0 && size <= Int64(chunkSize)
        var first = true
        var firstIndex = toc.entries.count
        while written < size {
            try cutMember()
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
            if !singleChunk { fileDigest.update(chunk) }
            var chunkEntry = first ? entry : TOCEntry(name: header.name, type: .chunk)
            chunkEntry.chunkOffset = written
            // As the reference: chunkSize is recorded unless this is a shorter, final chunk.
            chunkEntry.chunkSize = remaining >= Int64(chunkSize) ? Int64(chunkSize) : 0
            toc.entries.append(chunkEntry)
            currentTOCIndex = toc.entries.count - 1
            currentChunkLength = length
            current.reserveCapacity(length + 4096)
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
        if !singleChunk { toc.entries[firstIndex].digest = fileDigest.finalize().description }
        appendPlain([UInt8](repeating: 0, count: TarWriter.paddingLength(forContentSize: size)))
    }

    /// Finishes the data members, writes the TOC member and the footer.
    mutating func finish() throws -> LayerWriter.Result {
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
        diffID.update(tocTar)
        uncompressedSize += Int64(tocTar.count)
        let tocOffset = output.written
        let member = try tocTar.withUnsafeBytes { bytes throws(EStargzError) in
            do { return try Kernel.compressGzipMember(bytes, level: level) } catch { throw .compression("\(error)") }
        }
        tocTar = []
        try output.write(member)
        try output.write(Footer.encode(tocOffset: tocOffset))
        try output.flush()
        return LayerWriter.Result(tocDigest: tocDigest, diffID: diffID.finalize(), uncompressedSize: uncompressedSize,
                                  compressedSize: output.written, missingPrioritizedFiles: [], tocEntryCount: tocEntryCount)
    }

    private mutating func appendPlain(_ bytes: [UInt8]) {
        diffID.update(bytes)
        uncompressedSize += Int64(bytes.count)
        current += bytes
    }

    /// Ends the current member (if it has bytes) and hands it to a worker.
    private mutating func cutMember() throws {
        guard !current.isEmpty else { return }
        let job = MemberJob(plain: current, chunkLength: currentChunkLength, tocIndex: currentTOCIndex)
        current = []
        currentChunkLength = 0
        currentTOCIndex = nil
        while pending.count >= maximumInFlight { try writeOldest() }
        pending.append(job)
        let level = self.level, compression = self.compression
        queue.async {
            job.plain.withUnsafeBytes { plain in
                if job.chunkLength > 0 {
                    job.chunkDigest = SHA256Digest.of(UnsafeRawBufferPointer(rebasing: plain[0 ..< job.chunkLength]))
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
        if let index = job.tocIndex {
            toc.entries[index].offset = output.written
            let text = job.chunkDigest?.description ?? ""
            // A single-chunk file's chunk digest is its file digest (one string, shared storage).
            if toc.entries[index].type == .regular && toc.entries[index].size == Int64(job.chunkLength) {
                toc.entries[index].digest = text
            }
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
