import EStargzCore
import Foundation
import Synchronization

/// Verified chunks on disk, one file per chunk named by the hex of its SHA-256, so layers
/// and processes that share a chunk share its file.
///
/// Files are written to a temporary name and renamed into place (readers never see half a
/// chunk), hashed again on every hit (a file on disk can change; a corrupt one is deleted and
/// reported as a miss), and evicted oldest-access first when the directory grows past its bound.
///
/// A cache that cannot be written (a full or read-only disk) costs nothing but the caching: the
/// chunk was already verified and is served from memory and the network as before, the partial
/// temporary file is removed, the first failure of each kind is reported in one line and the
/// rest are only counted (``storeFailures``). When the disk is full the cache shrinks its bound to
/// what it holds and evicts, so it keeps working within the space there is.
public final class DiskChunkCache: ChunkCache {
    /// The cache directory.
    public let directory: String
    /// Most bytes the directory may hold before eviction.
    public let capacity: Int64
    private let state: Mutex<State>
    private let report: @Sendable (String) -> Void

    private struct State {
        var bytes: Int64 = 0
        /// The bound in force: ``capacity``, or less after the disk filled up.
        var limit: Int64 = 0
        var storeFailures: Int64 = 0
        var reportedErrors: Set<Int32> = []
        var hits: Int64 = 0
        var misses: Int64 = 0
        var verificationFailures: Int64 = 0
    }

    /// One line on stderr.
    public static let standardErrorReport: @Sendable (String) -> Void = { message in
        let line = "estargz cache: \(message)\n"
        line.withCString { _ = write(2, $0, strlen($0)) }
    }

    /// Opens (creating) `directory` with a bound of `capacity` bytes (1 GiB by default).
    /// `report` receives one line for the first store failure of each kind (stderr by default).
    public init(directory: String, capacity: Int64 = 1 << 30,
                report: @escaping @Sendable (String) -> Void = DiskChunkCache.standardErrorReport) throws(RegistryError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .local("cannot create cache directory \(directory): \(error)")
        }
        self.directory = directory
        self.capacity = capacity
        self.report = report
        Self.removeOrphanedTemporaries(in: directory)
        var initial = State()
        initial.limit = capacity
        initial.bytes = Self.files(in: directory).reduce(0) { $0 + $1.size }
        self.state = Mutex(initial)
    }

    /// Hits, misses and corrupt files found so far.
    public var counts: (hits: Int64, misses: Int64, verificationFailures: Int64) {
        state.withLock { ($0.hits, $0.misses, $0.verificationFailures) }
    }

    /// Chunks that could not be written (each one is still served, from memory and the network).
    public var storeFailures: Int64 { state.withLock { $0.storeFailures } }

    /// The file that holds the chunk `digest`.
    public func path(for digest: SHA256Digest) -> String {
        directory + "/" + digest.description.dropFirst("sha256:".count)
    }

    /// Whether the chunk's file is there (it is verified only when looked up).
    public func holds(_ digest: SHA256Digest) -> Bool {
        access(path(for: digest), F_OK) == 0
    }

    public func lookup(_ digest: SHA256Digest, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        let path = path(for: digest)
        guard let source = try? FileSource(path: path), source.size == Int64(buffer.count),
              (try? source.read(into: buffer, at: 0)) != nil else {
            state.withLock { $0.misses += 1 }
            return false
        }
        guard SHA256Digest.of(UnsafeRawBufferPointer(buffer)) == digest else {
            unlink(path)
            state.withLock {
                $0.verificationFailures += 1
                $0.misses += 1
                $0.bytes -= Int64(buffer.count)
            }
            return false
        }
        // The access time orders eviction (mtime, since many file systems mount noatime).
        utimes(path, nil)
        state.withLock { $0.hits += 1 }
        return true
    }

    public func store(_ digest: SHA256Digest, _ bytes: UnsafeRawBufferPointer) {
        guard Int64(bytes.count) <= capacity else { return }
        let path = path(for: digest)
        if access(path, F_OK) == 0 { return }
        let temporary = "\(path).tmp.\(getpid()).\(UInt64.random(in: 0 ... .max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return failed(errno, "create \(temporary)", size: bytes.count) }
        var done = 0, code: Int32 = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { code = n == 0 ? ENOSPC : errno; break }
            done += n
        }
        // A close can be where a full disk shows (delayed allocation, network file systems).
        if close(fd) != 0, code == 0 { code = errno }
        guard done == bytes.count, code == 0 else {
            unlink(temporary)
            return failed(code, "write \(temporary)", size: bytes.count)
        }
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            return failed(code, "rename to \(path)", size: bytes.count)
        }
        let over = state.withLock { state -> Bool in
            state.bytes += Int64(bytes.count)
            return state.bytes > state.limit
        }
        if over { evict(keeping: path) }
    }

    /// Counts a failed store, reports the first of each errno, and on a full disk lowers the
    /// bound to what the directory holds and evicts, so the next chunks find room.
    private func failed(_ code: Int32, _ operation: String, size: Int) {
        let first = state.withLock { state -> Bool in
            state.storeFailures += 1
            if code == ENOSPC || code == EDQUOT {
                state.limit = max(0, min(state.limit, state.bytes - Int64(size)))
            }
            return state.reportedErrors.insert(code).inserted
        }
        if first {
            report("cannot keep chunks in \(directory) (\(operation): \(String(cString: strerror(code)))); "
                + "serving them from memory and the registry, further failures are only counted")
        }
        if code == ENOSPC || code == EDQUOT { evict() }
    }

    /// Deletes the least recently used files (never `keeping`, the one just stored: file times
    /// are as coarse as the kernel's tick) until the directory is under 90% of its bound.
    public func evict(keeping: String? = nil) {
        let files = Self.files(in: directory).sorted { $0.modified < $1.modified }
        var total = files.reduce(0) { $0 + $1.size }
        let target = state.withLock { $0.limit } * 9 / 10
        for file in files where total > target && file.path != keeping {
            if unlink(file.path) == 0 { total -= file.size }
        }
        state.withLock { $0.bytes = total }
    }

    /// Removes the temporary files of writers that died mid-write (`NAME.tmp.PID.RANDOM` whose
    /// process is gone), so a crash leaves no partial chunk behind for long.
    static func removeOrphanedTemporaries(in directory: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names {
            let parts = name.split(separator: ".")
            guard parts.count == 4, parts[1] == "tmp", let pid = pid_t(parts[2]) else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { unlink(directory + "/" + name) }
        }
    }

    private static func files(in directory: String) -> [(path: String, size: Int64, modified: Double)] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        return names.compactMap { name in
            guard name.count == 64 else { return nil }
            let path = directory + "/" + name
            var info = stat()
            guard stat(path, &info) == 0 else { return nil }
            return (path, Int64(info.st_size), Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
        }
    }
}
