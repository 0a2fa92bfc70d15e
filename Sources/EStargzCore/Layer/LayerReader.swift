import Dispatch
import Synchronization

/// Reads an eStargz, legacy stargz or zstd:chunked layer through any ``RandomAccessSource``,
/// touching only the bytes it needs: the footer and TOC when it opens, then only
/// the chunks a read overlaps. Every chunk is decompressed straight into the
/// destination and its SHA-256 checked against the TOC before any byte of it is
/// returned; a mismatch is an error, never wrong bytes. The format is told by the footer.
///
/// ```swift
/// let layer = try LayerReader(source: try FileSource(path: "layer.esgz"), tocDigest: annotatedDigest)
/// let bytes = try layer.read(path: "etc/os-release")
/// ```
///
/// A reader is immutable after it opens and safe to use from many threads.
public final class LayerReader: Sendable {
    /// Limits that keep a hostile blob from exhausting memory.
    public struct Limits: Sendable {
        /// Largest compressed TOC accepted (bytes).
        public var maximumCompressedTOCSize: Int64 = 256 << 20
        /// Largest uncompressed TOC JSON accepted (bytes).
        public var maximumTOCSize: Int64 = 512 << 20
        /// Largest chunk accepted (bytes); chunks are decompressed whole into memory.
        public var maximumChunkSize: Int64 = 256 << 20
        /// Largest TOC member (its tar, per the gzip trailer) inflated whole in one pass instead
        /// of streamed: TOCs up to ~50,000 entries. Larger ones stream, so a 100,000-entry TOC
        /// (33 MB of JSON) is never whole in memory. Internal: tests move it to try both paths.
        var maximumWholeTOCSize = 16 << 20
        public init() {}
    }

    /// The blob the layer is read from.
    public let source: any RandomAccessSource
    /// SHA-256 of the TOC JSON as stored in the blob (verified against the trusted digest when one was given).
    public let tocDigest: SHA256Digest
    /// Blob offset of the TOC's gzip member (zstd:chunked: of the TOC's zstd frame; with an external TOC:
    /// of the footer, where the data ends).
    public let tocOffset: Int64
    /// Which footer the blob ends with.
    public let footerFormat: FooterFormat
    /// How the blob's chunks and TOC are compressed (told by the footer).
    public let compression: LayerCompression
    /// Number of entries in the TOC (chunk entries included).
    public let tocEntryCount: Int
    /// Whether the TOC member was inflated whole (else it was streamed); for tests and diagnostics.
    let tocWasInflatedWhole: Bool

    /// Where verified chunks are looked up first and stored after verification.
    public let cache: (any ChunkCache)?

    /// The TOC as a compact node table (see ``NodeTable``).
    let table: NodeTable
    private var chunks: [ChunkRecord] { table.chunks }
    private let counters = Counters()

    /// Opens a layer: reads the footer and the TOC (one read when the TOC is small),
    /// verifies the TOC against `tocDigest` when given, and indexes it.
    ///
    /// A blob whose footer says its TOC is external (``FooterFormat/externalTOC``) is read with
    /// `externalTOC`, the TOC image layer's bytes (a gzip member holding `stargz.index.json`),
    /// which must then hash to `tocDigest`. Without it that is ``EStargzError/externalTOCRequired``,
    /// so a caller that did not know can fetch the TOC and open again.
    public init(source: any RandomAccessSource, tocDigest expected: SHA256Digest? = nil,
                cache: (any ChunkCache)? = nil, limits: Limits = Limits(), externalTOC: [UInt8]? = nil) throws {
        self.source = source
        self.cache = cache
        let blobSize = source.size
        guard blobSize >= Int64(FooterFormat.legacyStargz.size) else {
            throw EStargzError.invalidFooter("blob of \(blobSize) bytes is smaller than any footer")
        }
        // One speculative read of the tail usually brings the footer and the whole TOC.
        let tailSize = min(blobSize, max(Int64(FooterFormat.estargz.size), source.openingTailSize))
        let tail = try source.read(at: blobSize - tailSize, count: Int(tailSize))
        if ZstdChunkedFooter.hasMagic(tail) {
            let footer = try ZstdChunkedFooter.parse(tail, blobSize: blobSize)
            guard footer.compressedTOCSize <= limits.maximumCompressedTOCSize else {
                throw EStargzError.limitExceeded("compressed TOC of \(footer.compressedTOCSize) bytes")
            }
            let (table, digest) = try ZstdChunkedTOC.loadTable(source: source, footer: footer, tail: tail,
                                                               tailStart: blobSize - tailSize, expected: expected, limits: limits)
            self.tocDigest = digest
            self.tocOffset = footer.tocOffset
            self.footerFormat = .zstdChunked
            self.compression = .zstdChunked
            self.tocEntryCount = table.entryCount
            self.table = table
            self.tocWasInflatedWhole = true
            return
        }
        let (format, tocOffset) = try Footer.parse(tail)
        if format == .externalTOC {
            guard let externalTOC else { throw EStargzError.externalTOCRequired }
            guard let expected else {
                throw EStargzError.invalidArgument("an external TOC is only accepted with the TOC digest to check it against")
            }
            guard Int64(externalTOC.count) <= limits.maximumCompressedTOCSize else {
                throw EStargzError.limitExceeded("compressed TOC of \(externalTOC.count) bytes")
            }
            let dataEnd = blobSize - Int64(format.size)
            let (table, digest, whole) = try TOCMember.loadTable(source: MemorySource(externalTOC), tocOffset: 0,
                                                                 compressedSize: Int64(externalTOC.count), tail: externalTOC,
                                                                 tailStart: 0, expected: expected, dataEnd: dataEnd, limits: limits)
            self.tocDigest = digest
            self.tocOffset = dataEnd
            self.footerFormat = format
            self.compression = .gzip
            self.tocEntryCount = table.entryCount
            self.table = table
            self.tocWasInflatedWhole = whole
            return
        }
        let tocEnd = blobSize - Int64(format.size)
        guard tocOffset >= 0, tocOffset < tocEnd else {
            throw EStargzError.invalidFooter("TOC offset \(tocOffset) is outside the blob (TOC must end at \(tocEnd))")
        }
        let compressedTOCSize = tocEnd - tocOffset
        guard compressedTOCSize <= limits.maximumCompressedTOCSize else {
            throw EStargzError.limitExceeded("compressed TOC of \(compressedTOCSize) bytes")
        }
        // Inflated whole when small, else streamed; hashed and parsed into the node table.
        let (table, digest, whole) = try TOCMember.loadTable(source: source, tocOffset: tocOffset, compressedSize: compressedTOCSize,
                                                      tail: tail, tailStart: blobSize - tailSize, expected: expected,
                                                      limits: limits)
        self.tocDigest = digest
        self.tocOffset = tocOffset
        self.footerFormat = format
        self.compression = .gzip
        self.tocEntryCount = table.entryCount
        self.table = table
        self.tocWasInflatedWhole = whole
    }

    // MARK: Looking things up

    /// The root directory.
    public var root: LayerEntry { entry(0) }

    /// The entry at `path` (relative to the layer root; a leading "/" and "./" are fine),
    /// or nil. Hardlink names resolve to the entry they link to.
    public func entry(at path: String) -> LayerEntry? {
        guard let id = table.lookup(TarPath.clean(path)) else { return nil }
        return entry(id)
    }

    /// The entry with this ``LayerEntry/id``.
    public func entry(id: Int) -> LayerEntry? {
        guard id >= 0, id < table.count else { return nil }
        return entry(id)
    }

    /// The names in directory `directory` and their entries, sorted by name (bytewise UTF-8).
    public func children(of directory: LayerEntry) -> [(name: String, entry: LayerEntry)] {
        table.children(directory.id).map { (table.name(of: $0), entry(Int($0.id))) }
    }

    /// Looks up one name in a directory.
    public func child(named name: String, of directory: LayerEntry) -> LayerEntry? {
        var name = name
        return name.withUTF8 { table.child(directory.id, named: $0) }.map { entry($0) }
    }

    /// Every entry depth-first in name order, the root first; a hardlinked node is
    /// visited once per name. `body` returns false to skip a directory's contents.
    public func walk(_ body: (_ path: String, _ entry: LayerEntry) throws -> Bool) rethrows {
        try walkPaths { path, entry in try body(String(decoding: path, as: UTF8.self), entry) }
    }

    /// ``walk(_:)`` without building a `String` per entry: `path` is the entry's path as UTF-8
    /// bytes, valid only during the call. For listings of very large layers.
    public func walkPaths(_ body: (_ path: UnsafeBufferPointer<UInt8>, _ entry: LayerEntry) throws -> Bool) rethrows {
        var path: [UInt8] = []
        path.reserveCapacity(4096)
        func visit(_ id: Int) throws {
            let keepGoing = try path.withUnsafeBufferPointer { try body($0, entry(id)) }
            guard keepGoing, table.records[id].kind == .directory else { return }
            let length = path.count
            for link in table.children(id) {
                table.withBytes(table.records[Int(link.name)].path) { full in
                    if length > 0 { path.append(UInt8(ascii: "/")) }
                    path.append(contentsOf: NodeTable.baseName(full))
                }
                try visit(Int(link.id))
                path.removeSubrange(length...)
            }
        }
        try visit(0)
    }

    @inline(__always)
    private func entry(_ id: Int) -> LayerEntry {
        LayerEntry(id: id, table: table)
    }

    // MARK: Reading

    /// Reads up to `buffer.count` bytes of the regular file `file` starting at `offset` into
    /// `buffer`; returns how many (fewer only at the end of the file). Only the chunks the range
    /// overlaps are fetched, and each is verified before any of its bytes are copied.
    public func read(_ file: LayerEntry, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        let node = table.records[file.id]
        guard node.kind == .regular else {
            throw EStargzError.wrongType(entry: table.path(file.id), expected: "reg", actual: node.kind.rawValue)
        }
        guard offset >= 0 else { throw EStargzError.invalidArgument("negative offset \(offset)") }
        let size = node.size
        guard offset < size, buffer.count > 0 else { return 0 }
        let end = min(size, offset + Int64(buffer.count))
        var index = firstChunk(of: file.id, containing: offset)
        var position = offset
        while position < end {
            let chunk = chunks[index]
            let start = Int(position - chunk.fileOffset)
            let count = Int(min(chunk.size - Int64(start), end - position))
            let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(position - offset) ..< Int(position - offset) + count])
            if start == 0 && Int64(count) == chunk.size {
                try decode(chunk, into: destination)
            } else {
                let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(chunk.size), alignment: 16)
                defer { whole.deallocate() }
                try decode(chunk, into: whole)
                destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: whole[start ..< start + count]))
            }
            position += Int64(count)
            index += 1
        }
        return Int(end - offset)
    }

    /// `count` bytes (fewer at the end of the file) of the regular file at `path` from `offset`;
    /// the whole file when `count` is nil.
    public func read(path: String, offset: Int64 = 0, count: Int? = nil) throws -> [UInt8] {
        guard let file = entry(at: path) else { throw EStargzError.notFound(path) }
        guard file.kind == .regular else {
            throw EStargzError.wrongType(entry: file.path, expected: "reg", actual: file.kind.rawValue)
        }
        let available = max(0, file.size - offset)
        let wanted = Int(min(available, Int64(count ?? Int.max)))
        guard wanted > 0 else { return [] }
        return try [UInt8](unsafeUninitializedCapacity: wanted) { buffer, initialized in
            initialized = try read(file, into: UnsafeMutableRawBufferPointer(buffer), at: offset)
        }
    }

    /// Where a file's chunks are, for callers that fetch or cache by chunk.
    public func chunks(of file: LayerEntry) -> [ChunkLocation] {
        return chunks[table.chunkRange(file.id)].map {
            location($0)
        }
    }

    /// Decompresses and verifies every chunk of the layer on `concurrency` threads.
    /// `progress` is called (from any thread) with the uncompressed bytes verified so far.
    /// Throws the first failure, naming the entry and offset.
    ///
    /// Chunks are taken in blob order, in runs of neighbours that are fetched with one read
    /// (up to ``verifyReadSize`` bytes), so a layer of many small files costs few reads.
    public func verifyAllChunks(concurrency: Int = System.activeProcessorCount,
                                progress: (@Sendable (Int64) -> Void)? = nil) throws {
        let verified = Atomic<Int64>(0)
        let failure = Mutex<(index: Int, error: any Error)?>(nil)
        let maximum = chunks.reduce(Int64(0)) { max($0, $1.size) }
        // Chunk indices in blob order, cut into runs that one read covers.
        let order = chunks.indices.sorted { chunks[$0].blobOffset < chunks[$1].blobOffset }
        var runs: [Range<Int>] = []
        var runStart = 0
        while runStart < order.count {
            let first = chunks[order[runStart]].blobOffset
            var end = runStart + 1
            while end < order.count, fetchEnd(chunks[order[end]]) - first <= Self.verifyReadSize { end += 1 }
            runs.append(runStart ..< end)
            runStart = end
        }
        let nextRun = Atomic<Int>(0)
        let runList = runs
        DispatchQueue.concurrentPerform(iterations: max(1, min(concurrency, runList.count))) { _ in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(max(1, maximum)), alignment: 16)
            var compressed = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.verifyReadSize, alignment: 16)
            defer { buffer.deallocate(); compressed.deallocate() }
            while true {
                let r = nextRun.wrappingAdd(1, ordering: .relaxed).oldValue
                guard r < runList.count, failure.withLock({ $0 == nil }) else { return }
                let run = order[runList[r]]
                let start = chunks[run.first!].blobOffset
                let end = run.reduce(start) { max($0, fetchEnd(chunks[$1])) }
                var bytes: Int64 = 0
                do {
                    if compressed.count < Int(end - start) {
                        compressed.deallocate()
                        compressed = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(end - start), alignment: 16)
                    }
                    let span = UnsafeMutableRawBufferPointer(rebasing: compressed[0 ..< Int(end - start)])
                    if cache == nil {
                        try source.read(into: span, at: start)
                        counters.bytesRead.add(end - start, ordering: .relaxed)
                    }
                    for index in run {
                        let chunk = chunks[index]
                        let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< Int(chunk.size)])
                        do {
                            if cache == nil {
                                let from = Int(chunk.blobOffset - start)
                                try decode(chunk, compressed: UnsafeRawBufferPointer(rebasing: span[from ..< from + Int(fetchEnd(chunk) - chunk.blobOffset)]),
                                           into: destination)
                            } else {
                                try decode(chunk, into: destination)
                            }
                            bytes += chunk.size
                        } catch {
                            failure.withLock { current in
                                if current == nil || current!.index > index { current = (index, error) }
                            }
                        }
                    }
                } catch {
                    // The read failed: report it against the run's first chunk.
                    let index = run.min()!
                    failure.withLock { current in
                        if current == nil || current!.index > index { current = (index, error) }
                    }
                }
                if bytes > 0 {
                    let total = verified.wrappingAdd(bytes, ordering: .relaxed).newValue
                    progress?(total)
                }
            }
        }
        if let (_, error) = failure.withLock({ $0 }) { throw error }
    }

    /// Largest read ``verifyAllChunks(concurrency:progress:)`` makes for a run of small chunks.
    static let verifyReadSize = 4 << 20

    /// Total uncompressed bytes held in chunks (the sum of all regular file sizes).
    public var totalChunkBytes: Int64 { chunks.reduce(0) { $0 + $1.size } }

    private func firstChunk(of id: Int, containing offset: Int64) -> Int {
        let range = table.chunkRange(id)
        var low = range.lowerBound, high = range.upperBound - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if chunks[mid].fileOffset <= offset { low = mid } else { high = mid - 1 }
        }
        return low
    }

    /// Fetches one chunk's compressed bytes and inflates them into `destination`
    /// (exactly `chunk.size` bytes), checking the SHA-256 in the same call.
    private func decode(_ chunk: ChunkRecord, into destination: UnsafeMutableRawBufferPointer) throws {
        if let cache, cache.lookup(table.digests[Int(chunk.digest - 1)], into: destination) {
            counters.cacheHits.add(1, ordering: .relaxed)
            return
        }
        let needed = fetchEnd(chunk) - chunk.blobOffset
        let compressed = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(needed), alignment: 16)
        defer { compressed.deallocate() }
        // A second attempt with freshly fetched bytes: a caching source may hold bytes damaged in
        // transit. Bytes that fail twice are the error; nothing unverified is ever returned.
        for attempt in 1 ... 2 {
            try source.read(into: compressed, at: chunk.blobOffset)
            counters.bytesRead.add(needed, ordering: .relaxed)
            do {
                return try decode(chunk, compressed: UnsafeRawBufferPointer(compressed), into: destination)
            } catch {
                source.invalidate(chunk.blobOffset ..< chunk.blobOffset + needed)
                if attempt == 2 { throw error }
            }
        }
    }

    /// Where fetching a chunk's bytes stops. A chunk's member runs to the next data entry's offset;
    /// but only a bounded prefix of it can be needed to produce `size` bytes (deflate expands
    /// incompressible data by a few bytes per 64 KiB), so a lying TOC cannot make us fetch or hold more.
    private func fetchEnd(_ chunk: ChunkRecord) -> Int64 {
        let produced = chunk.innerOffset + chunk.size
        return chunk.blobOffset + min(chunk.blobEnd - chunk.blobOffset, produced + produced / 256 + 64 << 10)
    }

    /// Inflates and verifies one chunk whose compressed bytes are `compressed` (from its member's start).
    private func decode(_ chunk: ChunkRecord, compressed: UnsafeRawBufferPointer,
                        into destination: UnsafeMutableRawBufferPointer) throws {
        var path: String { table.path(Int(chunk.owner)) }  // for messages only
        let expected = table.digests[Int(chunk.digest - 1)]
        var actual: SHA256Digest
        if chunk.innerOffset > 0 {
            // The member holds other entries' bytes first: decode through them, hash only the chunk.
            let inner = Int(chunk.innerOffset)
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: inner + destination.count, alignment: 16)
            defer { scratch.deallocate() }
            do {
                try compression.decodePrefix(compressed, into: scratch)
            } catch {
                counters.verificationFailures.add(1, ordering: .relaxed)
                if error.isTruncated {
                    throw EStargzError.invalidTOC("\(path): chunk at file offset \(chunk.fileOffset): innerOffset \(chunk.innerOffset) + size \(chunk.size) runs past the end of the member at blob offset \(chunk.blobOffset)")
                }
                throw EStargzError.corruptChunk(entry: path, offset: chunk.blobOffset, reason: error.description)
            }
            let bytes = UnsafeRawBufferPointer(rebasing: scratch[inner...])
            actual = SHA256Digest.of(bytes)
            if actual == expected { destination.copyMemory(from: bytes) }
        } else {
            do {
                actual = try compression.decodeChunk(compressed, into: destination)
            } catch {
                counters.verificationFailures.add(1, ordering: .relaxed)
                throw EStargzError.corruptChunk(entry: path, offset: chunk.blobOffset, reason: error.description)
            }
        }
        guard actual == expected else {
            counters.verificationFailures.add(1, ordering: .relaxed)
            throw EStargzError.chunkDigestMismatch(entry: path, chunkOffset: chunk.fileOffset,
                                                   expected: expected.description, actual: actual.description)
        }
        counters.chunksVerified.add(1, ordering: .relaxed)
        counters.bytesVerified.add(chunk.size, ordering: .relaxed)
        cache?.store(expected, UnsafeRawBufferPointer(destination))
    }

    /// What this reader has done so far.
    public var statistics: LayerReaderStatistics {
        LayerReaderStatistics(chunksVerified: counters.chunksVerified.load(ordering: .relaxed),
                              bytesVerified: counters.bytesVerified.load(ordering: .relaxed),
                              bytesRead: counters.bytesRead.load(ordering: .relaxed),
                              cacheHits: counters.cacheHits.load(ordering: .relaxed),
                              verificationFailures: counters.verificationFailures.load(ordering: .relaxed))
    }

    /// Every chunk of the layer in blob order, with the entry it belongs to; for prefetch
    /// and background fetch.
    public func allChunks() -> [(file: LayerEntry, chunk: ChunkLocation)] {
        var result = chunks.map { c -> (file: LayerEntry, chunk: ChunkLocation) in (entry(Int(c.owner)), location(c)) }
        result.sort { $0.chunk.blobOffset < $1.chunk.blobOffset }
        return result
    }

    private func location(_ c: ChunkRecord) -> ChunkLocation {
        ChunkLocation(fileOffset: c.fileOffset, size: c.size, blobOffset: c.blobOffset, blobEnd: c.blobEnd,
                      digest: table.digests[Int(c.digest - 1)])
    }

    /// End of the prioritized region: the blob offset of the `.prefetch.landmark` file's chunk,
    /// when the layer was built with prioritized files. Everything before it is worth fetching
    /// in one request right after opening.
    public var prefetchRegionEnd: Int64? {
        guard let landmark = entry(at: Landmark.prefetch), landmark.kind == .regular,
              let chunk = chunks(of: landmark).first else { return nil }
        return chunk.blobOffset
    }
}

/// The reader's counters (atomics, so reads on many threads can bump them).
private final class Counters: Sendable {
    let chunksVerified = Atomic<Int64>(0)
    let bytesVerified = Atomic<Int64>(0)
    let bytesRead = Atomic<Int64>(0)
    let cacheHits = Atomic<Int64>(0)
    let verificationFailures = Atomic<Int64>(0)
}

/// Where one chunk of a file lives in the blob and what it must hash to.
public struct ChunkLocation: Sendable, Equatable {
    /// Offset of the chunk within the file.
    public var fileOffset: Int64
    /// Uncompressed size of the chunk.
    public var size: Int64
    /// Blob offset of the gzip member (zstd:chunked: zstd frame) that starts with the chunk.
    public var blobOffset: Int64
    /// Blob offset where the next chunk's member or frame (or the TOC) starts.
    public var blobEnd: Int64
    /// SHA-256 of the chunk's uncompressed bytes.
    public var digest: SHA256Digest
}

/// Processor count without Foundation.
public enum System {
    /// Online processors (at least 1).
    public static var activeProcessorCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}

#if canImport(Glibc)
import Glibc
#endif

extension LayerReader {
    /// Nodes in TOC order (implicit directories last), for whole-layer walks such as extraction.
    func forEachNodeInTOCOrder(_ body: (_ record: NodeRecord, _ id: Int) throws -> Void) rethrows {
        for id in 0 ..< table.count { try body(table.records[id], id) }
    }
}
