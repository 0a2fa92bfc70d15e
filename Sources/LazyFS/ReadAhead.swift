import Dispatch
import EStargzCore
import Synchronization

extension LazyFileSystem {
    /// Guesses of what a workload reads next, fetched beside the reads that wait so that a chain
    /// of dependent reads (a loader opening library after library, an interpreter importing module
    /// after module) pays fewer round trips.
    ///
    /// An optimized layer's prioritized region (``Options/prefetch``) is the exact list; these
    /// guesses are for layers without one, and cost little on layers with one (whatever the region
    /// already brought is not fetched again). Guessed bytes are only fetched: each chunk is still
    /// verified when a read needs it, and a wrong guess costs bandwidth, never correctness.
    public struct ReadAhead: Sendable, Equatable {
        /// Files read ahead as soon as the layer is mounted, when it has them (relative to the
        /// root, symlinks followed), while the runtime still creates the container and the link is
        /// idle: the runtime reads `etc/passwd` and `etc/group` from the image to start any
        /// container; every dynamically linked process of a glibc or musl image loads the dynamic
        /// loader, `etc/ld.so.cache` and the C library first; the C library reads `etc/localtime`
        /// in most processes that log or print a time, and in the C.UTF-8 locale containers run in
        /// (Python switches to it by itself, many images set `LANG=C.UTF-8`) glibc loads its
        /// character classes and the charset converters' cache (70 KB on Debian 12). For this
        /// machine's architecture.
        public var startupFiles: [String] = ["etc/passwd", "etc/group", "etc/localtime", "etc/ld.so.cache"] + Self.cRuntime
        /// The first executable file looked up on a fresh mount is, in a container, the process the
        /// runtime is about to start: runc and crun look the entrypoint up in the root file system
        /// when they create the container, and exec it only when it is started. That program and
        /// its dependencies (as ``programDependencies``) are read ahead from the lookup, while the
        /// runtime is still setting the container up. One file per mount, so a wrong guess is cheap.
        /// Where the image's config names the program, ``LazyFileSystem/readAheadProgram(atAnyOf:)``
        /// reads it ahead earlier, from when the config is known (it too needs this on).
        public var firstProgram = true
        /// When the first chunk of an ELF program or library is fetched for a read: the rest of the
        /// file, its interpreter, the libraries it needs (searched as the dynamic loader does: its
        /// run path, the multiarch and usual library directories), theirs in turn, and
        /// `etc/ld.so.cache`. The loader opens them one after another once the program is mapped.
        public var programDependencies = true
        /// Directory read-ahead: once reads have fetched files of one directory (at least
        /// ``directoryMinimumFiles`` of them, and ``directoryFraction`` of its compressed bytes),
        /// the rest of the directory, if that is at most ``directoryLimit`` compressed bytes. Each
        /// file beyond the minimum is more evidence, so the fraction needed shrinks with it: with
        /// the defaults 10% at three files, 5% at four, 3.3% at five. This is how an interpreter's
        /// imports (a package's modules, a `__pycache__`) and a loader's plugins read a directory.
        public var directories = true
        /// Files of a directory that reads must have fetched before its rest is guessed at.
        public var directoryMinimumFiles = 3
        /// Share of a directory's compressed bytes those files must make (at the minimum count).
        public var directoryFraction = 0.1
        /// Most compressed bytes of a directory's rest fetched at once; larger directories qualify
        /// later, once reads have fetched enough of them.
        public var directoryLimit: Int64 = 2 << 20

        /// The defaults: startup files, the first program, program dependencies, and directories
        /// up to 2 MiB.
        public init() {}

        /// The dynamic loader and C library of this architecture, glibc's (Debian and Ubuntu
        /// multiarch paths, then the classic ones) and musl's, and glibc's C.UTF-8 character
        /// classes and charset-converter cache.
        public static var cRuntime: [String] {
            #if arch(x86_64)
            let triplet = "x86_64-linux-gnu"
            let files = ["lib64/ld-linux-x86-64.so.2", "lib/\(triplet)/libc.so.6", "lib64/libc.so.6", "lib/ld-musl-x86_64.so.1"]
            #elseif arch(arm64)
            let triplet = "aarch64-linux-gnu"
            let files = ["lib/ld-linux-aarch64.so.1", "lib/\(triplet)/libc.so.6", "lib64/libc.so.6", "lib/ld-musl-aarch64.so.1"]
            #else
            let triplet = "", files: [String] = []
            #endif
            return files + ["usr/lib/locale/C.utf8/LC_CTYPE"] + (triplet.isEmpty ? [] : ["usr/lib/\(triplet)/gconv/gconv-modules.cache"])
        }

        /// No guesses: only what reads ask for (and the prioritized region) is fetched.
        public static let off: ReadAhead = {
            var policy = ReadAhead()
            policy.startupFiles = []
            policy.firstProgram = false
            policy.programDependencies = false
            policy.directories = false
            return policy
        }()
    }
}

/// What read-ahead has seen of one mount.
struct ReadAheadState {
    /// Files whose ELF headers were looked at (or are being).
    var programs: Set<UInt64> = []
    /// Files read ahead whole.
    var files: Set<UInt64> = []
    /// Files fetched for reads, and per directory how many and their compressed bytes.
    var demanded: Set<UInt64> = []
    var directories: [UInt64: (files: Int, bytes: Int64)] = [:]
    /// Compressed bytes of each directory's regular files, once computed.
    var directorySizes: [UInt64: Int64] = [:]
    /// Directories read ahead, never looked at again.
    var directoriesDone: Set<UInt64> = []
    /// Compressed bytes asked for.
    var bytes: Int64 = 0
}

extension LazyFileSystem {
    /// Largest piece of a directory asked for in one go (a read waits for its piece only).
    private static let readAheadPiece: Int64 = 512 << 10
    /// Gaps between chunks (tar headers, other entries) bridged when joining ranges.
    private static let readAheadGap: Int64 = 4 << 10
    private static let maximumSymlinkHops = 40

    /// At mount: the startup files.
    func readAheadAtMount() {
        let files = options.readAhead.startupFiles.compactMap { resolve($0) }.filter { inode($0)?.kind == .regular }
        readAheadWhole(files)
    }

    /// After a lookup by name found `number`: the first executable file (see ``ReadAhead/firstProgram``).
    func readAheadAfterLookup(_ number: UInt64) {
        guard options.readAhead.firstProgram, !programLookedUp.load(ordering: .relaxed), isExecutableFile(number),
              programLookedUp.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        readAheadProgramOnce(number, depth: 0)
    }

    /// A regular file with an execute bit.
    private func isExecutableFile(_ number: UInt64) -> Bool {
        guard let inode = inode(number) else { return false }
        return inode.kind == .regular && inode.permissions & 0o111 != 0
    }

    /// The first time `number` is named as a program: all of it, then what it loads.
    private func readAheadProgramOnce(_ number: UInt64, depth: Int) {
        guard readAheadState.withLock({ $0.programs.insert(number).inserted }) else { return }
        readAheadWhole([number])
        readAheadQueue.async { [self] in readAheadProgram(number, depth: depth) }
    }

    /// Before a read fetches a file's first chunk: an executable larger than one chunk (a
    /// program or library being loaded) has the rest of its chunks asked for at once.
    func readAheadBeforeFirstChunk(_ number: UInt64, _ inode: Inode) {
        guard options.readAhead.programDependencies, inode.chunks.count > 1, inode.permissions & 0o111 != 0 else { return }
        readAheadWhole([number])
    }

    /// After a read fetched chunk `index` of a file (it was not in memory): program dependencies
    /// (first chunk of an ELF file) and the file's directory.
    func readAheadAfterFetch(_ number: UInt64, _ inode: Inode, chunk index: Int) {
        let policy = options.readAhead
        if policy.programDependencies && index == 0 {
            let isNew = readAheadState.withLock { $0.programs.insert(number).inserted }
            if isNew { readAheadQueue.async { [self] in readAheadProgram(number, depth: 0) } }
        }
        if policy.directories { noteDemand(number, inode) }
    }

    // MARK: Programs

    /// Reads `number`'s ELF headers (through the chunk cache, verified like any read) and reads
    /// ahead what the loader opens next, then looks at those in turn. Runs on the read-ahead queue.
    private func readAheadProgram(_ number: UInt64, depth: Int) {
        guard depth < 8, !counters.cancelled.load(ordering: .relaxed), let inode = inode(number), inode.kind == .regular,
              inode.size >= Int64(ELFDependencies.headerSize) else { return }
        guard let elf = ELFDependencies.parse(size: inode.size, read: { offset, count in
            readQuietly(number, offset: offset, count: count)
        }) else { return }
        var found: [(fileSystem: LazyFileSystem, number: UInt64)] = []
        if let interpreter = elf.interpreter, let loader = locate(interpreter) { found.append(loader) }
        if !elf.needed.isEmpty, let cache = locate("etc/ld.so.cache") { found.append(cache) }
        let origin = "/" + inode.path.split(separator: "/").dropLast().joined(separator: "/")
        let searched = elf.searchPaths.map {
            $0.replacing("${ORIGIN}", with: origin).replacing("$ORIGIN", with: origin)
        } + elf.defaultDirectories
        for name in elf.needed {
            let candidates = name.contains("/") ? [name] : searched.map { $0 + "/" + name }
            if let library = candidates.lazy.compactMap({ self.locate($0) }).first { found.append(library) }
        }
        // What lower layers have is theirs to fetch and look at, on their own queues.
        for (fileSystem, number) in found where fileSystem !== self { fileSystem.readAheadProgramFromAbove(number, depth: depth + 1) }
        let fresh = readAheadState.withLock { state in
            found.filter { $0.fileSystem === self }.map(\.number).filter { state.programs.insert($0).inserted }
        }
        readAheadWhole(fresh)
        for library in fresh { readAheadProgram(library, depth: depth + 1) }
    }

    /// A layer above (``readAheadAlso(in:)``) found `number` among what one of its programs needs.
    private func readAheadProgramFromAbove(_ number: UInt64, depth: Int) {
        guard options.readAhead.programDependencies else { return }
        readAheadProgramOnce(number, depth: depth)
    }

    /// The regular file at `path` here, or else in the first layer below that has it.
    private func locate(_ path: String) -> (fileSystem: LazyFileSystem, number: UInt64)? {
        if let number = resolve(path), inode(number)?.kind == .regular { return (self, number) }
        for lower in readAheadLowerLayers.withLock({ $0 })?() ?? [] {
            if let number = lower.resolve(path), lower.inode(number)?.kind == .regular { return (lower, number) }
        }
        return nil
    }

    /// Where read-ahead also looks for what a program needs when this file system does not have
    /// it: for one layer mounted as an overlayfs lower directory, the layers below it in the same
    /// image, top first (as `lowerdir=` lists them). Their own read-ahead fetches and looks at what
    /// is found there. Whiteouts of the layers in between are not applied: at worst a guess fetches
    /// a file the container cannot see.
    public func readAheadAlso(in layersBelow: @escaping @Sendable () -> [LazyFileSystem]) {
        readAheadLowerLayers.withLock { $0 = layersBelow }
    }

    /// Reads ahead the program a container of this image will start, and what it loads (as
    /// ``ReadAhead/programDependencies`` does): the first of `paths` (relative to the root, symlinks
    /// followed, most likely first; EStargzRemote's `ImageProcess.programPaths` gives them from the
    /// image's config) that this layer has as an executable regular file. Call it once the image's
    /// config is known: a runtime looks its program up only when it creates the container, and the
    /// link is mostly idle until then. Returns at once (whether this layer has one of the paths);
    /// the fetching goes on in the background. Does nothing when ``ReadAhead/firstProgram`` is off.
    @discardableResult
    public func readAheadProgram(atAnyOf paths: [String]) -> Bool {
        guard options.readAhead.firstProgram,
              let program = paths.lazy.compactMap({ self.resolve($0) }).first(where: isExecutableFile) else { return false }
        readAheadProgramOnce(program, depth: 0)
        return true
    }

    /// `count` bytes of a file from `offset` through the chunk cache, as reads get them, but not
    /// counted as a read, logged as an access or guessed from: nil when they cannot be had.
    private func readQuietly(_ number: UInt64, offset: Int64, count: Int) -> [UInt8]? {
        guard let inode = inode(number), offset >= 0, offset < inode.size else { return nil }
        let wanted = Int(min(Int64(count), inode.size - offset))
        var bytes = [UInt8](repeating: 0, count: wanted)
        let result = bytes.withUnsafeMutableBytes { serve(inode, number, into: $0, at: offset, forRead: false) }
        guard case let .success(got) = result, got == wanted else { return nil }
        return bytes
    }

    // MARK: Directories

    private func noteDemand(_ number: UInt64, _ inode: Inode) {
        let policy = options.readAhead
        let directory = inode.parent
        let sweep: Bool = readAheadState.withLock { state in
            guard state.demanded.insert(number).inserted, !state.directoriesDone.contains(directory) else { return false }
            var seen = state.directories[directory] ?? (0, 0)
            seen.files += 1
            seen.bytes += compressedSize(inode)
            state.directories[directory] = seen
            guard seen.files >= policy.directoryMinimumFiles else { return false }
            let total = state.directorySizes[directory] ?? directorySize(directory)
            state.directorySizes[directory] = total
            // A larger directory may still qualify later, when reads have fetched more of it.
            let evidence = Double(seen.files - policy.directoryMinimumFiles + 1)
            guard Double(seen.bytes) >= policy.directoryFraction / evidence * Double(total), total - seen.bytes <= policy.directoryLimit
            else { return false }
            state.directoriesDone.insert(directory)
            return true
        }
        guard sweep, let parent = self.inode(directory) else { return }
        let rest = readAheadState.withLock { state in
            parent.children.map(\.inode).filter { !state.demanded.contains($0) && self.inode($0)?.kind == .regular }
        }
        readAheadWhole(rest)
    }

    /// Compressed bytes of a regular file's chunks.
    private func compressedSize(_ inode: Inode) -> Int64 {
        inode.chunks.reduce(0) { $0 + ($1.blobEnd - $1.blobOffset) }
    }

    /// Compressed bytes of a directory's regular files (not its subdirectories').
    private func directorySize(_ directory: UInt64) -> Int64 {
        guard let parent = inode(directory) else { return 0 }
        return parent.children.reduce(0) { total, child in
            guard let file = inode(child.inode), file.kind == .regular else { return total }
            return total + compressedSize(file)
        }
    }

    // MARK: Fetching

    /// Asks each file's layer source to fetch the chunks of `files` not in memory yet, joined into
    /// runs in blob order (neighbours in one request, up to ``readAheadPiece``).
    func readAheadWhole(_ files: [UInt64]) {
        var ranges: [Int: [Range<Int64>]] = [:]
        let wanted = readAheadState.withLock { state in files.filter { state.files.insert($0).inserted } }
        for number in wanted {
            guard let inode = inode(number), inode.kind == .regular else { continue }
            // What a cache holds (in memory or on disk) a read gets without the network.
            let cache = layers[inode.layer].cache
            for chunk in inode.chunks where !(cache?.holds(chunk.digest) ?? false) {
                ranges[inode.layer, default: []].append(chunk.blobOffset ..< chunk.blobEnd)
            }
        }
        var total: Int64 = 0
        for (layer, list) in ranges {
            let source = layers[layer].source
            var run: Range<Int64>?
            for range in list.sorted(by: { $0.lowerBound < $1.lowerBound }) {
                if let current = run, range.lowerBound - current.upperBound <= Self.readAheadGap,
                   max(current.upperBound, range.upperBound) - current.lowerBound <= Self.readAheadPiece {
                    run = current.lowerBound ..< max(current.upperBound, range.upperBound)
                    continue
                }
                if let current = run { source.readAhead(current); total += Int64(current.count) }
                run = range
            }
            if let current = run { source.readAhead(current); total += Int64(current.count) }
        }
        if total > 0 { readAheadState.withLock { $0.bytes += total } }
    }

    // MARK: Paths

    /// The inode at `path` (relative to the root, or absolute meaning the same), following
    /// symlinks inside this file system as the kernel would in a container rooted here.
    func resolve(_ path: String) -> UInt64? {
        var pending = path.split(separator: "/").map(String.init).reversed() as [String]
        var current: UInt64 = 1
        var hops = 0
        while let name = pending.popLast() {
            guard let directory = inode(current), directory.kind == .directory else { return nil }
            switch name {
            case ".": continue
            case "..": current = directory.parent; continue
            default: break
            }
            guard let next = directory.child(named: name), let node = inode(next) else { return nil }
            if node.kind == .symlink {
                hops += 1
                guard hops <= Self.maximumSymlinkHops else { return nil }
                if node.symlinkTarget.hasPrefix("/") { current = 1 }
                pending.append(contentsOf: node.symlinkTarget.split(separator: "/").map(String.init).reversed())
                continue
            }
            current = next
        }
        return current
    }
}
