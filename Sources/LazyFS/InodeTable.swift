import EStargzCore

/// One file system object as the mount presents it, fixed when the mount is built
/// (layer content never changes, so neither does the table).
struct Inode: Sendable {
    enum Kind: Sendable { case directory, regular, symlink, characterDevice, blockDevice, fifo }

    var kind: Kind
    /// Permission bits including setuid, setgid and sticky.
    var permissions: UInt32
    var uid: UInt32
    var gid: UInt32
    var modificationTime: Int64
    var size: Int64
    var deviceMajor: UInt32
    var deviceMinor: UInt32
    var linkCount: Int
    var symlinkTarget: String
    /// Sorted by name, so listxattr is deterministic.
    var xattrs: [(name: String, value: [UInt8])]
    /// For regular files: which layer holds the content, and the entry to read.
    var layer: Int
    var entry: LayerEntry?
    /// The regular file's chunks in file order (reads take them one at a time).
    var chunks: [ChunkLocation] = []
    /// The first path this inode was found under (for the access log and error messages).
    var path: String
    /// Directory entries sorted by name (String order, as `child(named:)` searches).
    var children: [(name: String, inode: UInt64)]
    var parent: UInt64

    func child(named name: String) -> UInt64? {
        var low = 0, high = children.count
        while low < high {
            let mid = (low + high) / 2
            if children[mid].name < name { low = mid + 1 } else { high = mid }
        }
        return low < children.count && children[low].name == name ? children[low].inode : nil
    }
}

/// Builds the inode table from the layers: either one merged tree (OCI whiteouts applied) or one
/// layer with its whiteouts rewritten the way overlayfs expects them.
enum InodeTable {
    static let whiteoutPrefix = ".wh."
    static let opaqueMarker = ".wh..wh..opq"
    static let overlayOpaqueXattr = "trusted.overlay.opaque"

    /// A node while the tree is assembled; hardlinks are the same object under several names.
    private final class Draft {
        var layer: Int
        var entry: LayerEntry
        /// Overlay mode: a `.wh.NAME` entry shown as the char 0/0 device overlayfs treats as a whiteout.
        var isOverlayWhiteout = false
        var opaque = false
        var children: [String: Draft] = [:]

        init(layer: Int, entry: LayerEntry) {
            self.layer = layer
            self.entry = entry
        }

        var isDirectory: Bool { entry.kind == .directory && !isOverlayWhiteout }
    }

    /// Inodes numbered from 1 (the root) in depth-first name order; index `i` is inode `i + 1`.
    static func build(layers: [LayerReader], mode: LazyFileSystem.Mode) throws -> [Inode] {
        guard !layers.isEmpty else { throw LazyFSError.invalidConfiguration("no layers") }
        let root: Draft
        switch mode {
        case .merged:
            root = Draft(layer: 0, entry: layers[0].root)
            var hardlinks: [Int: [Int: Draft]] = [:]
            for (index, layer) in layers.enumerated() {
                merge(layer.root, of: layer, index: index, onto: root, hardlinks: &hardlinks, isRoot: true)
            }
        case .overlayLayer:
            guard layers.count == 1 else {
                throw LazyFSError.invalidConfiguration("overlay-layer mode mounts exactly one layer, got \(layers.count)")
            }
            root = Draft(layer: 0, entry: layers[0].root)
            var hardlinks: [Int: Draft] = [:]
            convertForOverlay(layers[0].root, of: layers[0], onto: root, hardlinks: &hardlinks, isRoot: true)
        }
        var inodes = number(root)
        for index in inodes.indices {
            if let entry = inodes[index].entry { inodes[index].chunks = layers[inodes[index].layer].chunks(of: entry) }
        }
        return inodes
    }

    /// Applies one layer's directory on top of what the lower layers made of it: the upper
    /// directory's metadata wins, `.wh..wh..opq` empties it first, `.wh.NAME` removes NAME,
    /// and everything else replaces (or, directory onto directory, merges into) the lower node.
    private static func merge(_ directory: LayerEntry, of layer: LayerReader, index: Int, onto target: Draft,
                              hardlinks: inout [Int: [Int: Draft]], isRoot: Bool) {
        target.layer = index
        target.entry = directory
        let children = layer.children(of: directory)
        // Whiteouts hide only what lower layers put there, so they go before this layer's own names.
        for (name, _) in children where name.hasPrefix(whiteoutPrefix) {
            if name == opaqueMarker {
                target.children.removeAll()
            } else {
                target.children[String(name.dropFirst(whiteoutPrefix.count))] = nil
            }
        }
        for (name, entry) in children where !name.hasPrefix(whiteoutPrefix) {
            if isRoot && (name == Landmark.prefetch || name == Landmark.noPrefetch) { continue }
            if entry.kind == .directory {
                let node: Draft
                if let existing = target.children[name], existing.isDirectory {
                    node = existing
                } else {
                    node = Draft(layer: index, entry: entry)
                    target.children[name] = node
                }
                merge(entry, of: layer, index: index, onto: node, hardlinks: &hardlinks, isRoot: false)
            } else if let shared = hardlinks[index]?[entry.id] {
                target.children[name] = shared
            } else {
                let node = Draft(layer: index, entry: entry)
                if entry.linkCount > 1 { hardlinks[index, default: [:]][entry.id] = node }
                target.children[name] = node
            }
        }
    }

    /// One layer as an overlayfs lower directory: `.wh.NAME` becomes a char 0/0 device NAME and
    /// `.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its directory.
    private static func convertForOverlay(_ directory: LayerEntry, of layer: LayerReader, onto target: Draft,
                                          hardlinks: inout [Int: Draft], isRoot: Bool) {
        for (name, entry) in layer.children(of: directory) {
            if isRoot && (name == Landmark.prefetch || name == Landmark.noPrefetch) { continue }
            if name == opaqueMarker {
                target.opaque = true
            } else if name.hasPrefix(whiteoutPrefix) {
                let node = Draft(layer: 0, entry: entry)
                node.isOverlayWhiteout = true
                target.children[String(name.dropFirst(whiteoutPrefix.count))] = node
            } else if entry.kind == .directory {
                let node = Draft(layer: 0, entry: entry)
                target.children[name] = node
                convertForOverlay(entry, of: layer, onto: node, hardlinks: &hardlinks, isRoot: false)
            } else if let shared = hardlinks[entry.id] {
                target.children[name] = shared
            } else {
                let node = Draft(layer: 0, entry: entry)
                if entry.linkCount > 1 { hardlinks[entry.id] = node }
                target.children[name] = node
            }
        }
    }

    /// Numbers the tree depth-first in name order (so inode numbers are stable for the same
    /// layers) and counts links as the final tree has them: hidden names do not count.
    private static func number(_ root: Draft) -> [Inode] {
        var inodes: [Inode] = []
        var numbers: [ObjectIdentifier: UInt64] = [:]
        func visit(_ draft: Draft, path: String, parent: UInt64) -> UInt64 {
            if let known = numbers[ObjectIdentifier(draft)] {
                inodes[Int(known - 1)].linkCount += 1
                return known
            }
            let number = UInt64(inodes.count + 1)
            numbers[ObjectIdentifier(draft)] = number
            inodes.append(makeInode(draft, path: path, parent: parent == 0 ? number : parent))
            guard draft.isDirectory else { return number }
            var children: [(name: String, inode: UInt64)] = []
            var subdirectories = 0
            for name in draft.children.keys.sorted() {
                let child = draft.children[name]!
                if child.isDirectory { subdirectories += 1 }
                children.append((name, visit(child, path: path.isEmpty ? name : path + "/" + name, parent: number)))
            }
            inodes[Int(number - 1)].children = children
            inodes[Int(number - 1)].linkCount = 2 + subdirectories
            return number
        }
        _ = visit(root, path: "", parent: 0)
        return inodes
    }

    private static func makeInode(_ draft: Draft, path: String, parent: UInt64) -> Inode {
        let entry = draft.entry
        let kind: Inode.Kind
        switch entry.kind {
        case .directory: kind = .directory
        case .symlink: kind = .symlink
        case .characterDevice: kind = .characterDevice
        case .blockDevice: kind = .blockDevice
        case .fifo: kind = .fifo
        default: kind = .regular
        }
        var xattrs = entry.xattrs.map { (name: $0.key, value: $0.value) }
        if draft.opaque { xattrs.removeAll { $0.name == overlayOpaqueXattr }; xattrs.append((overlayOpaqueXattr, Array("y".utf8))) }
        xattrs.sort { $0.name < $1.name }
        var inode = Inode(kind: draft.isOverlayWhiteout ? .characterDevice : kind,
                          // Symlinks are 0777 whatever the tar header says, as `tar -x` and overlayfs show them
                          // (Linux ignores a symlink's own mode; only lchmod-less 0777 exists on disk).
                          permissions: kind == .symlink && !draft.isOverlayWhiteout
                              ? 0o777 : UInt32(truncatingIfNeeded: entry.mode) & 0o7777,
                          uid: UInt32(truncatingIfNeeded: entry.uid), gid: UInt32(truncatingIfNeeded: entry.gid),
                          modificationTime: entry.modificationTime,
                          size: kind == .regular ? entry.size : 0,
                          deviceMajor: UInt32(truncatingIfNeeded: entry.deviceMajor),
                          deviceMinor: UInt32(truncatingIfNeeded: entry.deviceMinor),
                          linkCount: 1, symlinkTarget: "", xattrs: draft.isOverlayWhiteout ? [] : xattrs,
                          layer: draft.layer, entry: nil, path: path, children: [], parent: parent)
        switch inode.kind {
        case .regular where !draft.isOverlayWhiteout:
            inode.entry = entry
        case .symlink:
            inode.symlinkTarget = entry.linkName
            inode.size = Int64(entry.linkName.utf8.count)
        case .directory:
            inode.size = 4096
        case .characterDevice where draft.isOverlayWhiteout:
            inode.size = 0
            inode.deviceMajor = 0
            inode.deviceMinor = 0
        default:
            break
        }
        return inode
    }
}
