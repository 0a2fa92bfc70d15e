import CFuse3
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A mounted ``LazyFileSystem``: a libfuse session served by its threaded loop on a dedicated
/// thread. Call ``unmount()`` when done (it is idempotent); ``wait()`` blocks until the mount
/// goes away, by ``unmount()`` or by an outside `umount`.
public final class LazyMount: @unchecked Sendable {
    /// Where the tree is mounted.
    public let mountpoint: String
    /// The file system being served.
    public let fileSystem: LazyFileSystem

    // The session pointer is only touched at mount, at unmount (serialized by `teardown`) and by
    // the loop thread, which ends before the session is destroyed.
    private let session: OpaquePointer
    private var connection: UInt32 = 0
    private let finished = DispatchSemaphore(value: 0)
    /// Set once unmounting starts (the loop then ends on purpose, not by accident).
    private let unmounting = Atomic<Bool>(false)
    /// Held for the whole teardown, so every caller of unmount() returns only after it is complete.
    private let teardown = Mutex<Bool>(false)
    private var thread = pthread_t()

    /// Counters of the mount (the same as the file system's).
    public var statistics: LazyFSStatistics { fileSystem.statistics }

    init(fileSystem: LazyFileSystem, mountpoint: String) throws {
        self.fileSystem = fileSystem
        self.mountpoint = mountpoint
        try Self.clearStaleMount(mountpoint)

        var options = "ro,default_permissions,fsname=estargz,subtype=estargz,max_read=\(fileSystem.options.maximumRead)"
        if fileSystem.options.allowOther { options += ",allow_other" }
        let arguments: [UnsafeMutablePointer<CChar>?] = (["estargz", "-o", options] as [String]).map { strdup($0) }
        defer { arguments.forEach { free($0) } }
        var argv = arguments
        var ops = FUSEOperations.table()
        let userdata = Unmanaged.passUnretained(fileSystem).toOpaque()
        let created = argv.withUnsafeMutableBufferPointer { buffer -> OpaquePointer? in
            var args = fuse_args(argc: Int32(buffer.count), argv: buffer.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            return fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, userdata)
        }
        guard let created else {
            throw LazyFSError.mountFailed(mountpoint: mountpoint, operation: "fuse_session_new", errno: EINVAL)
        }
        guard fuse_session_mount(created, mountpoint) == 0 else {
            fuse_session_destroy(created)
            throw LazyFSError.mountFailed(mountpoint: mountpoint, operation: "fuse_session_mount", errno: errno)
        }
        session = created

        let box = Unmanaged.passRetained(self).toOpaque()
        let started = pthread_create(&thread, nil, { argument in
            let mount = Unmanaged<LazyMount>.fromOpaque(argument!).takeRetainedValue()
            let status = cfuse3_session_loop_mt(mount.session, mount.fileSystem.options.maximumIdleThreads)
            if status != 0 && !mount.unmounting.load(ordering: .relaxed) {
                let line = "estargz lazyfs: session loop for \(mount.mountpoint) ended with status \(status)\n"
                line.withCString { _ = write(2, $0, strlen($0)) }
            }
            mount.finished.signal()
            return nil
        }, box)
        guard started == 0 else {
            Unmanaged<LazyMount>.fromOpaque(box).release()
            fuse_session_unmount(created)
            fuse_session_destroy(created)
            throw LazyFSError.mountFailed(mountpoint: mountpoint, operation: "pthread_create", errno: started)
        }
        // Only now: any request to the mount (even this stat) waits for the loop to answer INIT.
        var info = stat()
        connection = stat(mountpoint, &info) == 0 ? cfuse3_minor(info.st_dev) : 0
        fileSystem.startFetching()
    }

    /// Detaches the mount, stops the session loop and background fetching, and waits for them.
    /// Open files on the mount do not block it: if the loop does not end within two seconds
    /// of the detach, the FUSE connection is aborted. A read stuck inside its source (a source
    /// that never returns) still holds its worker thread, and so this call, until it returns.
    public func unmount() {
        teardown.withLock { done in
            guard !done else { return }
            done = true
            unmounting.store(true, ordering: .relaxed)
            fileSystem.stopFetching()
            fuse_session_exit(session)
            // A lazy detach: the superblock goes when the last user does, which ends the loop's reads.
            let detached = umount2(mountpoint, Int32(MNT_DETACH)) == 0
            if finished.wait(timeout: .now() + 2) == .timedOut {
                abortConnection()
                finished.wait()
            }
            finished.signal()  // for wait()
            pthread_join(thread, nil)
            // libfuse's own unmount only when ours failed (it would complain about a mount already gone).
            if !detached { fuse_session_unmount(session) }
            fuse_session_destroy(session)
        }
    }

    /// Blocks until the session loop ends (after ``unmount()``, or when the mount was removed
    /// from outside), then releases the session.
    public func wait() {
        finished.wait()
        finished.signal()  // let unmount() or another waiter through as well
        unmount()
    }

    /// Ends the connection through fusectl, which fails every pending and future request.
    private func abortConnection() {
        let path = "/sys/fs/fuse/connections/\(connection)/abort"
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { return }
        _ = write(fd, "1", 1)
        close(fd)
    }

    /// A FUSE daemon that died without unmounting leaves its mount point answering ENOTCONN;
    /// detach it so the new mount can take its place. `stat` may still be answered from the
    /// kernel's attribute cache; `statvfs` always asks the daemon.
    static func clearStaleMount(_ mountpoint: String) throws {
        var info = stat()
        var system = statvfs()
        guard stat(mountpoint, &info) != 0 || (statvfs(mountpoint, &system) != 0 && errno == ENOTCONN) else {
            guard info.st_mode & 0o170000 == 0o040000 else {
                throw LazyFSError.mountFailed(mountpoint: mountpoint, operation: "mount (not a directory)", errno: ENOTDIR)
            }
            return
        }
        let code = errno
        guard code == ENOTCONN else {
            throw LazyFSError.mountFailed(mountpoint: mountpoint, operation: "stat", errno: code)
        }
        guard umount2(mountpoint, Int32(MNT_DETACH)) == 0 else {
            throw LazyFSError.mountFailed(mountpoint: mountpoint, operation: "umount2 (stale mount)", errno: errno)
        }
        let line = "estargz lazyfs: detached a stale mount at \(mountpoint)\n"
        line.withCString { _ = write(2, $0, strlen($0)) }
    }
}
