import CFuse3
import Dispatch
import EStargzRemote
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The store's own FUSE file system: the synthesized levels `/BASE64(REF)/DIGEST/{diff,info,blob,use}`
/// of ``AdditionalLayerStore``. Nothing is listed (every name is found by lookup, as containers/storage
/// asks for exact paths); a node's inode number is handed out at its first lookup and kept.
final class LayerStoreFileSystem: @unchecked Sendable {
    enum Node: Hashable {
        case root
        /// An image reference (its directory's name is BASE64 of it; an ASCII reference never has `/` in its
        /// BASE64, which would need a byte such as `?`).
        case reference(String)
        case layer(reference: String, digest: String)
        case info(reference: String, digest: String)
        case blob(reference: String, digest: String)
        case diff(reference: String, digest: String)
    }

    let store: AdditionalLayerStore
    private let table = Mutex<(numbers: [Node: UInt64], nodes: [UInt64: Node])>(([.root: 1], [1: .root]))
    /// Attributes and entries are cached by the kernel this long (the tree never changes under a name).
    let timeout = 1.0

    init(store: AdditionalLayerStore) { self.store = store }

    func node(_ number: UInt64) -> Node? { table.withLock { $0.nodes[number] } }

    func number(_ node: Node) -> UInt64 {
        table.withLock { table in
            if let known = table.numbers[node] { return known }
            let next = UInt64(table.nodes.count + 1)
            table.numbers[node] = next
            table.nodes[next] = node
            return next
        }
    }

    /// The child `name` of `parent`, resolving (and for `diff` mounting) the layer as needed.
    func lookup(parent: Node, name: String) -> Result<Node, AdditionalLayerStore.LookupError> {
        switch parent {
        case .root:
            guard let reference = Self.reference(encoded: name) else {
                return .failure(.notHere("\(name) is not BASE64 of an image reference"))
            }
            return .success(.reference(reference))
        case .reference(let reference):
            guard Self.isDigest(name) else { return .failure(.notHere("\(name) is not a sha256 digest")) }
            return .success(.layer(reference: reference, digest: name))
        case .layer(let reference, let digest):
            do {
                switch name {
                case "info": _ = try store.layer(reference: reference, digest: digest); return .success(.info(reference: reference, digest: digest))
                case "blob": _ = try store.blob(reference: reference, digest: digest); return .success(.blob(reference: reference, digest: digest))
                case "diff": _ = try store.diff(reference: reference, digest: digest); return .success(.diff(reference: reference, digest: digest))
                default: return .failure(.notHere(name))
                }
            } catch {
                return .failure(error)
            }
        default:
            return .failure(.notHere(name))
        }
    }

    /// The image reference `encoded` is BASE64 of, if it is one.
    static func reference(encoded: String) -> String? {
        guard let decoded = Data(base64Encoded: encoded), let reference = String(data: decoded, encoding: .utf8),
              (try? ImageReference(parsing: reference)) != nil else { return nil }
        return reference
    }

    static func isDigest(_ text: String) -> Bool {
        text.hasPrefix("sha256:") && text.utf8.count == 71 && text.utf8.dropFirst(7).allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66)
        }
    }

    func attributes(_ number: UInt64) -> stat? {
        guard let node = node(number) else { return nil }
        var s = stat()
        s.st_ino = ino_t(number)
        s.st_blksize = 4096
        s.st_nlink = 1
        switch node {
        case .root, .reference, .layer:
            s.st_mode = S_IFDIR | 0o555
            s.st_nlink = 2
        case .info(let reference, let digest):
            s.st_mode = S_IFREG | 0o444
            s.st_size = off_t((try? store.layer(reference: reference, digest: digest).info.count) ?? 0)
        case .blob(let reference, let digest):
            s.st_mode = S_IFREG | 0o444
            s.st_size = off_t((try? store.layer(reference: reference, digest: digest).descriptor.size) ?? 0)
        case .diff(let reference, let digest):
            s.st_mode = S_IFLNK | 0o777
            s.st_size = off_t((try? store.diff(reference: reference, digest: digest).utf8.count) ?? 0)
        }
        s.st_blocks = blkcnt_t((Int64(s.st_size) + 511) / 512)
        return s
    }

    func entryParameters(_ number: UInt64) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = fuse_ino_t(number)
        entry.attr = attributes(number) ?? stat()
        entry.attr_timeout = timeout
        entry.entry_timeout = timeout
        return entry
    }

    /// An errno for FUSE.
    struct Failure: Error { var code: Int32 }

    /// Bytes of a file node at `offset`, at most `count`.
    func read(_ node: Node, offset: Int64, count: Int) -> Result<[UInt8], Failure> {
        switch node {
        case .info(let reference, let digest):
            guard let info = try? store.layer(reference: reference, digest: digest).info else { return .failure(Failure(code: EIO)) }
            let start = min(Int(offset), info.count)
            return .success(Array(info[start ..< min(info.count, start + count)]))
        case .blob(let reference, let digest):
            guard let source = try? store.blob(reference: reference, digest: digest) else { return .failure(Failure(code: EIO)) }
            let length = Int(max(0, min(Int64(count), source.size - offset)))
            var bytes = [UInt8](repeating: 0, count: length)
            do {
                try bytes.withUnsafeMutableBytes { try source.read(into: $0, at: offset) }
            } catch {
                store.logger.warning("reading blob failed", metadata: ["layer": "\(digest)", "error": "\(error)"])
                return .failure(Failure(code: EIO))
            }
            return .success(bytes)
        default:
            return .failure(Failure(code: EISDIR))
        }
    }

    static func from(_ request: fuse_req_t?) -> LayerStoreFileSystem {
        Unmanaged<LayerStoreFileSystem>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
    }

    /// libfuse's low-level operations: lookup/getattr/readlink/open/read for the tree, `create` and
    /// `rmdir` for containers/storage's use and release notifications (both answered ENOENT, as it expects).
    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.lookup = { request, parent, name in
            let fs = LayerStoreFileSystem.from(request)
            guard let name, let parentNode = fs.node(parent) else { fuse_reply_err(request, ENOENT); return }
            switch fs.lookup(parent: parentNode, name: String(cString: name)) {
            case .success(let node):
                var entry = fs.entryParameters(fs.number(node))
                fuse_reply_entry(request, &entry)
            case .failure(.notHere(let why)):
                if case .layer = parentNode, String(cString: name) != "use" {
                    fs.store.logger.debug("not served", metadata: ["why": "\(why)"])
                }
                fuse_reply_err(request, ENOENT)
            case .failure(.failed(let why)):
                fs.store.logger.warning("lookup failed", metadata: ["error": "\(why)"])
                fuse_reply_err(request, EIO)
            }
        }
        ops.forget = { request, _, _ in fuse_reply_none(request) }
        ops.forget_multi = { request, _, _ in fuse_reply_none(request) }
        ops.getattr = { request, number, _ in
            let fs = LayerStoreFileSystem.from(request)
            guard var attributes = fs.attributes(number) else { fuse_reply_err(request, ENOENT); return }
            fuse_reply_attr(request, &attributes, fs.timeout)
        }
        ops.readlink = { request, number in
            let fs = LayerStoreFileSystem.from(request)
            guard case .diff(let reference, let digest)? = fs.node(number) else { fuse_reply_err(request, EINVAL); return }
            guard let target = try? fs.store.diff(reference: reference, digest: digest) else { fuse_reply_err(request, EIO); return }
            fuse_reply_readlink(request, target)
        }
        ops.open = { request, number, info in
            let fs = LayerStoreFileSystem.from(request)
            guard let info else { return }
            switch fs.node(number) {
            case .info?, .blob?:
                guard info.pointee.flags & O_ACCMODE == O_RDONLY else { fuse_reply_err(request, EROFS); return }
                fuse_reply_open(request, info)
            case nil: fuse_reply_err(request, ENOENT)
            default: fuse_reply_err(request, EISDIR)
            }
        }
        ops.read = { request, number, size, offset, _ in
            let fs = LayerStoreFileSystem.from(request)
            guard let node = fs.node(number) else { fuse_reply_err(request, ENOENT); return }
            switch fs.read(node, offset: Int64(offset), count: size) {
            case .success(let bytes): bytes.withUnsafeBytes { _ = fuse_reply_buf(request, $0.baseAddress, $0.count) }
            case .failure(let failure): fuse_reply_err(request, failure.code)
            }
        }
        ops.opendir = { request, number, info in
            let fs = LayerStoreFileSystem.from(request)
            guard let info else { return }
            guard let node = fs.node(number) else { fuse_reply_err(request, ENOENT); return }
            switch node {
            case .root, .reference, .layer: fuse_reply_open(request, info)
            default: fuse_reply_err(request, ENOTDIR)
            }
        }
        // Nothing is listed: the names are BASE64 of any reference and any digest, found by lookup.
        ops.readdir = { request, _, _, _, _ in fuse_reply_buf(request, nil, 0) }
        ops.create = { request, parent, name, _, _ in
            let fs = LayerStoreFileSystem.from(request)
            if let name, String(cString: name) == "use", case .layer(let reference, let digest)? = fs.node(parent) {
                fs.store.count(reference: reference, digest: digest, by: 1)
            }
            fuse_reply_err(request, ENOENT)
        }
        ops.rmdir = { request, parent, name in
            let fs = LayerStoreFileSystem.from(request)
            if let name, case .reference(let reference)? = fs.node(parent), LayerStoreFileSystem.isDigest(String(cString: name)) {
                fs.store.count(reference: reference, digest: String(cString: name), by: -1)
            }
            fuse_reply_err(request, ENOENT)
        }
        return ops
    }
}

/// The store's FUSE mount: a libfuse session served by its threaded loop on a dedicated thread.
/// ``unmount()`` detaches it and then unmounts every layer the store mounted.
public final class LayerStoreMount: @unchecked Sendable {
    public let mountpoint: String
    let fileSystem: LayerStoreFileSystem
    private let session: OpaquePointer
    private var thread = pthread_t()
    private let finished = DispatchSemaphore(value: 0)
    private let done = Mutex(false)
    private var connection: UInt32 = 0

    init(fileSystem: LayerStoreFileSystem, mountpoint: String) throws {
        self.fileSystem = fileSystem
        self.mountpoint = mountpoint
        // A store that died without unmounting leaves ENOTCONN behind: detach it.
        var info = stat()
        if stat(mountpoint, &info) != 0 && errno == ENOTCONN { _ = umount2(mountpoint, Int32(MNT_DETACH)) }
        var options = "fsname=estargz-store,subtype=estargz-store"
        if geteuid() == 0 { options += ",allow_other" }
        let arguments: [UnsafeMutablePointer<CChar>?] = (["estargz-store", "-o", options] as [String]).map { strdup($0) }
        defer { arguments.forEach { free($0) } }
        var argv = arguments
        var ops = LayerStoreFileSystem.operations()
        let userdata = Unmanaged.passUnretained(fileSystem).toOpaque()
        let created = argv.withUnsafeMutableBufferPointer { buffer -> OpaquePointer? in
            var args = fuse_args(argc: Int32(buffer.count), argv: buffer.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            return fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, userdata)
        }
        guard let created else { throw SnapshotterError.invalidArgument("fuse_session_new failed for \(mountpoint)") }
        guard fuse_session_mount(created, mountpoint) == 0 else {
            let code = errno
            fuse_session_destroy(created)
            throw SnapshotterError.invalidArgument("cannot mount the layer store at \(mountpoint): \(String(cString: strerror(code)))")
        }
        session = created
        let box = Unmanaged.passRetained(self).toOpaque()
        let started = pthread_create(&thread, nil, { argument in
            let mount = Unmanaged<LayerStoreMount>.fromOpaque(argument!).takeRetainedValue()
            _ = cfuse3_session_loop_mt(mount.session, 16)
            mount.finished.signal()
            return nil
        }, box)
        guard started == 0 else {
            Unmanaged<LayerStoreMount>.fromOpaque(box).release()
            fuse_session_unmount(created)
            fuse_session_destroy(created)
            throw SnapshotterError.invalidArgument("cannot start the layer store's FUSE loop: \(String(cString: strerror(started)))")
        }
        var mounted = stat()
        connection = stat(mountpoint, &mounted) == 0 ? cfuse3_minor(mounted.st_dev) : 0
    }

    /// See ``AdditionalLayerStore/statisticsJSON``.
    public var statisticsJSON: String { fileSystem.store.statisticsJSON }

    /// Detaches the store, ends its loop and unmounts every layer it mounted; idempotent.
    public func unmount() {
        done.withLock { done in
            guard !done else { return }
            done = true
            fuse_session_exit(session)
            let detached = umount2(mountpoint, Int32(MNT_DETACH)) == 0
            if finished.wait(timeout: .now() + 2) == .timedOut {
                // Still in use (a lookup in flight): end the connection through fusectl.
                let fd = open("/sys/fs/fuse/connections/\(connection)/abort", O_WRONLY)
                if fd >= 0 { _ = write(fd, "1", 1); close(fd) }
                finished.wait()
            }
            pthread_join(thread, nil)
            if !detached { fuse_session_unmount(session) }
            fuse_session_destroy(session)
            fileSystem.store.shutdown()
        }
    }
}
