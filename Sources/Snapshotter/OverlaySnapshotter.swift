import Foundation
import Logging

/// A mount containerd performs to use a snapshot (mirrors `containerd.types.Mount`).
public struct SnapshotMount: Sendable, Equatable {
    public var type: String
    public var source: String
    public var options: [String]
}

/// containerd's overlayfs snapshotter semantics over a durable store: active snapshots are an
/// upper directory over their committed parents (or a bind mount when they have none), views are
/// read-only, commits are immutable and named. The remote (lazily fetched eStargz) layers plug in
/// as committed snapshots whose `fs` directory is a LazyFS mount.
public actor OverlaySnapshotter {
    private var store: SnapshotStore
    private let remote: (any LayerMounting)?
    private let logger = Logger(label: "estargz.snapshotter")

    /// Opens (or creates) the snapshotter's state under `root`. With `remote`, layers that
    /// containerd describes as eStargz are mounted lazily instead of being downloaded.
    /// Commits made before the last crash that containerd may never have seen (it rolls its own
    /// metadata back when a Commit fails): the active key → the committed name. Until containerd
    /// shows which way it went, the active key still answers as the active snapshot it was.
    private var uncertainCommits: [String: String]
    /// The key of the last commit in this run, whose alias is dropped once the next change is saved
    /// (by then the commit's reply has gone out).
    private var lastCommitKey: String?

    public init(root: String, remote: (any LayerMounting)? = nil) throws {
        store = try SnapshotStore(root: URL(fileURLWithPath: root))
        self.remote = remote
        uncertainCommits = store.commitAliases
    }

    /// The snapshot `key`, or the active snapshot an uncertain commit turned into a committed one.
    private func lookup(_ key: String) -> SnapshotRecord? {
        if let record = store.record(key) { return record }
        guard let name = uncertainCommits[key], var record = store.record(name), record.kind == .committed else { return nil }
        record.key = key
        record.kind = .active
        return record
    }

    private func dropCommitAlias(_ key: String) {
        uncertainCommits[key] = nil
        store.setCommitAlias(key, to: nil)
    }

    /// Called before each change is saved: the previous commit's reply has gone out.
    private func settle() {
        if let key = lastCommitKey {
            store.setCommitAlias(key, to: nil)
            lastCommitKey = nil
        }
    }

    /// Creates a writable snapshot `key` on top of the committed `parent` ("" for none).
    ///
    /// When the labels name a target snapshot and an eStargz layer, the layer is mounted lazily as
    /// that committed snapshot and `alreadyExists(target)` is thrown: containerd's signal that
    /// nothing needs downloading (the reference snapshotter's protocol). If that fails, an
    /// ordinary active snapshot is prepared and containerd downloads the layer.
    public func prepare(key: String, parent: String, labels: [String: String]) throws -> [SnapshotMount] {
        if let remote, let target = labels[RemoteLabel.targetSnapshot], RemoteLayers.describesRemoteLayer(labels) {
            if store.record(target) != nil { throw SnapshotterError.alreadyExists(target) }
            do {
                try prepareRemote(target: target, parent: parent, labels: labels, remote: remote)
                logger.info("remote snapshot mounted lazily", metadata: ["target": "\(target)",
                                                                         "layer": "\(RemoteLayers.layerDigest(in: labels) ?? "")"])
                throw SnapshotterError.alreadyExists(target)
            } catch let error as SnapshotterError where error == .alreadyExists(target) {
                throw error
            } catch {
                logger.warning("remote snapshot failed, falling back to download",
                               metadata: ["target": "\(target)", "error": "\(error)"])
            }
        }
        return try create(key: key, parent: parent, labels: labels, kind: .active)
    }

    /// Remounts the lazy layers of remote snapshots (after a restart), except those a fuse manager
    /// still serves (they are left alone: containers may be reading them). A layer that cannot be
    /// mounted is reported; its snapshot stays so containerd's references stay valid.
    public func remountRemoteSnapshots() -> [String] {
        guard let remote else { return [] }
        var failures: [String] = []
        let served = (try? remote.mountedDirectories()) ?? []
        var kept = 0
        for record in store.records.values where record.labels[RemoteLabel.remote] != nil {
            let directory = store.directory(of: record).appendingPathComponent("fs").path
            if served.contains(directory) {
                kept += 1
                continue
            }
            do {
                try remote.mount(labels: mountLabels(record.labels, parent: record.parent, restoring: true), at: directory)
            } catch {
                failures.append("\(record.key): \(error)")
            }
        }
        if kept > 0 { logger.info("lazy layers still mounted by the fuse manager, kept", metadata: ["count": "\(kept)"]) }
        return failures
    }

    private func prepareRemote(target: String, parent: String, labels: [String: String], remote: any LayerMounting) throws {
        settle()
        if !parent.isEmpty {
            guard store.record(parent)?.kind == .committed else { throw SnapshotterError.notFound("parent \(parent)") }
        }
        let now = Date()
        var labels = labels
        labels[RemoteLabel.remote] = RemoteLabel.remoteValue
        var record = SnapshotRecord(key: target, id: store.allocateID(), kind: .committed, parent: parent, labels: labels,
                                    created: now, updated: now)
        let fs = store.directory(of: record).appendingPathComponent("fs")
        try FileManager.default.createDirectory(at: fs, withIntermediateDirectories: true)
        do {
            (record.size, record.inodes) = try remote.mount(labels: mountLabels(labels, parent: parent), at: fs.path)
            store.put(record)
            try store.save()
        } catch {
            remote.unmount(fs.path)
            store.remove(target)
            try? FileManager.default.removeItem(at: store.directory(of: record))
            throw error
        }
    }

    /// Creates a read-only view `key` of the committed `parent`.
    public func view(key: String, parent: String, labels: [String: String]) throws -> [SnapshotMount] {
        try create(key: key, parent: parent, labels: labels, kind: .view)
    }

    /// The mounts of an active snapshot or view.
    public func mounts(key: String) throws -> [SnapshotMount] {
        guard let record = lookup(key) else { throw SnapshotterError.notFound(key) }
        guard record.kind != .committed else {
            throw SnapshotterError.failedPrecondition("\(key) is committed; only active snapshots and views have mounts")
        }
        return try mounts(of: record)
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`.
    ///
    /// A crash after the commit is saved and before containerd hears of it leaves containerd with
    /// the active snapshot and us with the committed one. So the commit is remembered (key → name)
    /// until the next change, and across a crash until containerd shows which way it went: the key
    /// still answers as active (Stat, Mounts), a second Commit of it renames the committed snapshot,
    /// and containerd's garbage collection removing the name (unknown to it) turns it back into the
    /// active snapshot instead of deleting it.
    public func commit(name: String, key: String, labels: [String: String]) throws {
        guard !name.isEmpty else { throw SnapshotterError.invalidArgument("empty name") }
        settle()
        if store.record(key) == nil, let earlier = uncertainCommits[key], var record = store.record(earlier) {
            // Committed before a crash, and containerd did not see it: commit again under `name`.
            guard earlier == name || store.record(name) == nil else { throw SnapshotterError.alreadyExists(name) }
            store.remove(earlier)
            record.key = name
            record.labels.merge(labels) { _, new in new }
            record.updated = Date()
            store.put(record)
            dropCommitAlias(key)
            try store.save()
            return
        }
        guard var record = store.record(key) else { throw SnapshotterError.notFound(key) }
        guard record.kind == .active else {
            throw SnapshotterError.failedPrecondition("\(key) is a \(record.kind.rawValue) snapshot, not active")
        }
        guard store.record(name) == nil else { throw SnapshotterError.alreadyExists(name) }
        let usage = Self.diskUsage(store.directory(of: record).appendingPathComponent("fs").path)
        store.remove(key)
        record.key = name
        record.kind = .committed
        record.labels.merge(labels) { _, new in new }
        record.updated = Date()
        record.size = usage.size
        record.inodes = usage.inodes
        store.put(record)
        store.setCommitAlias(key, to: name)
        lastCommitKey = key
        try store.save()
    }

    /// Removes a snapshot that no other snapshot has as parent.
    public func remove(key: String) throws {
        settle()
        if store.record(key) == nil, uncertainCommits[key] != nil {
            // containerd removes the active snapshot whose commit it never saw; the committed
            // one, unknown to it, goes when its garbage collection finds it.
            dropCommitAlias(key)
            try store.save()
            return
        }
        guard var record = store.record(key) else { throw SnapshotterError.notFound(key) }
        if let child = store.records.values.first(where: { $0.parent == key }) {
            throw SnapshotterError.failedPrecondition("\(key) is the parent of \(child.key)")
        }
        if let active = uncertainCommits.first(where: { $0.value == key })?.key {
            // A commit containerd never saw, removed by its garbage collection: what containerd
            // knows is the active snapshot, so that is what the data becomes again.
            store.remove(key)
            record.key = active
            record.kind = .active
            store.put(record)
            dropCommitAlias(active)
            try store.save()
            return
        }
        store.remove(key)
        try store.save()
        if record.labels[RemoteLabel.remote] != nil {
            remote?.unmount(store.directory(of: record).appendingPathComponent("fs").path)
        }
        try? FileManager.default.removeItem(at: store.directory(of: record))
    }

    /// A snapshot's metadata.
    public func stat(key: String) throws -> SnapshotRecord {
        guard let record = lookup(key) else { throw SnapshotterError.notFound(key) }
        return record
    }

    /// Updates labels: `paths` empty replaces them all; "labels" replaces them all; "labels.K" sets
    /// or (when absent from `labels`) deletes K. Other fields are immutable.
    public func update(key: String, labels: [String: String], paths: [String]) throws -> SnapshotRecord {
        guard var record = store.record(key) else { throw SnapshotterError.notFound(key) }
        if paths.isEmpty || paths.contains("labels") {
            record.labels = labels
        } else {
            for path in paths {
                guard path.hasPrefix("labels.") else {
                    throw SnapshotterError.invalidArgument("cannot update field \(path)")
                }
                let label = String(path.dropFirst("labels.".count))
                record.labels[label] = labels[label]
            }
        }
        record.updated = Date()
        settle()
        store.put(record)
        try store.save()
        return record
    }

    /// Disk usage: recorded at commit for committed snapshots, measured now for active ones. A lazily
    /// mounted (remote) layer reports its files' apparent size and entry count from the TOC, i.e.
    /// what it would take extracted, not the chunks fetched so far (see ``RemoteLayers/usage(of:)``).
    public func usage(key: String) throws -> (size: Int64, inodes: Int64) {
        guard let record = lookup(key) else { throw SnapshotterError.notFound(key) }
        if record.kind == .committed { return (record.size, record.inodes) }
        return Self.diskUsage(store.directory(of: record).appendingPathComponent("fs").path)
    }

    /// All snapshots, sorted by key.
    public func list() -> [SnapshotRecord] {
        store.records.values.sorted { $0.key < $1.key }
    }

    /// Removes snapshot directories no record refers to (left by a crash between steps).
    public func cleanup() throws {
        let known = Set(store.records.values.map { String($0.id) })
        let snapshots = store.root.appendingPathComponent("snapshots")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: snapshots.path)) ?? [] where !known.contains(name) {
            // A crash between mounting a lazy layer and recording it leaves a mount below: detach it
            // first (a fuse manager's through the manager), so removal never walks into a layer.
            let directory = snapshots.appendingPathComponent(name)
            let fs = directory.appendingPathComponent("fs").path
            remote?.unmount(fs)
            _ = umount2(fs, Int32(MNT_DETACH))
            do { try FileManager.default.removeItem(at: directory) } catch {
                logger.warning("cannot remove an orphaned snapshot directory", metadata: ["directory": "\(directory.path)", "error": "\(error)"])
            }
        }
    }

    // MARK: -

    private func create(key: String, parent: String, labels: [String: String], kind: SnapshotKind) throws -> [SnapshotMount] {
        guard !key.isEmpty else { throw SnapshotterError.invalidArgument("empty key") }
        guard store.record(key) == nil else { throw SnapshotterError.alreadyExists(key) }
        settle()
        dropCommitAlias(key)
        // containerd builds on the committed parent: it saw that commit.
        for (active, name) in uncertainCommits where name == parent { dropCommitAlias(active) }
        if !parent.isEmpty {
            guard let parentRecord = store.record(parent) else { throw SnapshotterError.notFound("parent \(parent)") }
            guard parentRecord.kind == .committed else {
                throw SnapshotterError.invalidArgument("parent \(parent) is not committed")
            }
        }
        let now = Date()
        let record = SnapshotRecord(key: key, id: store.allocateID(), kind: kind, parent: parent, labels: labels,
                                    created: now, updated: now)
        let directory = store.directory(of: record)
        do {
            try FileManager.default.createDirectory(at: directory.appendingPathComponent("fs"), withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: directory.appendingPathComponent("work"), withIntermediateDirectories: true)
            store.put(record)
            try store.save()
        } catch {
            store.remove(key)
            try? FileManager.default.removeItem(at: directory)
            throw error as? SnapshotterError ?? SnapshotterError.internal("\(error)")
        }
        return try mounts(of: record)
    }

    /// The `fs` directories of `parent` and the snapshots below it, top first (overlayfs `lowerdir=` order).
    private func lowerDirectories(from parent: String) throws -> [String] {
        var lowers: [String] = []
        var parent = parent
        while !parent.isEmpty {
            guard let p = store.record(parent) else { throw SnapshotterError.notFound("parent \(parent)") }
            lowers.append(store.directory(of: p).appendingPathComponent("fs").path)
            parent = p.parent
        }
        return lowers
    }

    /// What a lazy layer is mounted with: its labels, where the layers below it are mounted
    /// (``RemoteLabel/lowerDirectories``, for read-ahead) and, when it is mounted again at a
    /// restart, ``RemoteLabel/restoring``; neither is stored with the snapshot.
    private func mountLabels(_ labels: [String: String], parent: String, restoring: Bool = false) -> [String: String] {
        var labels = labels
        if let lowers = try? lowerDirectories(from: parent), !lowers.isEmpty {
            labels[RemoteLabel.lowerDirectories] = lowers.joined(separator: ":")
        }
        if restoring { labels[RemoteLabel.restoring] = "true" }
        return labels
    }

    /// containerd's overlay snapshotter mount rules.
    private func mounts(of record: SnapshotRecord) throws -> [SnapshotMount] {
        let own = store.directory(of: record)
        let lowers = try lowerDirectories(from: record.parent)
        switch (record.kind, lowers.count) {
        case (.active, 0):
            return [SnapshotMount(type: "bind", source: own.appendingPathComponent("fs").path, options: ["rw", "rbind"])]
        case (.active, _):
            return [SnapshotMount(type: "overlay", source: "overlay", options: [
                "workdir=" + own.appendingPathComponent("work").path,
                "upperdir=" + own.appendingPathComponent("fs").path,
                "lowerdir=" + lowers.joined(separator: ":"),
            ])]
        case (_, 0):
            return [SnapshotMount(type: "bind", source: own.appendingPathComponent("fs").path, options: ["ro", "rbind"])]
        case (_, 1):
            return [SnapshotMount(type: "bind", source: lowers[0], options: ["ro", "rbind"])]
        default:
            return [SnapshotMount(type: "overlay", source: "overlay", options: ["lowerdir=" + lowers.joined(separator: ":")])]
        }
    }

    /// Bytes (in 512-byte blocks actually allocated) and inodes under `path`, hardlinks counted once.
    static func diskUsage(_ path: String) -> (size: Int64, inodes: Int64) {
        var size: Int64 = 0, inodes: Int64 = 0
        var seen = Set<UInt64>()
        var stack = [path]
        while let current = stack.popLast() {
            var info = Foundation.stat()
            guard lstat(current, &info) == 0, seen.insert(UInt64(info.st_ino)).inserted else { continue }
            inodes += 1
            size += Int64(info.st_blocks) * 512
            if (info.st_mode & S_IFMT) == S_IFDIR,
               let names = try? FileManager.default.contentsOfDirectory(atPath: current) {
                stack += names.map { current + "/" + $0 }
            }
        }
        return (size, inodes)
    }
}
