import Foundation

/// What a snapshot is, in containerd's terms.
public enum SnapshotKind: String, Codable, Sendable {
    /// Read-only view of a committed parent chain (`View`).
    case view
    /// Writable snapshot being prepared (`Prepare`), committed later.
    case active
    /// Immutable, named, usable as a parent.
    case committed
}

/// One snapshot's metadata, as persisted.
public struct SnapshotRecord: Codable, Sendable, Equatable {
    /// Key for active and view snapshots; name for committed ones.
    public var key: String
    /// Numeric id naming its directory under `snapshots/`.
    public var id: Int
    public var kind: SnapshotKind
    /// Key (name) of the committed parent, or "".
    public var parent: String
    public var labels: [String: String]
    public var created: Date
    public var updated: Date
    /// Disk usage recorded at commit (committed snapshots never change).
    public var size: Int64 = 0
    public var inodes: Int64 = 0
}

/// The snapshotter's durable state: every snapshot's record, in one JSON file replaced atomically
/// (write a temporary file, fsync, rename, fsync the directory) after each change, so a crash
/// leaves either the old or the new state, never a torn one.
struct SnapshotStore: Sendable {
    private struct Contents: Codable {
        var nextID: Int = 1
        var snapshots: [String: SnapshotRecord] = [:]
        /// Commits containerd may not have seen: active key → committed name (see ``OverlaySnapshotter/commit(name:key:labels:)``).
        var commitAliases: [String: String] = [:]

        init() {}

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            nextID = try container.decode(Int.self, forKey: .nextID)
            snapshots = try container.decode([String: SnapshotRecord].self, forKey: .snapshots)
            commitAliases = try container.decodeIfPresent([String: String].self, forKey: .commitAliases) ?? [:]
        }
    }

    let root: URL
    private var contents = Contents()

    var records: [String: SnapshotRecord] { contents.snapshots }

    /// Loads the state under `root` (creating the directory layout when new).
    init(root: URL) throws {
        self.root = root
        try FileManager.default.createDirectory(at: root.appendingPathComponent("snapshots"), withIntermediateDirectories: true)
        let file = root.appendingPathComponent("metadata.json")
        if FileManager.default.fileExists(atPath: file.path) {
            let data = try Data(contentsOf: file)
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            contents = try decoder.decode(Contents.self, from: data)
        }
    }

    func record(_ key: String) -> SnapshotRecord? { contents.snapshots[key] }

    /// Directory of a snapshot's data (`fs`) and overlay work dir (`work`).
    func directory(of record: SnapshotRecord) -> URL {
        root.appendingPathComponent("snapshots").appendingPathComponent(String(record.id))
    }

    mutating func allocateID() -> Int {
        defer { contents.nextID += 1 }
        return contents.nextID
    }

    mutating func put(_ record: SnapshotRecord) { contents.snapshots[record.key] = record }

    mutating func remove(_ key: String) { contents.snapshots[key] = nil }

    /// Commits whose reply containerd may not have received: the active key → the committed name.
    var commitAliases: [String: String] { contents.commitAliases }

    mutating func setCommitAlias(_ key: String, to name: String?) { contents.commitAliases[key] = name }

    /// Writes the state durably.
    func save() throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = try encoder.encode(contents)
        let final = root.appendingPathComponent("metadata.json")
        let temporary = root.appendingPathComponent("metadata.json.tmp")
        guard FileManager.default.createFile(atPath: temporary.path, contents: data) else {
            throw SnapshotterError.internal("cannot write \(temporary.path)")
        }
        try Self.fsync(temporary.path)
        guard rename(temporary.path, final.path) == 0 else {
            throw SnapshotterError.internal("rename \(temporary.path): errno \(errno)")
        }
        try Self.fsync(root.path)
    }

    private static func fsync(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw SnapshotterError.internal("open \(path): errno \(errno)") }
        defer { close(fd) }
        guard Foundation.fsync(fd) == 0 else { throw SnapshotterError.internal("fsync \(path): errno \(errno)") }
    }
}
