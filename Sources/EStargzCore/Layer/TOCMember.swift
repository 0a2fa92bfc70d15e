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
        let decoder: GzipStreamDecoder
        do { decoder = try GzipStreamDecoder() } catch { throw EStargzError.compression(error.description) }
        var consumed = 0
        var finished = false
        let input = ClosureTarInput { output in
            guard !finished else { return 0 }
            while true {
                let step: (consumed: Int, produced: Int, memberEnded: Bool)
                do {
                    step = try member.withUnsafeBytes { all in
                        try decoder.decode(UnsafeRawBufferPointer(rebasing: all[consumed...]), into: output)
                    }
                } catch {
                    throw EStargzError.invalidTOC("TOC member does not decompress: \(error)")
                }
                consumed += step.consumed
                if step.memberEnded { finished = true }
                if step.produced > 0 || finished { return step.produced }
                if step.consumed == 0 {
                    throw EStargzError.invalidTOC("TOC member is truncated")
                }
            }
        }
        let reader = TarReader(input)
        guard let first = try reader.next() else {
            throw EStargzError.invalidTOC("TOC member holds no tar entry")
        }
        guard TarPath.clean(first.header.name) == fileName, first.header.kind == .regular else {
            throw EStargzError.invalidTOC("TOC tar entry is \(String(reflecting: first.header.name)), expected \(fileName)")
        }
        let size = first.header.size
        guard size <= limit else {
            throw EStargzError.limitExceeded("TOC JSON of \(size) bytes (limit \(limit))")
        }
        // Deflate expands at most 1032:1, so a small member that claims a huge TOC cannot make
        // us allocate more than its bytes can produce; the JSON goes straight into its final array.
        let capacity = Int(min(size, Int64(member.count) * 1032 + 4096))
        let json = try [UInt8](unsafeUninitializedCapacity: capacity) { buffer, initialized in
            while initialized < Int(size) {
                guard initialized < capacity else {
                    throw EStargzError.invalidTOC("TOC JSON of \(size) bytes cannot come from a \(member.count)-byte member")
                }
                let n = try reader.readContent(into: UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: buffer[initialized ..< capacity])))
                guard n > 0 else { throw EStargzError.invalidTOC("TOC JSON ends after \(initialized) of \(size) bytes") }
                initialized += n
            }
        }
        return json
    }
}
