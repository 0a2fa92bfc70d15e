#if canImport(Glibc)
import Glibc
#endif

/// The reader's compact form of a layer's TOC: fixed-size records and one byte arena, so a
/// TOC of 100k+ entries costs about 150 bytes per file instead of a `TOCEntry` (a dozen
/// fields, several heap strings) plus an index node.
///
/// Layout:
/// - `arena`: every string the tree needs (cleaned paths, link names, modification times),
///   each stored once as a 4-byte little-endian length and its UTF-8 bytes. Offset 0 is the
///   empty string. Modification times are interned (most entries share a few).
/// - `records`: one ``NodeRecord`` per node, in TOC order (root first, implicit directories last).
/// - `chunks`: every regular file's chunks, each file's run contiguous and in file order.
/// - `digests`: distinct SHA-256 values, shared by a file and its single chunk.
/// - `links`: directory entries, each directory's run sorted by name bytes.
/// - `slots`: open-addressing hash of cleaned path → node (hardlink names → their target).
/// - `extras`: what few entries have (xattrs, device numbers, user names, odd raw names).
///
/// Immutable once built, so readers on many threads share it without locks.
final class NodeTable: Sendable {
    let arena: [UInt8]
    let records: [NodeRecord]
    let chunks: [ChunkRecord]
    let digests: [SHA256Digest]
    let links: [DirectoryLink]
    let slots: [PathSlot]
    let extras: [UInt32: NodeExtras]
    /// Number of TOC entries (chunk entries included).
    let entryCount: Int

    init(arena: [UInt8], records: [NodeRecord], chunks: [ChunkRecord], digests: [SHA256Digest],
         links: [DirectoryLink], slots: [PathSlot], extras: [UInt32: NodeExtras], entryCount: Int) {
        self.arena = arena
        self.records = records
        self.chunks = chunks
        self.digests = digests
        self.links = links
        self.slots = slots
        self.extras = extras
        self.entryCount = entryCount
    }

    var count: Int { records.count }

    // MARK: Strings

    /// Calls `body` with the arena string at `offset`.
    @inline(__always)
    func withBytes<R>(_ offset: UInt32, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        try arena.withUnsafeBufferPointer { all in
            try body(Self.string(in: all, at: offset))
        }
    }

    @inline(__always)
    static func string(in arena: UnsafeBufferPointer<UInt8>, at offset: UInt32) -> UnsafeBufferPointer<UInt8> {
        let start = Int(offset)
        let length = Int(UInt32(littleEndian: UnsafeRawPointer(arena.baseAddress! + start).loadUnaligned(as: UInt32.self)))
        return UnsafeBufferPointer(rebasing: arena[start + 4 ..< start + 4 + length])
    }

    func string(_ offset: UInt32) -> String {
        offset == 0 ? "" : withBytes(offset) { String(decoding: $0, as: UTF8.self) }
    }

    /// The cleaned path of node `id` ("" for the root).
    func path(_ id: Int) -> String { string(records[id].path) }

    /// The last component of a path (the whole path when it has no "/").
    @inline(__always)
    static func baseName(_ path: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        var i = path.count
        while i > 0 {
            if path[i - 1] == UInt8(ascii: "/") { return UnsafeBufferPointer(rebasing: path[i...]) }
            i -= 1
        }
        return path
    }

    // MARK: Lookups

    /// The node at a cleaned path (hardlink names resolve to their target), or nil.
    func lookup(_ path: UnsafeBufferPointer<UInt8>) -> Int? {
        guard !slots.isEmpty else { return nil }
        let mask = slots.count - 1
        let h = PathHash.of(path)
        var slot = Int(truncatingIfNeeded: h >> 32) & mask
        return slots.withUnsafeBufferPointer { slots in
            records.withUnsafeBufferPointer { records in
                arena.withUnsafeBufferPointer { all -> Int? in
                    while true {
                        let s = slots[slot]
                        if s.key == PathSlot.empty { return nil }
                        if s.hash == UInt32(truncatingIfNeeded: h), PathHash.same(Self.string(in: all, at: records[Int(s.key)].path), path) {
                            return s.value == PathSlot.removed ? nil : Int(s.value)
                        }
                        slot = (slot + 1) & mask
                    }
                }
            }
        }
    }

    func lookup(_ path: String) -> Int? {
        var path = path
        return path.withUTF8 { lookup($0) }
    }

    /// The directory entries of node `id` (empty for non-directories).
    @inline(__always)
    func children(_ id: Int) -> ArraySlice<DirectoryLink> {
        let r = records[id]
        return links[Int(r.childStart) ..< Int(r.childStart + r.childCount)]
    }

    /// The name a directory entry is listed under (a hardlink's own base name, not its target's).
    func name(of link: DirectoryLink) -> String {
        withBytes(records[Int(link.name)].path) { String(decoding: Self.baseName($0), as: UTF8.self) }
    }

    /// Binary search of a directory's entries by name bytes.
    func child(_ id: Int, named name: UnsafeBufferPointer<UInt8>) -> Int? {
        let list = children(id)
        return arena.withUnsafeBufferPointer { all -> Int? in
            var low = list.startIndex, high = list.endIndex
            while low < high {
                let mid = (low + high) / 2
                let candidate = Self.baseName(Self.string(in: all, at: records[Int(list[mid].name)].path))
                let order = PathHash.compare(candidate, name)
                if order == 0 { return Int(list[mid].id) }
                if order < 0 { low = mid + 1 } else { high = mid }
            }
            return nil
        }
    }

    // MARK: Chunks

    /// The chunk records of node `id`.
    @inline(__always)
    func chunkRange(_ id: Int) -> Range<Int> {
        let r = records[id]
        return Int(r.chunkStart) ..< Int(r.chunkStart + r.chunkCount)
    }

    // MARK: Entries on demand

    /// The TOC entry of node `id`, rebuilt from the record (field for field what the TOC said,
    /// except that the name of the root is as written and implicit directories get mode 0755).
    func tocEntry(_ id: Int) -> TOCEntry {
        let r = records[id]
        let extra = r.flags & NodeRecord.hasExtras != 0 ? extras[UInt32(id)] : nil
        var e = TOCEntry(name: rawName(id, r, extra), type: r.kind)
        e.size = r.size
        e.modTime = string(r.modTime)
        e.linkName = string(r.link)
        e.mode = extra?.mode ?? Int64(r.mode)
        e.uid = extra?.uid ?? Int(r.uid)
        e.gid = extra?.gid ?? Int(r.gid)
        e.offset = r.offset
        if let extra {
            e.userName = extra.userName
            e.groupName = extra.groupName
            e.devMajor = extra.devMajor
            e.devMinor = extra.devMinor
            e.xattrs = extra.xattrs
            e.chunkOffset = extra.chunkOffset
        }
        if r.digest != 0 {
            e.digest = digests[Int(r.digest - 1)].description
        } else if let raw = extra?.rawDigest {
            e.digest = raw
        }
        if r.kind == .regular, r.chunkCount > 0 {
            let first = chunks[Int(r.chunkStart)]
            e.innerOffset = first.innerOffset
            if r.flags & NodeRecord.wroteChunkSize != 0 { e.chunkSize = first.size }
            if r.flags & NodeRecord.wroteChunkDigest != 0 {
                e.chunkDigest = first.digest == r.digest && !e.digest.isEmpty ? e.digest : digests[Int(first.digest - 1)].description
            }
        } else if let extra {
            e.chunkSize = extra.chunkSize
            e.chunkDigest = extra.chunkDigest
        }
        return e
    }

    private func rawName(_ id: Int, _ r: NodeRecord, _ extra: NodeExtras?) -> String {
        if let raw = extra?.rawName { return raw }
        let clean = string(r.path)
        let form = r.nameForm
        if form == 0 { return clean }
        var name = form & NodeRecord.leadingDotSlash != 0 ? "./" : form & NodeRecord.leadingSlash != 0 ? "/" : ""
        name += clean
        if form & NodeRecord.trailingSlash != 0 { name += "/" }
        return name
    }

    /// Seconds since the epoch of node `id`'s modification time (0 when absent or unparsable).
    func modificationTime(_ id: Int) -> Int64 {
        let offset = records[id].modTime
        guard offset != 0 else { return 0 }
        return withBytes(offset) { RFC3339.seconds($0) } ?? 0
    }
}

/// One node, 72 bytes. Strings are arena offsets; 0 means empty.
struct NodeRecord: Sendable {
    var path: UInt32 = 0
    var link: UInt32 = 0
    var size: Int64 = 0
    var offset: Int64 = 0
    var mode: UInt32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    var modTime: UInt32 = 0
    /// Index + 1 into `digests` of the file's `digest`; 0 when none (or not a SHA-256, see extras).
    var digest: UInt32 = 0
    var chunkStart: UInt32 = 0
    var chunkCount: UInt32 = 0
    var linkCount: UInt32 = 0
    var childStart: UInt32 = 0
    var childCount: UInt32 = 0
    var kind: TOCEntry.Kind = .directory
    /// How the raw TOC name differs from the cleaned path (see the name-form bits).
    var nameForm: UInt8 = 0
    var flags: UInt16 = 0

    // flags
    /// A later TOC entry with the same name replaced this one.
    static let superseded: UInt16 = 1
    /// A directory the TOC never named, made up because something lives below it.
    static let implicit: UInt16 = 2
    /// `extras` holds more about this node.
    static let hasExtras: UInt16 = 4
    /// An earlier node had the same path (so this one is not visited again for parents).
    static let repeatedName: UInt16 = 8
    /// The regular entry carried a non-zero `chunkSize` / a `chunkDigest` (for rebuilding it).
    static let wroteChunkSize: UInt16 = 16
    static let wroteChunkDigest: UInt16 = 32

    // nameForm bits: raw name = ("./" | "/" | "") + cleaned + ("/" | "")
    static let leadingDotSlash: UInt8 = 1
    static let leadingSlash: UInt8 = 2
    static let trailingSlash: UInt8 = 4

    var isSuperseded: Bool { flags & Self.superseded != 0 }
    var isImplicit: Bool { flags & Self.implicit != 0 }
}

/// One verified unit of a regular file's content, 48 bytes.
struct ChunkRecord: Sendable {
    var fileOffset: Int64
    var blobOffset: Int64
    /// Where the chunk's member ends: the next data entry's offset, or the TOC's.
    var blobEnd: Int64
    var size: Int64
    /// Uncompressed offset of the chunk within its member (0 unless members are shared, see
    /// `--estargz-min-chunk-size`).
    var innerOffset: Int64 = 0
    /// Index + 1 into `digests`.
    var digest: UInt32
    /// The node the chunk belongs to.
    var owner: UInt32
}

/// A directory entry: `name` is the node whose path's last component is the entry's name,
/// `id` the node it refers to (they differ for hardlinks).
struct DirectoryLink: Sendable {
    var name: UInt32
    var id: UInt32
}

/// One slot of the path hash: `key` is the node whose path is the key, `value` the node the
/// path resolves to.
struct PathSlot: Sendable {
    var key: UInt32
    var value: UInt32
    /// The path's hash (low 32 bits): most mismatches are told without touching the node.
    var hash: UInt32 = 0
    static let empty = UInt32.max
    static let removed = UInt32.max - 1
}

/// What few nodes have; kept out of ``NodeRecord`` so the common node stays small.
struct NodeExtras: Sendable {
    var rawName: String?
    var userName = ""
    var groupName = ""
    var devMajor = 0
    var devMinor = 0
    var xattrs: [String: [UInt8]] = [:]
    /// A `digest` that is not a well-formed SHA-256 (kept as written).
    var rawDigest: String?
    /// Values that do not fit the record's 32-bit fields.
    var mode: Int64?
    var uid: Int?
    var gid: Int?
    /// A regular entry's own `chunkOffset` when not 0; other kinds' chunk fields as written.
    var chunkOffset: Int64 = 0
    var chunkSize: Int64 = 0
    var chunkDigest = ""
}

/// Hashing and comparing path bytes (xxHash3: a few ns for a typical path).
enum PathHash {
    @inline(__always)
    static func of(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        Kernel.xxh3(UnsafeRawBufferPointer(bytes))
    }

    @inline(__always)
    static func same(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        a.count == b.count && (a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0)
    }

    /// Bytewise order (UTF-8 byte order is code point order).
    @inline(__always)
    static func compare(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Int {
        let n = min(a.count, b.count)
        if n > 0 {
            let c = memcmp(a.baseAddress!, b.baseAddress!, n)
            if c != 0 { return Int(c) }
        }
        return a.count - b.count
    }
}
