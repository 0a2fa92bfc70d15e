import CFuse3
#if canImport(Glibc)
import Glibc
#endif

/// libfuse's low-level operations table. Each callback is a C function pointer that finds its
/// ``LazyFileSystem`` through `fuse_req_userdata` (the mount keeps the file system alive while
/// the session runs); all of them answer from the immutable inode table, so none takes a lock
/// except reads and the stats file.
enum FUSEOperations {
    static func fileSystem(_ request: fuse_req_t?) -> LazyFileSystem {
        Unmanaged<LazyFileSystem>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
    }

    static func table() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, connection in
            guard let connection, let userdata else { return }
            let fs = Unmanaged<LazyFileSystem>.fromOpaque(userdata).takeUnretainedValue()
            // Symlink targets never change: let the kernel cache them too.
            if connection.pointee.capable & UInt32(FUSE_CAP_CACHE_SYMLINKS) != 0 {
                connection.pointee.want |= UInt32(FUSE_CAP_CACHE_SYMLINKS)
            }
            connection.pointee.max_readahead = min(connection.pointee.max_readahead, UInt32(fs.options.maximumRead))
            connection.pointee.max_read = UInt32(fs.options.maximumRead)
        }
        ops.lookup = { request, parent, name in
            let fs = FUSEOperations.fileSystem(request)
            guard let name, let number = fs.lookup(parent: parent, name: String(cString: name)) else {
                fuse_reply_err(request, ENOENT)
                return
            }
            var entry = fs.entryParameters(number)
            fuse_reply_entry(request, &entry)
            fs.readAheadAfterLookup(number)
        }
        ops.forget = { request, _, _ in fuse_reply_none(request) }
        ops.forget_multi = { request, _, _ in fuse_reply_none(request) }
        ops.getattr = { request, number, _ in
            let fs = FUSEOperations.fileSystem(request)
            guard var attributes = fs.attributes(number) else {
                fuse_reply_err(request, ENOENT)
                return
            }
            fuse_reply_attr(request, &attributes, fs.options.cacheTimeout)
        }
        ops.readlink = { request, number in
            let fs = FUSEOperations.fileSystem(request)
            guard let inode = fs.inode(number), inode.kind == .symlink else {
                fuse_reply_err(request, EINVAL)
                return
            }
            fuse_reply_readlink(request, inode.symlinkTarget)
        }
        ops.open = { request, number, info in
            let fs = FUSEOperations.fileSystem(request)
            guard let info else { return }
            if info.pointee.flags & O_ACCMODE != O_RDONLY {
                fuse_reply_err(request, EROFS)
                return
            }
            if number == fs.statsInode {
                info.pointee.fh = fs.openStats()
                // Generated content whose size getattr does not know: bypass the page cache.
                info.pointee.direct_io = 1
            } else if let inode = fs.inode(number) {
                guard inode.kind == .regular else {
                    fuse_reply_err(request, inode.kind == .directory ? EISDIR : ENXIO)
                    return
                }
                fs.recordAccess(number)
                info.pointee.fh = 0
                info.pointee.keep_cache = 1  // content never changes: keep pages across opens
            } else {
                fuse_reply_err(request, ENOENT)
                return
            }
            fuse_reply_open(request, info)
        }
        ops.read = { request, number, size, offset, info in
            let fs = FUSEOperations.fileSystem(request)
            if number == fs.statsInode, let info {
                let contents = fs.statsContents(info.pointee.fh) ?? []
                let start = min(contents.count, Int(offset))
                let end = min(contents.count, start + size)
                _ = contents.withUnsafeBytes { fuse_reply_buf(request, $0.baseAddress! + start, end - start) }
                return
            }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, size), alignment: 64)
            defer { buffer.deallocate() }
            switch fs.read(number, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< size]), at: Int64(offset)) {
            case let .success(count): fuse_reply_buf(request, buffer.baseAddress, count)
            case let .failure(error): fuse_reply_err(request, error.code)
            }
        }
        ops.release = { request, number, info in
            let fs = FUSEOperations.fileSystem(request)
            if number == fs.statsInode, let info { fs.releaseStats(info.pointee.fh) }
            fuse_reply_err(request, 0)
        }
        ops.opendir = { request, number, info in
            let fs = FUSEOperations.fileSystem(request)
            guard let info else { return }
            guard number == fs.controlDirectoryInode || fs.inode(number)?.kind == .directory else {
                fuse_reply_err(request, ENOTDIR)
                return
            }
            info.pointee.keep_cache = 1
            info.pointee.cache_readdir = 1
            fuse_reply_open(request, info)
        }
        ops.readdir = { request, number, size, offset, _ in
            FUSEOperations.fileSystem(request).readDirectory(request, number, size: size, offset: offset, plus: false)
        }
        ops.readdirplus = { request, number, size, offset, _ in
            FUSEOperations.fileSystem(request).readDirectory(request, number, size: size, offset: offset, plus: true)
        }
        ops.releasedir = { request, _, _ in fuse_reply_err(request, 0) }
        ops.statfs = { request, _ in
            var info = FUSEOperations.fileSystem(request).fileSystemStatistics()
            fuse_reply_statfs(request, &info)
        }
        ops.getxattr = { request, number, name, size in
            let fs = FUSEOperations.fileSystem(request)
            guard let name, let inode = fs.inode(number),
                  let value = inode.xattrs.first(where: { $0.name == String(cString: name) })?.value else {
                fuse_reply_err(request, ENODATA)
                return
            }
            if size == 0 {
                fuse_reply_xattr(request, value.count)
            } else if size < value.count {
                fuse_reply_err(request, ERANGE)
            } else {
                _ = value.withUnsafeBytes { fuse_reply_buf(request, $0.baseAddress, $0.count) }
            }
        }
        ops.listxattr = { request, number, size in
            let fs = FUSEOperations.fileSystem(request)
            var names: [UInt8] = []
            for xattr in fs.inode(number)?.xattrs ?? [] { names += Array(xattr.name.utf8) + [0] }
            if size == 0 {
                fuse_reply_xattr(request, names.count)
            } else if size < names.count {
                fuse_reply_err(request, ERANGE)
            } else {
                _ = names.withUnsafeBytes { fuse_reply_buf(request, $0.baseAddress, $0.count) }
            }
        }
        ops.access = { request, _, mask in
            // Mode bits are checked by the kernel (default_permissions); only writing is refused here.
            fuse_reply_err(request, mask & W_OK != 0 ? EROFS : 0)
        }
        return ops
    }
}

extension LazyFileSystem {
    func attributes(_ number: UInt64) -> stat? {
        var s = stat()
        s.st_ino = ino_t(number)
        s.st_blksize = 4096
        if number == controlDirectoryInode || number == statsInode {
            let isDirectory = number == controlDirectoryInode
            s.st_mode = isDirectory ? S_IFDIR | 0o555 : S_IFREG | 0o444
            s.st_nlink = isDirectory ? 2 : 1
            return s
        }
        guard let inode = inode(number) else { return nil }
        let type: UInt32
        switch inode.kind {
        case .directory: type = S_IFDIR
        case .regular: type = S_IFREG
        case .symlink: type = S_IFLNK
        case .characterDevice: type = S_IFCHR
        case .blockDevice: type = S_IFBLK
        case .fifo: type = S_IFIFO
        }
        s.st_mode = type | inode.permissions
        s.st_nlink = UInt(inode.linkCount)
        s.st_uid = inode.uid
        s.st_gid = inode.gid
        s.st_size = off_t(inode.size)
        s.st_blocks = blkcnt_t((inode.size + 511) / 512)
        s.st_rdev = cfuse3_makedev(inode.deviceMajor, inode.deviceMinor)
        s.st_mtim = timespec(tv_sec: Int(inode.modificationTime), tv_nsec: 0)
        s.st_ctim = s.st_mtim
        s.st_atim = s.st_mtim
        return s
    }

    func entryParameters(_ number: UInt64) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = number
        entry.generation = 1
        entry.attr = attributes(number) ?? stat()
        // The stats file changes; everything else is fixed for the life of the mount.
        entry.attr_timeout = number == statsInode ? 0 : options.cacheTimeout
        entry.entry_timeout = options.cacheTimeout
        return entry
    }

    /// Directory listing with `.` and `..`; the offset of an entry is its position plus one.
    /// The control directory is reachable by name but not listed, so the tree equals the layers'.
    func readDirectory(_ request: fuse_req_t?, _ number: UInt64, size: Int, offset: off_t, plus: Bool) {
        // "." and ".." first, then the children; not concatenated, since a huge directory is
        // listed in many small calls and each would copy it.
        let children: [(name: String, inode: UInt64)]
        let parent: UInt64
        if number == controlDirectoryInode {
            children = [("stats", statsInode)]
            parent = 1
        } else if let inode = inode(number), inode.kind == .directory {
            children = inode.children
            parent = inode.parent
        } else {
            fuse_reply_err(request, ENOTDIR)
            return
        }
        let total = children.count + 2
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, size))
        defer { buffer.deallocate() }
        var used = 0
        var index = Int(offset)
        while index < total {
            let (name, child) = index == 0 ? (".", number) : index == 1 ? ("..", parent) : children[index - 2]
            let needed: Int
            if plus {
                // "." and ".." must not be looked up (no lookup count), so they carry only the inode.
                var entry = name == "." || name == ".." ? fuse_entry_param() : entryParameters(child)
                if name == "." || name == ".." { entry.attr = attributes(child) ?? stat(); entry.ino = 0 }
                needed = fuse_add_direntry_plus(request, buffer + used, size - used, name, &entry, off_t(index + 1))
            } else {
                var attributes = stat()
                attributes.st_ino = ino_t(child)
                attributes.st_mode = self.attributes(child)?.st_mode ?? 0
                needed = fuse_add_direntry(request, buffer + used, size - used, name, &attributes, off_t(index + 1))
            }
            guard used + needed <= size else { break }
            used += needed
            index += 1
        }
        fuse_reply_buf(request, buffer, used)
    }

    func fileSystemStatistics() -> statvfs {
        var info = statvfs()
        let bytes = inodes.reduce(Int64(0)) { $0 + ($1.kind == .regular ? $1.size : 0) }
        info.f_bsize = 4096
        info.f_frsize = 4096
        info.f_blocks = fsblkcnt_t((bytes + 4095) / 4096)
        info.f_files = fsfilcnt_t(inodes.count)
        info.f_namemax = 255
        info.f_flag = UInt(ST_RDONLY)
        return info
    }
}
