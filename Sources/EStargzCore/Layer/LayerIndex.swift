/// One node of a layer's tree, as indexed from the TOC.
struct Node: Sendable {
    var path: String
    var entry: TOCEntry
    var linkCount: Int32
    /// Sorted by name; hardlink names point at the node they link to.
    var children: [(name: String, id: Int32)] = []
    var chunkStart: Int32 = 0
    var chunkCount: Int32 = 0
    /// A later TOC entry with the same name replaced this one.
    var superseded = false
    /// A directory the TOC never named, made up because something lives below it.
    var implicit = false
}

/// One verified unit of a regular file's content.
struct Chunk: Sendable {
    var fileOffset: Int64
    var size: Int64
    var blobOffset: Int64
    var blobEnd: Int64
    var digest: SHA256Digest
}

/// Turns a TOC into the reader's tree, following the reference reader's rules
/// (cleaned names, later duplicates win, implicit parent directories with mode 0755,
/// hardlinks share their target's node, link counts) and refusing a TOC that lies:
/// chunks that do not tile their file, offsets outside the blob, missing digests.
enum Index {
    static func build(_ toc: TOC, tocOffset: Int64, limits: LayerReader.Limits) throws -> ([Node], [String: Int32], [Chunk]) {
        var nodes: [Node] = []
        var paths: [String: Int32] = [:]
        // Chunks in TOC order with the node they belong to; grouped per file below.
        var pendingChunks: [Chunk] = []
        var pendingOwners: [Int32] = []
        pendingChunks.reserveCapacity(toc.entries.count)
        pendingOwners.reserveCapacity(toc.entries.count)
        // Nodes whose path an earlier node already had (they are not visited again for parents).
        var repeatedName: [Bool] = []
        repeatedName.reserveCapacity(toc.entries.count + 1)
        repeatedName.append(false)
        nodes.reserveCapacity(toc.entries.count + 1)
        paths.reserveCapacity(toc.entries.count + 1)

        var root = TOCEntry(name: "", type: .directory)
        root.mode = 0o755
        nodes.append(Node(path: "", entry: root, linkCount: 2))
        paths[""] = 0

        // Each data entry's member ends where the next entry with an offset begins (or at the TOC).
        var memberEnds = [Int64](repeating: tocOffset, count: toc.entries.count)
        var nextOffset = tocOffset
        for i in toc.entries.indices.reversed() {
            memberEnds[i] = nextOffset
            if toc.entries[i].offset != 0 { nextOffset = toc.entries[i].offset }
        }

        var lastRegular: Int32?
        var hardlinks: [Int32] = []
        for (i, entry) in toc.entries.enumerated() {
            if entry.type == .chunk {
                guard let owner = lastRegular else {
                    throw EStargzError.invalidTOC("entry \(i) is a chunk with no regular file before it")
                }
                pendingChunks.append(
                    try chunk(entry, index: i, file: nodes[Int(owner)].entry, memberEnd: memberEnds[i],
                              tocOffset: tocOffset, limits: limits))
                pendingOwners.append(owner)
                continue
            }
            let path = TarPath.clean(entry.name)
            if path.isEmpty {
                guard entry.type == .directory else {
                    throw EStargzError.invalidTOC("entry \(i) (\(entry.name)) names the root but is a \(entry.type.rawValue)")
                }
                nodes[0].entry = entry
                continue
            }
            let id = Int32(nodes.count)
            nodes.append(Node(path: path, entry: entry, linkCount: entry.type == .directory ? 1 : 0))
            // A later duplicate replaces the earlier one.
            if let earlier = paths.updateValue(id, forKey: path) {
                nodes[Int(earlier)].superseded = true
                repeatedName.append(true)
            } else {
                repeatedName.append(false)
            }
            lastRegular = nil
            switch entry.type {
            case .regular:
                guard entry.size >= 0 else { throw EStargzError.invalidTOC("\(path): negative size \(entry.size)") }
                lastRegular = id
                if entry.size > 0 {
                    pendingChunks.append(try chunk(entry, index: i, file: entry, memberEnd: memberEnds[i],
                                                   tocOffset: tocOffset, limits: limits))
                    pendingOwners.append(id)
                }
            case .hardlink:
                hardlinks.append(id)
            default:
                break
            }
        }

        // Flatten and check each file's chunks: they must tile [0, size) in order.
        // Group by owner (a counting sort: owners are node ids), keeping TOC order within a file.
        var firstOfOwner = [Int32](repeating: 0, count: nodes.count + 1)
        for owner in pendingOwners { firstOfOwner[Int(owner) + 1] += 1 }
        for id in 0 ..< nodes.count { firstOfOwner[id + 1] += firstOfOwner[id] }
        var grouped = [Chunk]()
        grouped.reserveCapacity(pendingChunks.count)
        do {
            var slot = firstOfOwner
            var order = [Int32](repeating: 0, count: pendingChunks.count)
            for (index, owner) in pendingOwners.enumerated() {
                order[Int(slot[Int(owner)])] = Int32(index)
                slot[Int(owner)] += 1
            }
            for index in order { grouped.append(pendingChunks[Int(index)]) }
        }
        pendingChunks = []
        pendingOwners = []
        var chunks: [Chunk] = []
        chunks.reserveCapacity(grouped.count)
        for id in 0 ..< Int32(nodes.count) where firstOfOwner[Int(id)] < firstOfOwner[Int(id) + 1]
            && paths[nodes[Int(id)].path] == id {
            var list = grouped[Int(firstOfOwner[Int(id)]) ..< Int(firstOfOwner[Int(id) + 1])]
            if !list.indices.dropFirst().allSatisfy({ list[$0 - 1].fileOffset <= list[$0].fileOffset }) {
                list.sort { $0.fileOffset < $1.fileOffset }
            }
            var expected: Int64 = 0
            let size = nodes[Int(id)].entry.size
            for index in list.indices {
                if list[index].size == 0 { list[index].size = size - list[index].fileOffset }  // 0 means "to the end"
                let c = list[index]
                guard c.fileOffset == expected, c.size > 0, c.size <= limits.maximumChunkSize else {
                    throw EStargzError.invalidTOC("\(nodes[Int(id)].path): chunk at file offset \(c.fileOffset) of size \(c.size) does not continue at \(expected)")
                }
                expected += c.size
            }
            guard expected == size else {
                throw EStargzError.invalidTOC("\(nodes[Int(id)].path): chunks cover \(expected) of \(size) bytes")
            }
            nodes[Int(id)].chunkStart = Int32(chunks.count)
            nodes[Int(id)].chunkCount = Int32(list.count)
            chunks += list
        }

        // Hardlinks resolve to their (transitive) target and share its node.
        for id in hardlinks where paths[nodes[Int(id)].path] == id {
            var target = id
            var hops = 0
            while nodes[Int(target)].entry.type == .hardlink {
                let name = TarPath.clean(nodes[Int(target)].entry.linkName)
                guard let next = paths[name], hops < 64 else {
                    throw EStargzError.invalidTOC("\(nodes[Int(id)].path) is a hardlink to \(nodes[Int(target)].entry.linkName), which is not in the layer")
                }
                target = next
                hops += 1
            }
            paths[nodes[Int(id)].path] = target
        }

        // Parents, created on demand as the reference does (mode 0755), and link counts.
        // (parent, name, child) triples, grouped per parent at the end.
        var links: [(parent: Int32, name: String, id: Int32)] = []
        links.reserveCapacity(nodes.count)
        /// The directory node at `path`, made up if missing; nil when a non-directory has that name
        /// (entries below a file or symlink are unreachable, as they would be on disk).
        func directory(_ path: String) -> Int32? {
            if let id = paths[path] {
                return nodes[Int(id)].entry.type == .directory ? id : nil
            }
            var entry = TOCEntry(name: path, type: .directory)
            entry.mode = 0o755
            let id = Int32(nodes.count)
            nodes.append(Node(path: path, entry: entry, linkCount: 2, implicit: true))
            paths[path] = id
            let (parentPath, base) = split(path)
            guard let parent = directory(parentPath) else {
                paths[path] = nil
                return nil
            }
            links.append((parent, base, id))
            nodes[Int(parent)].linkCount += 1
            return id
        }
        // Consecutive entries usually share a parent: remember the last one.
        var lastParentPath = "", lastParent: Int32? = 0  // nil: nothing cached
        // Visit names in TOC order so that implicit directories appear in a deterministic order.
        for i in 1 ..< nodes.count where !repeatedName[i] {
            let path = nodes[i].path
            guard let id = paths[path] else { continue }
            let slash = path.utf8.lastIndex(of: UInt8(ascii: "/"))
            let parentPath = slash.map { path[..<$0] } ?? ""
            let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
            let parent: Int32?
            if lastParent != nil, parentPath == lastParentPath[...] {
                parent = lastParent
            } else {
                lastParentPath = String(parentPath)
                parent = directory(lastParentPath)
                lastParent = parent
            }
            guard let parent else {
                paths[path] = nil
                lastParent = nil
                continue
            }
            links.append((parent, base, id))
            nodes[Int(id)].linkCount += 1
            if nodes[Int(id)].entry.type == .directory, Int(id) == i { nodes[Int(parent)].linkCount += 1 }
        }
        links.sort { $0.parent != $1.parent ? $0.parent < $1.parent : $0.name < $1.name }
        var start = 0
        while start < links.count {
            let parent = links[start].parent
            var end = start + 1
            while end < links.count, links[end].parent == parent { end += 1 }
            nodes[Int(parent)].children = links[start ..< end].map { (name: $0.name, id: $0.id) }
            start = end
        }
        return (nodes, paths, chunks)
    }

    private static func split(_ path: String) -> (parent: String, base: String) {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return ("", path) }
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }

    private static func chunk(_ entry: TOCEntry, index: Int, file: TOCEntry, memberEnd: Int64,
                              tocOffset: Int64, limits: LayerReader.Limits) throws -> Chunk {
        var name: String { TarPath.clean(file.name) }  // for messages only
        guard entry.offset > 0, entry.offset < tocOffset, memberEnd > entry.offset else {
            throw EStargzError.invalidTOC("\(name): chunk at file offset \(entry.chunkOffset) has blob offset \(entry.offset) outside the data region (TOC at \(tocOffset))")
        }
        guard entry.chunkOffset >= 0, entry.chunkSize >= 0, entry.chunkOffset < file.size else {
            throw EStargzError.invalidTOC("\(name): chunk offset \(entry.chunkOffset) / size \(entry.chunkSize) outside a file of \(file.size) bytes")
        }
        guard entry.innerOffset == 0 else {
            throw EStargzError.invalidTOC("\(name): innerOffset \(entry.innerOffset) is not supported for gzip chunks")
        }
        // The reference falls back to the file's digest when a single-chunk file has no chunkDigest.
        var text = entry.chunkDigest
        if text.isEmpty, entry.type == .regular, entry.chunkSize == 0 || entry.chunkSize == file.size { text = file.digest }
        guard let digest = SHA256Digest(parsing: text) else {
            throw EStargzError.invalidTOC("\(name): chunk at file offset \(entry.chunkOffset) has no valid chunkDigest (\(String(reflecting: text)))")
        }
        return Chunk(fileOffset: entry.chunkOffset, size: entry.chunkSize, blobOffset: entry.offset,
                     blobEnd: memberEnd, digest: digest)
    }
}
