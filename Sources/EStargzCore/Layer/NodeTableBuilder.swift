#if canImport(Glibc)
import Glibc
#endif

/// A byte string seen while parsing one TOC entry: a span of the JSON window, or of the
/// parser's side buffer for strings that had escapes or invalid UTF-8.
struct ByteSpan {
    var start: Int = 0
    var count: Int = 0
    var decoded = false
    /// The field was present (possibly empty).
    var present = false
}

/// One TOC entry as parsed, before it is committed to the table; its strings point into
/// the parse window, so nothing is allocated per entry.
struct PendingEntry {
    var kind: TOCEntry.Kind?
    var name = ByteSpan(), modTime = ByteSpan(), linkName = ByteSpan(), userName = ByteSpan()
    var groupName = ByteSpan(), digest = ByteSpan(), chunkDigest = ByteSpan()
    var size: Int64 = 0, mode: Int64 = 0, offset: Int64 = 0
    var chunkOffset: Int64 = 0, chunkSize: Int64 = 0, innerOffset: Int64 = 0
    var uid = 0, gid = 0, devMajor = 0, devMinor = 0
    /// Rare: allocated only for entries that have xattrs.
    var xattrs: [String: [UInt8]]?

    mutating func reset() { self = PendingEntry() }
}

/// Builds a ``NodeTable`` entry by entry as the TOC streams in, following the reference
/// reader's rules (cleaned names, later duplicates win, implicit parent directories with mode
/// 0755, hardlinks share their target's node, link counts) and refusing a TOC that lies:
/// chunks that do not tile their file, offsets outside the blob, missing digests.
struct NodeTableBuilder {
    let tocOffset: Int64
    let limits: LayerReader.Limits

    private(set) var arena: [UInt8] = [0, 0, 0, 0]
    private(set) var records: [NodeRecord] = []
    private(set) var chunks: [ChunkRecord] = []
    private var digests: [SHA256Digest] = []
    private var extras: [UInt32: NodeExtras] = [:]
    private var slots: [PathSlot] = []
    private var slotsUsed = 0
    /// New paths whose slot is being prefetched: inserted a few entries later (``flushInserts()``),
    /// so the one cache miss per new path of a big TOC overlaps with parsing instead of stalling it.
    private var queuedInserts: [(id: UInt32, hash: UInt64)] = []
    private static let insertBatch = 16
    /// Interned modification times: arena offsets in a small open-addressing table.
    private var interned: [UInt32] = .init(repeating: 0, count: 64)
    private var internedCount = 0
    private(set) var entryCount = 0
    private var lastRegular: Int?
    /// Chunks whose member end is the next entry with an offset (not seen yet).
    private var openChunks: Range<Int> = 0 ..< 0
    private var hardlinks: [UInt32] = []
    /// The digest text of the regular entry being added (valid during `add`).
    private var fileDigestText = UnsafeBufferPointer<UInt8>(start: nil, count: 0)
    /// Reusable buffer for cleaning odd names.
    private var cleanScratch: [UInt8] = []

    init(tocOffset: Int64, limits: LayerReader.Limits) {
        self.tocOffset = tocOffset
        self.limits = limits
        var root = NodeRecord()
        root.mode = 0o755
        root.linkCount = 2
        records.append(root)
        growSlots(to: 1024)
        insert(path: 0, value: 0)
    }

    /// Reserves room for about `entries` more entries of about `bytesPerName` name bytes.
    mutating func reserve(entries: Int, bytesPerName: Int) {
        records.reserveCapacity(records.count + entries + 16)
        chunks.reserveCapacity(chunks.count + entries + 16)
        digests.reserveCapacity(digests.count + entries + 16)
        arena.reserveCapacity(arena.count + entries * (bytesPerName + 4) + 4096)
        var size = slots.count
        while size < 2 * (records.count + entries) { size *= 2 }
        if size > slots.count { growSlots(to: size) }
    }

    // MARK: Adding entries

    /// Adds one parsed entry. `window` holds the spans that are not `decoded`, `side` the rest.
    mutating func add(_ e: PendingEntry, window: UnsafeRawBufferPointer, side: UnsafeRawBufferPointer) throws(EStargzError) {
        let index = entryCount
        entryCount += 1
        @inline(__always) func bytes(_ s: ByteSpan) -> UnsafeBufferPointer<UInt8> {
            let from = s.decoded ? side : window
            guard s.count > 0 else { return UnsafeBufferPointer(start: nil, count: 0) }
            return UnsafeBufferPointer(start: from.baseAddress!.assumingMemoryBound(to: UInt8.self) + s.start, count: s.count)
        }
        func text(_ s: ByteSpan) -> String { String(decoding: bytes(s), as: UTF8.self) }
        guard let kind = e.kind else { throw .invalidTOC("entry \(index): missing \"type\"") }

        // Member ends: every chunk waiting for one ends where this entry's data begins (an entry
        // with an innerOffset shares the member before it, which goes on).
        if e.offset != 0 && e.innerOffset == 0 {
            for c in openChunks { try closeChunk(c, at: e.offset) }
            openChunks = chunks.count ..< chunks.count
        }

        if kind == .chunk {
            guard let owner = lastRegular else {
                throw .invalidTOC("entry \(index) is a chunk with no regular file before it")
            }
            let digest = try chunkDigest(e, text: bytes(e.chunkDigest), fileDigest: nil, owner: owner)
            try addChunk(e, owner: owner, digest: digest)
            return
        }

        let name = bytes(e.name)
        var form: UInt8 = 0
        let cleanOffset = try appendClean(name, form: &form)
        // Read in place: calling a non-mutating method here would copy the whole builder.
        let isRoot = arena.withUnsafeBufferPointer { NodeTable.string(in: $0, at: cleanOffset).count } == 0
        if isRoot {
            arena.removeLast(4)
            guard kind == .directory else {
                throw .invalidTOC("entry \(index) (\(text(e.name))) names the root but is a \(kind.rawValue)")
            }
        }
        let id = isRoot ? 0 : records.count
        var r = NodeRecord()
        r.path = isRoot ? 0 : cleanOffset
        r.kind = kind
        r.size = e.size
        r.offset = e.offset
        r.linkCount = isRoot ? records[0].linkCount : (kind == .directory ? 1 : 0)
        var extra = NodeExtras()
        var hasExtra = false
        if form == 0xFF || (isRoot && form != 0 && name.count > 2) {
            extra.rawName = text(e.name)
            hasExtra = true
        } else {
            r.nameForm = form
        }
        if e.linkName.present, e.linkName.count > 0 { r.link = appendString(bytes(e.linkName)) }
        if e.modTime.count > 0 { r.modTime = intern(bytes(e.modTime)) }
        if let mode = UInt32(exactly: e.mode) { r.mode = mode } else { extra.mode = e.mode; hasExtra = true }
        if let uid = UInt32(exactly: e.uid) { r.uid = uid } else { extra.uid = e.uid; hasExtra = true }
        if let gid = UInt32(exactly: e.gid) { r.gid = gid } else { extra.gid = e.gid; hasExtra = true }
        if e.userName.count > 0 { extra.userName = text(e.userName); hasExtra = true }
        if e.groupName.count > 0 { extra.groupName = text(e.groupName); hasExtra = true }
        if e.devMajor != 0 || e.devMinor != 0 { extra.devMajor = e.devMajor; extra.devMinor = e.devMinor; hasExtra = true }
        if let x = e.xattrs, !x.isEmpty { extra.xattrs = x; hasExtra = true }
        var fileDigest: SHA256Digest?
        if e.digest.count > 0 {
            let d = bytes(e.digest)
            if let parsed = SHA256Digest(parsing: d) {
                fileDigest = parsed
                digests.append(parsed)
                r.digest = UInt32(digests.count)
            } else {
                extra.rawDigest = text(e.digest)
                hasExtra = true
            }
        }
        if kind == .regular {
            if e.chunkOffset != 0 { extra.chunkOffset = e.chunkOffset; hasExtra = true }
            if e.chunkSize != 0 { r.flags |= NodeRecord.wroteChunkSize }
            if e.chunkDigest.count > 0 { r.flags |= NodeRecord.wroteChunkDigest }
        } else if e.chunkSize != 0 || e.chunkDigest.count > 0 || e.chunkOffset != 0 {
            extra.chunkOffset = e.chunkOffset
            extra.chunkSize = e.chunkSize
            extra.chunkDigest = text(e.chunkDigest)
            hasExtra = true
        }
        if hasExtra {
            r.flags |= NodeRecord.hasExtras
            extras[UInt32(id)] = extra
        }
        if isRoot {
            r.childStart = 0
            records[0] = r
            lastRegular = nil
            return
        }
        guard records.count < Int(PathSlot.removed) else { throw .limitExceeded("more than \(PathSlot.removed) TOC entries") }
        records.append(r)
        queueInsert(UInt32(id))
        lastRegular = nil
        switch kind {
        case .regular:
            guard e.size >= 0 else { throw .invalidTOC("\(text(e.name)): negative size \(e.size)") }
            lastRegular = id
            if e.size > 0 {
                fileDigestText = bytes(e.digest)
                let digest = try chunkDigest(e, text: bytes(e.chunkDigest), fileDigest: fileDigest, owner: id)
                try addChunk(e, owner: id, digest: digest)
            }
        case .hardlink:
            hardlinks.append(UInt32(id))
        default:
            break
        }
    }

    /// The digest index of a chunk: its `chunkDigest`, or for a regular entry that is one chunk
    /// without one, the file's digest (as the reference does).
    private mutating func chunkDigest(_ e: PendingEntry, text: UnsafeBufferPointer<UInt8>, fileDigest: SHA256Digest?,
                                      owner: Int) throws(EStargzError) -> UInt32 {
        if text.count > 0 {
            // Single-chunk files repeat the file digest: compare the text before parsing it.
            if fileDigest != nil, PathHash.same(text, fileDigestText) { return records[owner].digest }
            if let parsed = SHA256Digest(parsing: text) {
                if let fileDigest, parsed == fileDigest { return records[owner].digest }
                digests.append(parsed)
                return UInt32(digests.count)
            }
        } else if e.kind == .regular, e.chunkSize == 0 || e.chunkSize == e.size {
            // The reference falls back to the file's digest when a single-chunk file has none.
            if fileDigest != nil { return records[owner].digest }
            throw .invalidTOC("\(pathText(owner)): chunk at file offset \(e.chunkOffset) has no valid chunkDigest (\(String(reflecting: extras[UInt32(owner)]?.rawDigest ?? "")))")
        }
        throw .invalidTOC("\(pathText(owner)): chunk at file offset \(e.chunkOffset) has no valid chunkDigest (\(String(reflecting: String(decoding: text, as: UTF8.self))))")
    }

    private mutating func addChunk(_ e: PendingEntry, owner: Int, digest: UInt32) throws(EStargzError) {
        let fileSize = records[owner].size
        // A member at offset 0 can only hold a chunk after the headers before it (innerOffset > 0).
        guard e.offset > 0 || (e.offset == 0 && e.innerOffset > 0), e.offset < tocOffset else {
            throw .invalidTOC("\(pathText(owner)): chunk at file offset \(e.chunkOffset) has blob offset \(e.offset) outside the data region (TOC at \(tocOffset))")
        }
        guard e.chunkOffset >= 0, e.chunkSize >= 0, e.chunkOffset < fileSize else {
            throw .invalidTOC("\(pathText(owner)): chunk offset \(e.chunkOffset) / size \(e.chunkSize) outside a file of \(fileSize) bytes")
        }
        // Chunks are inflated from their member's start: innerOffset counts against the chunk limit.
        guard e.innerOffset >= 0, e.innerOffset <= limits.maximumChunkSize else {
            throw .invalidTOC("\(pathText(owner)): chunk at file offset \(e.chunkOffset) has innerOffset \(e.innerOffset) outside 0...\(limits.maximumChunkSize)")
        }
        if records[owner].chunkCount == 0 { records[owner].chunkStart = UInt32(truncatingIfNeeded: chunks.count) }
        guard Int(records[owner].chunkStart) + Int(records[owner].chunkCount) == chunks.count, chunks.count < Int(UInt32.max) else {
            throw .invalidTOC("\(pathText(owner)): chunks are not contiguous")
        }
        records[owner].chunkCount += 1
        chunks.append(ChunkRecord(fileOffset: e.chunkOffset, blobOffset: e.offset, blobEnd: tocOffset, size: e.chunkSize,
                                  innerOffset: e.innerOffset,
                                  digest: digest, owner: UInt32(owner)))
        openChunks = openChunks.lowerBound ..< chunks.count
    }

    private mutating func closeChunk(_ index: Int, at end: Int64) throws(EStargzError) {
        let c = chunks[index]
        guard end > c.blobOffset else {
            throw .invalidTOC("\(pathText(Int(c.owner))): chunk at file offset \(c.fileOffset) has blob offset \(c.blobOffset) outside the data region (TOC at \(tocOffset))")
        }
        chunks[index].blobEnd = end
    }

    func pathText(_ id: Int) -> String {
        let offset = records[id].path
        return arena.withUnsafeBufferPointer { String(decoding: NodeTable.string(in: $0, at: offset), as: UTF8.self) }
    }

    // MARK: Strings

    @discardableResult
    private mutating func appendString(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt32 {
        let offset = UInt32(truncatingIfNeeded: arena.count)
        withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { arena.append(contentsOf: $0) }
        arena.append(contentsOf: bytes)
        return offset
    }

    /// Appends the reference's clean form of `name` (`path.Clean("/" + name)` without the
    /// leading "/") and says in `form` how to get the raw name back (0xFF: it cannot).
    private mutating func appendClean(_ name: UnsafeBufferPointer<UInt8>, form: inout UInt8) throws(EStargzError) -> UInt32 {
        guard arena.count < Int(UInt32.max) - name.count - 8 else { throw .limitExceeded("TOC names over 4 GiB") }
        let n = name.count
        var start = 0
        form = 0
        if n >= 2, name[0] == UInt8(ascii: "."), name[1] == UInt8(ascii: "/") { start = 2; form = NodeRecord.leadingDotSlash }
        else if n >= 1, name[0] == UInt8(ascii: "/") { start = 1; form = NodeRecord.leadingSlash }
        var end = n
        if end > start, name[end - 1] == UInt8(ascii: "/") { end -= 1; form |= NodeRecord.trailingSlash }
        // The fast path: what is left has no empty, "." or ".." component.
        var simple = end > start
        if simple {
            var componentStart = start
            var i = start
            while i <= end {
                if i == end || name[i] == UInt8(ascii: "/") {
                    let length = i - componentStart
                    if length == 0 || (name[componentStart] == UInt8(ascii: ".")
                        && (length == 1 || (length == 2 && name[componentStart + 1] == UInt8(ascii: ".")))) {
                        simple = false
                        break
                    }
                    componentStart = i + 1
                }
                i += 1
            }
        } else if n == 0 || (n == 1 && name[0] == UInt8(ascii: ".")) || (n == 1 && name[0] == UInt8(ascii: "/"))
                    || (n == 2 && name[0] == UInt8(ascii: ".") && name[1] == UInt8(ascii: "/")) {
            // The root: "", ".", "/", "./"
            form = n == 0 ? 0 : (n == 1 && name[0] == UInt8(ascii: "/")) ? NodeRecord.leadingSlash
                : n == 2 ? NodeRecord.leadingDotSlash : 0xFF
            return appendString(UnsafeBufferPointer(start: nil, count: 0))
        }
        if simple {
            return appendString(UnsafeBufferPointer(rebasing: name[start ..< end]))
        }
        // General case: split, drop "." and empty components, ".." pops.
        form = 0xFF
        cleanScratch.removeAll(keepingCapacity: true)
        var marks: [Int] = []
        var componentStart = 0
        var i = 0
        while i <= n {
            if i == n || name[i] == UInt8(ascii: "/") {
                let length = i - componentStart
                if length == 0 || (length == 1 && name[componentStart] == UInt8(ascii: ".")) {
                    // skip
                } else if length == 2 && name[componentStart] == UInt8(ascii: ".") && name[componentStart + 1] == UInt8(ascii: ".") {
                    if let mark = marks.popLast() { cleanScratch.removeSubrange(mark...) }
                } else {
                    marks.append(cleanScratch.count)
                    if !cleanScratch.isEmpty { cleanScratch.append(UInt8(ascii: "/")) }
                    cleanScratch.append(contentsOf: name[componentStart ..< i])
                }
                componentStart = i + 1
            }
            i += 1
        }
        let scratch = cleanScratch
        return scratch.withUnsafeBufferPointer { appendString($0) }
    }

    /// Interns a short, often repeated string (modification times).
    private mutating func intern(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt32 {
        let mask = interned.count - 1
        var slot = Int(truncatingIfNeeded: PathHash.of(bytes)) & mask
        while true {
            let offset = interned[slot]
            if offset == 0 { break }
            let same = arena.withUnsafeBufferPointer { PathHash.same(NodeTable.string(in: $0, at: offset), bytes) }
            if same { return offset }
            slot = (slot + 1) & mask
        }
        let offset = appendString(bytes)
        interned[slot] = offset
        internedCount += 1
        if internedCount * 2 > interned.count {
            let old = interned
            interned = .init(repeating: 0, count: old.count * 2)
            let newMask = interned.count - 1
            arena.withUnsafeBufferPointer { all in
                for o in old where o != 0 {
                    var s = Int(truncatingIfNeeded: PathHash.of(NodeTable.string(in: all, at: o))) & newMask
                    while interned[s] != 0 { s = (s + 1) & newMask }
                    interned[s] = o
                }
            }
        }
        return offset
    }

    // MARK: Path hash

    private mutating func growSlots(to size: Int) {
        let old = slots
        var grown = [PathSlot](repeating: PathSlot(key: PathSlot.empty, value: 0), count: size)
        let mask = size - 1
        for s in old where s.key != PathSlot.empty {
            // The slot holds the low 32 bits of the hash; the position comes from the high ones.
            var i = Int(truncatingIfNeeded: fullHash(s) >> 32) & mask
            while grown[i].key != PathSlot.empty { i = (i + 1) & mask }
            grown[i] = s
        }
        slots = grown
    }

    // The lookups below are `mutating` only so that calling them from the builder's mutating
    // methods borrows `self` instead of copying it (a copy retains and releases every array).
    private mutating func fullHash(_ s: PathSlot) -> UInt64 {
        arena.withUnsafeBufferPointer { PathHash.of(NodeTable.string(in: $0, at: records[Int(s.key)].path)) }
    }

    /// The slot index of `path`'s key, or the empty slot where it would go.
    private mutating func find(_ path: UnsafeBufferPointer<UInt8>) -> (slot: Int, found: Bool) {
        let h = PathHash.of(path)
        return slots.withUnsafeBufferPointer { s in
            records.withUnsafeBufferPointer { r in
                arena.withUnsafeBufferPointer { a in Self.find(path, hash: h, slots: s, records: r, arena: a) }
            }
        }
    }

    /// `find` for a string already in the arena.
    private mutating func find(stringAt offset: UInt32, hash: UInt64? = nil) -> (slot: Int, found: Bool) {
        slots.withUnsafeBufferPointer { s in
            records.withUnsafeBufferPointer { r in
                arena.withUnsafeBufferPointer { a in
                    let path = NodeTable.string(in: a, at: offset)
                    return Self.find(path, hash: hash ?? PathHash.of(path), slots: s, records: r, arena: a)
                }
            }
        }
    }

    @inline(__always)
    private static func find(_ path: UnsafeBufferPointer<UInt8>, hash h: UInt64, slots: UnsafeBufferPointer<PathSlot>,
                             records: UnsafeBufferPointer<NodeRecord>, arena: UnsafeBufferPointer<UInt8>) -> (slot: Int, found: Bool) {
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: h >> 32) & mask
        while true {
            let s = slots[i]
            if s.key == PathSlot.empty { return (i, false) }
            if s.hash == UInt32(truncatingIfNeeded: h), PathHash.same(NodeTable.string(in: arena, at: records[Int(s.key)].path), path) { return (i, true) }
            i = (i + 1) & mask
        }
    }

    /// Queues node `id` (just added, with its own path) for insertion and prefetches its slot.
    private mutating func queueInsert(_ id: UInt32) {
        let h = arena.withUnsafeBufferPointer { PathHash.of(NodeTable.string(in: $0, at: records[Int(id)].path)) }
        slots.withUnsafeBufferPointer { Kernel.prefetch($0.baseAddress! + (Int(truncatingIfNeeded: h >> 32) & ($0.count - 1))) }
        queuedInserts.append((id, h))
        if queuedInserts.count == Self.insertBatch { flushInserts() }
    }

    /// Inserts the queued nodes in order; a later duplicate replaces the earlier one.
    private mutating func flushInserts() {
        for (id, h) in queuedInserts {
            if let earlier = insert(path: id, value: id, hash: h) {
                records[Int(earlier)].flags |= NodeRecord.superseded
                records[Int(id)].flags |= NodeRecord.repeatedName
            }
        }
        queuedInserts.removeAll(keepingCapacity: true)
    }

    /// Maps the path of node `key` (already in `records`) to `value`; returns the value it replaces.
    @discardableResult
    private mutating func insert(path key: UInt32, value: UInt32, hash: UInt64? = nil) -> UInt32? {
        if (slotsUsed + 1) * 2 > slots.count { growSlots(to: slots.count * 2) }
        let h = hash ?? arena.withUnsafeBufferPointer { PathHash.of(NodeTable.string(in: $0, at: records[Int(key)].path)) }
        let (slot, found) = find(stringAt: records[Int(key)].path, hash: h)
        if found {
            let old = slots[slot].value
            slots[slot].value = value
            return old == PathSlot.removed ? nil : old
        }
        slots[slot] = PathSlot(key: key, value: value, hash: UInt32(truncatingIfNeeded: h))
        slotsUsed += 1
        return nil
    }

    // MARK: Finishing

    /// Checks every file's chunks, resolves hardlinks, makes up missing parent directories,
    /// counts links and sorts directories; then freezes the table.
    mutating func finish() throws(EStargzError) -> NodeTable {
        flushInserts()
        // Flatten and check each file's chunks: they must tile [0, size) in order.
        for id in 0 ..< records.count where records[id].chunkCount > 0 && !records[id].isSuperseded {
            let range = Int(records[id].chunkStart) ..< Int(records[id].chunkStart + records[id].chunkCount)
            var sorted = true
            for i in range.dropFirst() where chunks[i - 1].fileOffset > chunks[i].fileOffset { sorted = false; break }
            if !sorted { chunks[range].sort { $0.fileOffset < $1.fileOffset } }
            var expected: Int64 = 0
            let size = records[id].size
            for i in range {
                if chunks[i].size == 0 { chunks[i].size = size - chunks[i].fileOffset }  // 0 means "to the end"
                let c = chunks[i]
                guard c.fileOffset == expected, c.size > 0, c.size + c.innerOffset <= limits.maximumChunkSize else {
                    throw .invalidTOC("\(pathText(id)): chunk at file offset \(c.fileOffset) of size \(c.size) does not continue at \(expected)")
                }
                expected += c.size
            }
            guard expected == size else {
                throw .invalidTOC("\(pathText(id)): chunks cover \(expected) of \(size) bytes")
            }
        }
        // Superseded files keep no chunks (they are never read): compact the table in place
        // (each file's run is contiguous, and runs are in node order).
        var kept = 0
        for id in 0 ..< records.count where records[id].chunkCount > 0 {
            if records[id].isSuperseded {
                records[id].chunkCount = 0
                continue
            }
            let from = Int(records[id].chunkStart), count = Int(records[id].chunkCount)
            if from != kept {
                for k in 0 ..< count { chunks[kept + k] = chunks[from + k] }
            }
            records[id].chunkStart = UInt32(kept)
            kept += count
        }
        chunks.removeSubrange(kept...)

        // Hardlinks resolve to their (transitive) target and share its node.
        for id in hardlinks where !records[Int(id)].isSuperseded {
            var target = Int(id)
            var hops = 0
            while records[target].kind == .hardlink {
                let link = records[target].link
                var form: UInt8 = 0
                let before = arena.count
                // Copied out: cleaning appends to the arena, which may move it.
                let linkBytes = arena.withUnsafeBufferPointer { NodeTable.string(in: $0, at: link).copiedBytes() }
                let clean = try linkBytes.withUnsafeBufferPointer { bytes throws(EStargzError) in try appendClean(bytes, form: &form) }
                let next = find(stringAt: clean)
                arena.removeSubrange(before...)
                guard next.found, slots[next.slot].value != PathSlot.removed, hops < 64 else {
                    throw .invalidTOC("\(pathText(Int(id))) is a hardlink to \(string(link)), which is not in the layer")
                }
                target = Int(slots[next.slot].value)
                hops += 1
            }
            let own = find(stringAt: records[Int(id)].path)
            slots[own.slot].value = UInt32(target)
        }

        // Parents, created on demand as the reference does (mode 0755), and link counts.
        var pending: [DirectoryLink] = []
        var parents: [UInt32] = []
        pending.reserveCapacity(records.count)
        parents.reserveCapacity(records.count)
        var lastParentPath: (offset: UInt32, length: Int) = (0, 0)
        var lastParent: UInt32? = 0
        let named = records.count
        for i in 1 ..< named where records[i].flags & NodeRecord.repeatedName == 0 {
            let pathOffset = records[i].path
            // Only a hardlink's or a replaced entry's name maps to another node, and only this
            // loop removes names (each once): other names still map to themselves.
            var id = UInt32(i)
            if records[i].kind == .hardlink || records[i].isSuperseded {
                let value = slots[find(stringAt: pathOffset).slot].value
                guard value != PathSlot.removed else { continue }
                id = value
            }
            // The parent's path is a prefix of this one's.
            let parentLength: Int = arena.withUnsafeBufferPointer { all in
                let p = NodeTable.string(in: all, at: pathOffset)
                return p.count - NodeTable.baseName(p).count - (NodeTable.baseName(p).count == p.count ? 0 : 1)
            }
            let parent: UInt32?
            let sameAsLast = lastParent != nil && arena.withUnsafeBufferPointer { all -> Bool in
                let p = NodeTable.string(in: all, at: pathOffset)
                let q = NodeTable.string(in: all, at: lastParentPath.offset)
                return lastParentPath.length == parentLength
                    && PathHash.same(UnsafeBufferPointer(rebasing: p[0 ..< parentLength]), UnsafeBufferPointer(rebasing: q[0 ..< parentLength]))
            }
            if sameAsLast {
                parent = lastParent
            } else {
                parent = directory(pathOffset: pathOffset, length: parentLength, links: &pending, parents: &parents)
                lastParent = parent
                lastParentPath = (pathOffset, parentLength)
            }
            guard let parent else {
                slots[find(stringAt: pathOffset).slot].value = PathSlot.removed
                lastParent = nil
                continue
            }
            pending.append(DirectoryLink(name: UInt32(i), id: id))
            parents.append(parent)
            records[Int(id)].linkCount += 1
            if records[Int(id)].kind == .directory, Int(id) == i { records[Int(parent)].linkCount += 1 }
        }

        // Group by parent (a counting sort keeps TOC order), then sort each directory by name.
        var firstOf = [UInt32](repeating: 0, count: records.count + 1)
        for p in parents { firstOf[Int(p) + 1] += 1 }
        for id in 0 ..< records.count { firstOf[id + 1] += firstOf[id] }
        var links = [DirectoryLink](repeating: DirectoryLink(name: 0, id: 0), count: pending.count)
        do {
            var next = firstOf
            for (k, p) in parents.enumerated() {
                links[Int(next[Int(p)])] = pending[k]
                next[Int(p)] += 1
            }
        }
        pending = []
        parents = []
        self.records.withUnsafeBufferPointer { records in
            arena.withUnsafeBufferPointer { all in
                @inline(__always) func name(_ l: DirectoryLink) -> UnsafeBufferPointer<UInt8> {
                    NodeTable.baseName(NodeTable.string(in: all, at: records[Int(l.name)].path))
                }
                for id in 0 ..< records.count where firstOf[id + 1] - firstOf[id] > 1 {
                    let range = Int(firstOf[id]) ..< Int(firstOf[id + 1])
                    var sorted = true
                    for i in range.dropFirst() where PathHash.compare(name(links[i - 1]), name(links[i])) >= 0 { sorted = false; break }
                    if !sorted { links[range].sort { PathHash.compare(name($0), name($1)) < 0 } }
                }
            }
        }
        for id in 0 ..< self.records.count {
            self.records[id].childStart = firstOf[id]
            self.records[id].childCount = firstOf[id + 1] - firstOf[id]
        }
        return NodeTable(arena: arena, records: self.records, chunks: chunks, digests: digests, links: links,
                         slots: slots, extras: extras, entryCount: entryCount)
    }

    /// The directory node whose path is the first `length` bytes of the string at `pathOffset`,
    /// made up if missing; nil when a non-directory has that name (entries below a file or
    /// symlink are unreachable, as they would be on disk).
    private mutating func directory(pathOffset: UInt32, length: Int, links: inout [DirectoryLink],
                                    parents: inout [UInt32]) -> UInt32? {
        let prefix = arena.withUnsafeBufferPointer { all in
            UnsafeBufferPointer(rebasing: NodeTable.string(in: all, at: pathOffset)[0 ..< length]).copiedBytes()
        }
        return prefix.withUnsafeBufferPointer { directory($0, links: &links, parents: &parents) }
    }

    private mutating func directory(_ path: UnsafeBufferPointer<UInt8>, links: inout [DirectoryLink],
                                    parents: inout [UInt32]) -> UInt32? {
        if path.count == 0 { return 0 }
        let (slot, found) = find(path)
        if found {
            let id = slots[slot].value
            if id == PathSlot.removed { return nil }
            return records[Int(id)].kind == .directory ? id : nil
        }
        var r = NodeRecord()
        r.path = appendString(path)
        r.kind = .directory
        r.mode = 0o755
        r.linkCount = 2
        r.flags = NodeRecord.implicit
        let id = UInt32(records.count)
        records.append(r)
        insert(path: id, value: id)
        let base = NodeTable.baseName(path)
        let parentLength = path.count - base.count - (base.count == path.count ? 0 : 1)
        guard let parent = directory(UnsafeBufferPointer(rebasing: path[0 ..< parentLength]), links: &links, parents: &parents) else {
            let (s, _) = find(path)
            slots[s].value = PathSlot.removed
            return nil
        }
        links.append(DirectoryLink(name: id, id: id))
        parents.append(parent)
        records[Int(parent)].linkCount += 1
        return id
    }

    private func string(_ offset: UInt32) -> String {
        arena.withUnsafeBufferPointer { String(decoding: NodeTable.string(in: $0, at: offset), as: UTF8.self) }
    }
}

extension UnsafeBufferPointer where Element == UInt8 {
    func copiedBytes() -> [UInt8] { Array(self) }
}

extension SHA256Digest {
    /// Parses `sha256:` + 64 lowercase hex digits from raw bytes.
    init?(parsing utf8: UnsafeBufferPointer<UInt8>) {
        guard utf8.count == 71, utf8[0] == UInt8(ascii: "s"), utf8[1] == UInt8(ascii: "h"),
              utf8[2] == UInt8(ascii: "a"), utf8[3] == UInt8(ascii: "2"), utf8[4] == UInt8(ascii: "5"),
              utf8[5] == UInt8(ascii: "6"), utf8[6] == UInt8(ascii: ":") else { return nil }
        var raw = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let ok = Swift.withUnsafeMutableBytes(of: &raw) { out -> Bool in
            HexTable.values.withUnsafeBufferPointer { table in
                var bad: UInt8 = 0
                for i in 0..<32 {
                    let h = table[Int(utf8[7 + 2 * i])], l = table[Int(utf8[8 + 2 * i])]
                    bad |= h | l
                    out[i] = h << 4 | (l & 15)
                }
                return bad & 0xF0 == 0
            }
        }
        guard ok else { return nil }
        self = Swift.withUnsafeBytes(of: &raw) { SHA256Digest(rawBytes: $0) }
    }
}

/// Lowercase hex digit values; 0xFF for every other byte.
enum HexTable {
    static let values: [UInt8] = (0 ..< 256).map { c in
        switch c {
        case 0x30 ... 0x39: UInt8(c - 0x30)
        case 0x61 ... 0x66: UInt8(c - 0x61 + 10)
        default: 0xFF
        }
    }
}
