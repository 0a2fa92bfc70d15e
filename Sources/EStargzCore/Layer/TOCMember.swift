/// The TOC's place in the blob: one gzip member holding a tar with a single regular
/// file `stargz.index.json` (the TOC JSON) and the end-of-archive blocks, right
/// before the footer.
enum TOCMember {
    static let fileName = "stargz.index.json"

    /// The uncompressed tar bytes of the TOC member for `json`.
    static func tarBytes(json: [UInt8]) throws -> [UInt8] {
        var header = TarHeader(name: fileName, kind: .regular, size: Int64(json.count), mode: 0)
        header.modificationTime = TarTimestamp(seconds: 0)
        var bytes = try TarWriter.encodeHeader(header)
        bytes += json
        bytes += [UInt8](repeating: 0, count: TarWriter.paddingLength(forContentSize: Int64(json.count)))
        bytes += TarWriter.endOfArchive
        return bytes
    }

    /// Decompresses the TOC member and returns the JSON bytes, refusing more than `limit` of them.
    static func decompressJSON(_ member: [UInt8], limit: Int64) throws -> [UInt8] {
        var given = false
        let (reader, size) = try openJSON(compressedSize: Int64(member.count), limit: limit) {
            defer { given = true }
            return given ? [] : member
        }
        return try [UInt8](unsafeUninitializedCapacity: Int(size)) { buffer, initialized in
            while initialized < Int(size) {
                let n = try reader.readContent(into: UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: buffer[initialized...])))
                guard n > 0 else { throw EStargzError.invalidTOC("TOC JSON ends after \(initialized) of \(size) bytes") }
                initialized += n
            }
        }
    }

    /// Inflates the member from its compressed bytes, handed over in order by `nextPiece` (empty
    /// at the end), and positions a tar reader at the JSON's content: the member must hold one
    /// regular file named ``fileName`` of at most `limit` bytes. Returns the reader and the size.
    private static func openJSON(compressedSize: Int64, limit: Int64,
                                 nextPiece: @escaping () throws -> [UInt8]) throws -> (TarReader, Int64) {
        let decoder: GzipStreamDecoder
        do { decoder = try GzipStreamDecoder() } catch { throw EStargzError.compression(error.description) }
        var piece = [UInt8]()
        var used = 0
        var finished = false
        let input = ClosureTarInput { output in
            guard !finished else { return 0 }
            while true {
                if used == piece.count {
                    piece = try nextPiece()
                    used = 0
                    if piece.isEmpty { throw EStargzError.invalidTOC("TOC member is truncated") }
                }
                let step: (consumed: Int, produced: Int, memberEnded: Bool)
                do {
                    step = try piece.withUnsafeBytes { all in
                        try decoder.decode(UnsafeRawBufferPointer(rebasing: all[used...]), into: output)
                    }
                } catch {
                    throw EStargzError.invalidTOC("TOC member does not decompress: \(error)")
                }
                used += step.consumed
                if step.memberEnded { finished = true }
                if step.produced > 0 || finished { return step.produced }
                if step.consumed == 0 && used < piece.count {
                    throw EStargzError.invalidTOC("TOC member is truncated")
                }
            }
        }
        let reader = TarReader(input)
        return (reader, try jsonSize(of: try reader.next(), compressedSize: compressedSize, limit: limit))
    }

    /// The JSON's size from the member's first tar entry, which must be one regular file named
    /// ``fileName`` of at most `limit` bytes that `compressedSize` bytes can plausibly hold.
    private static func jsonSize(of first: TarEntry?, compressedSize: Int64, limit: Int64) throws -> Int64 {
        guard let first else {
            throw EStargzError.invalidTOC("TOC member holds no tar entry")
        }
        guard TarPath.clean(first.header.name) == fileName, first.header.kind == .regular else {
            throw EStargzError.invalidTOC("TOC tar entry is \(String(reflecting: first.header.name)), expected \(fileName)")
        }
        let size = first.header.size
        guard size <= limit else {
            throw EStargzError.limitExceeded("TOC JSON of \(size) bytes (limit \(limit))")
        }
        // Deflate expands at most 1032:1: a small member cannot honestly claim a huge TOC, so
        // nothing is allocated or parsed for more than its bytes can produce.
        guard size <= compressedSize * 1032 + 4096 else {
            throw EStargzError.invalidTOC("TOC JSON of \(size) bytes cannot come from a \(compressedSize)-byte member")
        }
        return size
    }
}

extension TOCMember {
    /// Reads the TOC member at `tocOffset` (`compressedSize` bytes), inflates it, hashes the JSON
    /// and parses it into the reader's node table. Bytes already fetched (`tail`, which starts at
    /// blob offset `tailStart` and always holds the member's trailer) are not read again.
    ///
    /// A member whose trailer says it holds at most `limits.maximumWholeTOCSize` bytes is inflated whole
    /// in one libdeflate pass (CRC-32 and size checked) and parsed in place; anything else, and
    /// any member that fails on that path, goes through the streaming path, which reads, inflates
    /// (zlib), hashes and parses piece by piece and is the one that names what is wrong.
    ///
    /// When `expected` is given and the JSON does not hash to it, that is the error, even if the
    /// JSON is also malformed (the rest of it is still hashed to tell). `whole` tells which path
    /// built the table.
    /// `dataEnd`: where the layer's data members end, when that is not `tocOffset` (an external TOC).
    static func loadTable(source: any RandomAccessSource, tocOffset: Int64, compressedSize: Int64,
                          tail: [UInt8], tailStart: Int64, expected: SHA256Digest?, dataEnd: Int64? = nil,
                          limits: LayerReader.Limits) throws -> (table: NodeTable, digest: SHA256Digest, whole: Bool) {
        var tail = tail, tailStart = tailStart
        if let size = wholeSize(compressedSize: compressedSize, trailerAt: tocOffset + compressedSize - 4 - tailStart,
                                in: tail, limit: limits.maximumWholeTOCSize) {
            if tocOffset < tailStart {
                // One read for the part of the member before the tail (which holds the rest).
                var member = try source.read(at: tocOffset, count: Int(tailStart - tocOffset))
                member += tail[0 ..< Int(tocOffset + compressedSize - tailStart)]
                tail = member
                tailStart = tocOffset
            }
            let start = Int(tocOffset - tailStart)
            if let loaded = try tail.withUnsafeBytes({ all in
                try loadWhole(UnsafeRawBufferPointer(rebasing: all[start ..< start + Int(compressedSize)]), size: size,
                              tocOffset: dataEnd ?? tocOffset, expected: expected, limits: limits)
            }) {
                return (loaded.0, loaded.1, true)
            }
        }
        let (table, digest) = try loadStreaming(source: source, tocOffset: tocOffset, compressedSize: compressedSize, tail: tail,
                                 tailStart: tailStart, expected: expected, dataEnd: dataEnd ?? tocOffset, limits: limits)
        return (table, digest, false)
    }

    /// The uncompressed size of the member per its trailer's ISIZE (at `trailerAt` in `tail`),
    /// when the whole path may take it: at most `limit`, and plausible for a
    /// `compressedSize`-byte member both ways (deflate expands at most 1032:1, and stored blocks
    /// grow the input by 5 bytes per 64 KiB), so a lying ISIZE allocates and reads little.
    private static func wholeSize(compressedSize: Int64, trailerAt: Int64, in tail: [UInt8], limit: Int) -> Int? {
        guard trailerAt >= 0, trailerAt + 4 <= Int64(tail.count), compressedSize >= 18 else { return nil }
        let at = Int(trailerAt)
        let size = Int(tail[at]) | Int(tail[at + 1]) << 8 | Int(tail[at + 2]) << 16 | Int(tail[at + 3]) << 24
        guard size >= TarBlock.size, size <= limit,
              Int64(size) <= compressedSize * 1032,
              compressedSize <= Int64(size + size / 8 + 1024) else { return nil }
        return size
    }

    /// The whole path: `member` inflated in one pass into a buffer of exactly `size` bytes, the
    /// JSON hashed and parsed in place. Nil when the member does not inflate to a well-formed TOC
    /// tar of that size, so the streaming path decides (and names the error).
    private static func loadWhole(_ member: UnsafeRawBufferPointer, size: Int, tocOffset: Int64,
                                  expected: SHA256Digest?, limits: LayerReader.Limits) throws -> (NodeTable, SHA256Digest)? {
        let document = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        var owned = true
        defer { if owned { document.deallocate() } }
        do { try Kernel.inflateGzipMember(member, into: document) } catch { return nil }
        var served = 0
        let reader = TarReader(ClosureTarInput { output in
            let n = min(output.count, size - served)
            output.copyMemory(from: UnsafeRawBufferPointer(rebasing: document[served ..< served + n]))
            served += n
            return n
        })
        guard let jsonCount = try? jsonSize(of: try? reader.next(), compressedSize: Int64(member.count),
                                            limit: limits.maximumTOCSize),
              reader.offset + jsonCount <= Int64(size) else { return nil }
        let json = Int(reader.offset) ..< Int(reader.offset + jsonCount)
        owned = false
        return try parseWhole(document: document, json: json, tocOffset: tocOffset, expected: expected, limits: limits)
    }

    /// Hashes and parses the TOC JSON at `json` in `document`, which this takes over (it is freed
    /// as soon as the table no longer needs it, also on error): the whole-TOC path of every format.
    /// `tocOffset` bounds the chunks' blob offsets (the end of the data region).
    static func parseWhole(document: UnsafeMutableRawBufferPointer, json: Range<Int>, tocOffset: Int64,
                           expected: SHA256Digest?, limits: LayerReader.Limits) throws -> (NodeTable, SHA256Digest) {
        // Hashed on the other core while this one parses; joined before the document is freed.
        let hashing = BackgroundSHA256(UnsafeRawBufferPointer(rebasing: document[json]))
        var parser = TOCStreamParser(document: document, json: json,
                                     builder: NodeTableBuilder(tocOffset: tocOffset, limits: limits))
        do {
            try parser.parse()
        } catch {
            let digest = hashing.wait()
            parser.release()
            if let expected, expected != digest {
                throw EStargzError.tocDigestMismatch(expected: expected.description, actual: digest.description)
            }
            throw error
        }
        let digest = hashing.wait()
        var builder = parser.takeBuilder()
        parser.release()  // the document, before the table's final arrays are built
        if let expected, expected != digest {
            throw EStargzError.tocDigestMismatch(expected: expected.description, actual: digest.description)
        }
        return (try builder.finish(), digest)
    }

    /// The streaming path: the member read in 1 MiB pieces, inflated (zlib), hashed and parsed
    /// through the parser's window, so neither the compressed member nor the JSON is held whole.
    private static func loadStreaming(source: any RandomAccessSource, tocOffset: Int64, compressedSize: Int64,
                                      tail: [UInt8], tailStart: Int64, expected: SHA256Digest?, dataEnd: Int64,
                                      limits: LayerReader.Limits) throws -> (NodeTable, SHA256Digest) {
        // Compressed bytes: the tail's copy when it holds the member, else 1 MiB reads.
        let pieceSize: Int64 = 1 << 20
        let memberEnd = tocOffset + compressedSize
        let inTail = tocOffset >= tailStart
        var next = tocOffset
        if !inTail { source.willRead(tocOffset ..< memberEnd) }
        let (reader, size) = try openJSON(compressedSize: compressedSize, limit: limits.maximumTOCSize) {
            guard next < memberEnd else { return [] }
            defer { next = inTail ? memberEnd : min(memberEnd, next + pieceSize) }
            if inTail { return Array(tail[Int(next - tailStart) ..< Int(memberEnd - tailStart)]) }
            return try source.read(at: next, count: Int(min(pieceSize, memberEnd - next)))
        }
        var hasher = SHA256Hasher()
        var delivered: Int64 = 0
        let fill: TOCStreamParser.Fill = { (buffer: UnsafeMutableRawBufferPointer) throws(EStargzError) -> Int in
            let wanted = Int(min(Int64(buffer.count), size - delivered))
            guard wanted > 0 else { return 0 }
            let n: Int
            do {
                n = try reader.readContent(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< wanted]))
            } catch let error as EStargzError {
                throw error
            } catch {
                throw .invalidTOC("TOC member: \(error)")
            }
            guard n > 0 else { throw .invalidTOC("TOC JSON ends after \(delivered) of \(size) bytes") }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0 ..< n]))
            delivered += Int64(n)
            return n
        }
        // Big TOCs: reading, inflating and hashing run on the other core, a few windows ahead.
        // It is joined before the hasher is finalized and before anything it uses goes away.
        let readAhead = size > 1 << 20 ? TOCReadAhead(fill: fill) : nil
        defer { readAhead?.finish() }
        let nextJSON: TOCStreamParser.Fill
        if let readAhead {
            nextJSON = { (buffer: UnsafeMutableRawBufferPointer) throws(EStargzError) -> Int in try readAhead.read(into: buffer) }
        } else {
            nextJSON = fill
        }
        var parser = TOCStreamParser(totalSize: Int(size), builder: NodeTableBuilder(tocOffset: dataEnd, limits: limits),
                                     fill: nextJSON)
        try parser.parse(expected: expected, fill: nextJSON, finish: { readAhead?.finish() }, digest: { hasher.finalize() })
        readAhead?.finish()
        let digest = hasher.finalize()
        if let expected, expected != digest {
            throw EStargzError.tocDigestMismatch(expected: expected.description, actual: digest.description)
        }
        var builder = parser.takeBuilder()
        parser.release()
        let table = try builder.finish()
        return (table, digest)
    }
}
