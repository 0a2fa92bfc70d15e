/// The table of contents of an eStargz layer: the JSON document stored as
/// `stargz.index.json` in the blob's last gzip member (see `TOCJSON` for the codec).
public struct TOC: Sendable, Equatable {
    /// Always 1 for eStargz.
    public var version: Int
    /// Entries in blob order: one per tar entry, plus one `chunk` entry for every
    /// chunk of a regular file after its first.
    public var entries: [TOCEntry]

    public init(version: Int = 1, entries: [TOCEntry] = []) {
        self.version = version
        self.entries = entries
    }
}

/// One entry of the TOC, field for field the reference's `TOCEntry`
/// (containerd/stargz-snapshotter `estargz/types.go`). Zero / empty values are
/// omitted from the JSON, as Go's `omitempty` does.
public struct TOCEntry: Sendable, Equatable {
    /// Entry kinds, spelled as in the JSON `type` field.
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        case directory = "dir"
        case regular = "reg"
        case symlink
        case hardlink
        case characterDevice = "char"
        case blockDevice = "block"
        case fifo
        /// A continuation chunk of the preceding regular file.
        case chunk
    }

    /// Path of the entry as written in the tar header (readers clean it).
    public var name: String
    public var type: Kind
    /// Size of a regular file's whole content (only on `reg`).
    public var size: Int64 = 0
    /// Modification time as RFC 3339 text in UTC at second precision, e.g. `2022-01-02T15:04:05Z`.
    public var modTime: String = ""
    /// Target of a symlink, or the name of the hardlinked entry.
    public var linkName: String = ""
    /// Permission and mode bits (`0o7777` and the tar mode's other bits, as in the tar header).
    public var mode: Int64 = 0
    public var uid: Int = 0
    public var gid: Int = 0
    /// User name; the writer emits it only when it changes for a uid, like the reference.
    public var userName: String = ""
    public var groupName: String = ""
    public var devMajor: Int = 0
    public var devMinor: Int = 0
    /// Extended attributes (`SCHILY.xattr.*` PAX records); values are raw bytes (base64 in JSON).
    public var xattrs: [String: [UInt8]] = [:]
    /// `sha256:…` of a regular file's whole content.
    public var digest: String = ""
    /// Blob offset of the gzip member whose uncompressed bytes begin with this chunk.
    public var offset: Int64 = 0
    /// Offset of the chunk within that member's uncompressed bytes (newer writers; 0 for eStargz v1).
    public var innerOffset: Int64 = 0
    /// Offset of this chunk within the file's content.
    public var chunkOffset: Int64 = 0
    /// Size of this chunk (0 means "up to the end of the file").
    public var chunkSize: Int64 = 0
    /// `sha256:…` of this chunk's uncompressed bytes.
    public var chunkDigest: String = ""

    public init(name: String, type: Kind) {
        self.name = name
        self.type = type
    }
}
