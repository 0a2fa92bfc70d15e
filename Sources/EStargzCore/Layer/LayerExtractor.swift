import CStargzSystem
#if canImport(Glibc)
import Glibc
#endif

extension LayerReader {
    /// Unpacks the layer under `directory` the way `tar -x --numeric-owner --xattrs -p` run as
    /// root would: modes (setuid/setgid/sticky included), numeric owners, modification times
    /// (seconds: all the TOC keeps), symlinks, hardlinks as hardlinks, devices, fifos and xattrs.
    /// Every chunk is verified before its bytes are written.
    ///
    /// Nothing is ever created outside `directory`: each parent is opened component by
    /// component without following symlinks, and names with `..` climbing above the root
    /// are refused with ``EStargzError/hostilePath(_:)``. The landmark files are skipped.
    public func extract(to directory: String, progress: ((_ bytesDone: Int64) -> Void)? = nil) throws {
        if mkdir(directory, 0o755) != 0, errno != EEXIST {
            throw EStargzError.io(operation: "mkdir", path: directory, errno: errno)
        }
        let root = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else { throw EStargzError.io(operation: "open", path: directory, errno: errno) }
        defer { close(root) }
        var extractor = Extractor(root: root, rootPath: directory, reader: self, progress: progress)
        try forEachNodeInTOCOrder { record, id in
            guard !record.isSuperseded, !record.isImplicit, !(Landmark.isLandmark(table.path(id))) else { return }
            try extractor.extract(table.tocEntry(id), id: id)
        }
        try extractor.finishDirectories()
    }
}

/// The state of one extraction: the root descriptor, a buffer for chunks, and the
/// directories whose mode and times are set last (so their permissions don't block
/// their own children and creating children doesn't change their times).
struct Extractor {
    let root: Int32
    let rootPath: String
    let reader: LayerReader
    let progress: ((Int64) -> Void)?
    var directories: [(components: [String], entry: TOCEntry)] = []
    var bytesDone: Int64 = 0

    init(root: Int32, rootPath: String, reader: LayerReader, progress: ((Int64) -> Void)?) {
        self.root = root
        self.rootPath = rootPath
        self.reader = reader
        self.progress = progress
    }

    mutating func extract(_ entry: TOCEntry, id: Int) throws {
        let components = try TarPath.safeComponents(entry.name)
        if components.isEmpty {  // the root directory itself
            if entry.type == .directory { directories.append(([], entry)) }
            return
        }
        let parent = try openParent(of: components, create: true)
        defer { close(parent) }
        let base = components[components.count - 1]
        let display = components.joined(separator: "/")

        switch entry.type {
        case .directory:
            var info = stat()
            if fstatat(parent, base, &info, AT_SYMLINK_NOFOLLOW) == 0 {
                if (info.st_mode & S_IFMT) != S_IFDIR { try remove(parent, base, display) }
            }
            if mkdirat(parent, base, 0o700) != 0, errno != EEXIST {
                throw EStargzError.io(operation: "mkdir", path: display, errno: errno)
            }
            try setOwner(parent, base, entry, display)
            try setXattrs(parent, base, entry, display)
            directories.append((components, entry))
            return
        case .regular:
            try remove(parent, base, display)
            let fd = openat(parent, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw EStargzError.io(operation: "create", path: display, errno: errno) }
            defer { close(fd) }
            try writeContent(of: id, to: fd, display: display)
        case .symlink:
            try remove(parent, base, display)
            guard symlinkat(entry.linkName, parent, base) == 0 else {
                throw EStargzError.io(operation: "symlink", path: display, errno: errno)
            }
        case .hardlink:
            let targetComponents = try TarPath.safeComponents(TarPath.clean(entry.linkName))
            guard !targetComponents.isEmpty else { throw EStargzError.hostilePath(entry.linkName) }
            let targetParent = try openParent(of: targetComponents, create: false)
            defer { close(targetParent) }
            try remove(parent, base, display)
            guard linkat(targetParent, targetComponents[targetComponents.count - 1], parent, base, 0) == 0 else {
                throw EStargzError.io(operation: "link to \(entry.linkName)", path: display, errno: errno)
            }
            return  // a hardlink shares its target's metadata
        case .characterDevice, .blockDevice, .fifo:
            try remove(parent, base, display)
            let type: mode_t = entry.type == .fifo ? S_IFIFO : entry.type == .characterDevice ? S_IFCHR : S_IFBLK
            guard mknodat(parent, base, type | 0o600, Self.device(entry.devMajor, entry.devMinor)) == 0 else {
                throw EStargzError.io(operation: "mknod", path: display, errno: errno)
            }
        case .chunk:
            return
        }
        try setOwner(parent, base, entry, display)
        if entry.type != .symlink {
            guard fchmodat(parent, base, mode_t(entry.mode & 0o7777), 0) == 0 else {
                throw EStargzError.io(operation: "chmod", path: display, errno: errno)
            }
        }
        try setXattrs(parent, base, entry, display)
        try setTimes(parent, base, entry, display)
    }

    /// Directory modes and times, deepest first, once everything inside exists.
    mutating func finishDirectories() throws {
        for (components, entry) in directories.reversed() {
            let display = components.isEmpty ? "." : components.joined(separator: "/")
            if components.isEmpty {
                guard fchmod(root, mode_t(entry.mode & 0o7777)) == 0 else {
                    throw EStargzError.io(operation: "chmod", path: rootPath, errno: errno)
                }
                continue
            }
            let parent = try openParent(of: components, create: false)
            defer { close(parent) }
            let base = components[components.count - 1]
            guard fchmodat(parent, base, mode_t(entry.mode & 0o7777), 0) == 0 else {
                throw EStargzError.io(operation: "chmod", path: display, errno: errno)
            }
            try setTimes(parent, base, entry, display)
        }
    }

    /// Opens the directory that will hold the last component, walking from the root without
    /// following symlinks, creating missing directories (0755, like tar's implicit parents).
    private func openParent(of components: [String], create: Bool) throws -> Int32 {
        var fd = dup(root)
        guard fd >= 0 else { throw EStargzError.io(operation: "dup", path: rootPath, errno: errno) }
        for component in components.dropLast() {
            var next = openat(fd, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0, errno == ENOENT, create {
                if mkdirat(fd, component, 0o755) != 0, errno != EEXIST {
                    let code = errno
                    close(fd)
                    throw EStargzError.io(operation: "mkdir", path: components.joined(separator: "/"), errno: code)
                }
                next = openat(fd, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            let code = errno
            close(fd)
            if next < 0 {
                if code == ELOOP || code == ENOTDIR {
                    // A symlink (or a file) where a directory should be: following it could leave the root.
                    throw EStargzError.hostilePath(components.joined(separator: "/"))
                }
                throw EStargzError.io(operation: "open", path: components.joined(separator: "/"), errno: code)
            }
            fd = next
        }
        return fd
    }

    private func remove(_ parent: Int32, _ base: String, _ display: String) throws {
        if unlinkat(parent, base, 0) != 0, errno != ENOENT {
            if errno == EISDIR, unlinkat(parent, base, AT_REMOVEDIR) == 0 { return }
            throw EStargzError.io(operation: "replace", path: display, errno: errno)
        }
    }

    private mutating func writeContent(of id: Int, to fd: Int32, display: String) throws {
        guard let file = reader.entry(id: id) else { return }
        for chunk in reader.chunks(of: file) {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(chunk.size), alignment: 16)
            defer { buffer.deallocate() }
            let n = try reader.read(file, into: buffer, at: chunk.fileOffset)
            try FileIO.writeAll(fd, UnsafeRawBufferPointer(rebasing: buffer[0 ..< n]), path: display)
            bytesDone += Int64(n)
            progress?(bytesDone)
        }
    }

    private func setOwner(_ parent: Int32, _ base: String, _ entry: TOCEntry, _ display: String) throws {
        guard fchownat(parent, base, uid_t(truncatingIfNeeded: entry.uid), gid_t(truncatingIfNeeded: entry.gid), AT_SYMLINK_NOFOLLOW) == 0 else {
            throw EStargzError.io(operation: "chown", path: display, errno: errno)
        }
    }

    private func setXattrs(_ parent: Int32, _ base: String, _ entry: TOCEntry, _ display: String) throws {
        guard !entry.xattrs.isEmpty else { return }
        // lsetxattr through the parent's /proc/self/fd link: the parent was opened safely and
        // the final component is not followed.
        let path = "/proc/self/fd/\(parent)/\(base)"
        for (name, value) in entry.xattrs.sorted(by: { $0.key < $1.key }) {
            let status = value.withUnsafeBytes { lsetxattr(path, name, $0.baseAddress, $0.count, 0) }
            guard status == 0 else { throw EStargzError.io(operation: "setxattr \(name) on", path: display, errno: errno) }
        }
    }

    private func setTimes(_ parent: Int32, _ base: String, _ entry: TOCEntry, _ display: String) throws {
        let seconds = RFC3339.seconds(entry.modTime) ?? 0
        var times = [timespec(tv_sec: Int(seconds), tv_nsec: 0), timespec(tv_sec: Int(seconds), tv_nsec: 0)]
        guard utimensat(parent, base, &times, AT_SYMLINK_NOFOLLOW) == 0 else {
            throw EStargzError.io(operation: "utimensat", path: display, errno: errno)
        }
    }

    /// glibc's `makedev` layout.
    static func device(_ major: Int, _ minor: Int) -> dev_t {
        let major = UInt64(truncatingIfNeeded: major), minor = UInt64(truncatingIfNeeded: minor)
        return dev_t((major & 0xffff_f000) << 32 | (major & 0xfff) << 8 | (minor & 0xffff_ff00) << 12 | (minor & 0xff))
    }
}
