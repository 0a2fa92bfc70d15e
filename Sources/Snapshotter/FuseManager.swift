import Dispatch
import Foundation
import Logging
import Synchronization

/// Where the lazily mounted layers of remote snapshots are served: by ``RemoteLayers`` in the
/// snapshotter's own process, or by a fuse manager (``FuseManagerClient``), a separate process
/// whose FUSE mounts outlive the snapshotter, so running containers keep reading while the
/// snapshotter is restarted or killed.
public protocol LayerMounting: Sendable {
    /// Mounts the eStargz layer the labels name at `directory`; returns its usage (see
    /// ``RemoteLayers/usage(of:)``).
    @discardableResult
    func mount(labels: [String: String], at directory: String) throws -> (size: Int64, inodes: Int64)
    /// Unmounts the layer at `directory`, if any.
    func unmount(_ directory: String)
    /// The directories served now; a snapshotter that restarts leaves these alone instead of
    /// mounting them again.
    func mountedDirectories() throws -> Set<String>
    /// Called once when the snapshotter stops: in-process layers are unmounted, a fuse manager's stay.
    func shutdown() async
}

/// The fuse manager's side: serves ``RemoteLayers`` to snapshotters on a unix socket, one JSON
/// request and one JSON response per line per connection:
///
/// ```
/// {"op":"mount","directory":"/…/snapshots/7/fs","labels":{…}}  → {"ok":true,"size":…,"inodes":…}
/// {"op":"unmount","directory":"/…/snapshots/7/fs"}              → {"ok":true}
/// {"op":"list"}                                               → {"ok":true,"directories":[…],"pid":…}
/// ```
///
/// Any failure is `{"ok":false,"error":"…"}`. `estargz fuse-manager` runs it; the snapshotter
/// starts one (`[fuse_manager] enable = true`) when none answers on the socket.
public enum FuseManager {
    struct Request: Codable {
        var op: String
        var directory: String?
        var labels: [String: String]?
    }

    struct Response: Codable {
        var ok: Bool
        var error: String?
        var size: Int64?
        var inodes: Int64?
        var directories: [String]?
        var pid: Int32?
    }

    private static let logger = Logger(label: "estargz.fuse-manager")

    /// Listens on `socketPath` (replacing a stale socket file; `SOCKET.pid` gets this process's
    /// id) and answers requests on Dispatch threads, each against `layers`. Returns once
    /// listening; the caller keeps the process alive and unmounts `layers` at the end.
    public static func listen(socketPath: String, layers: RemoteLayers) throws {
        let directory = (socketPath as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let fd = try UnixSocket.listen(socketPath)
        try "\(getpid())\n".write(toFile: socketPath + ".pid", atomically: true, encoding: .utf8)
        let thread = Thread {
            while true {
                let connection = accept(fd, nil, nil)
                if connection < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    logger.error("accept failed", metadata: ["errno": "\(errno)"])
                    return
                }
                DispatchQueue.global().async { handle(connection, layers: layers) }
            }
        }
        thread.start()
    }

    private static func handle(_ connection: Int32, layers: RemoteLayers) {
        defer { close(connection) }
        guard let line = UnixSocket.readLine(connection) else { return }
        var response = Response(ok: true)
        do {
            let request = try JSONDecoder().decode(Request.self, from: Data(line.utf8))
            switch request.op {
            case "mount":
                guard let directory = request.directory, let labels = request.labels else {
                    throw SnapshotterError.invalidArgument("mount needs directory and labels")
                }
                (response.size, response.inodes) = try layers.mount(labels: labels, at: directory)
                logger.info("mounted", metadata: ["directory": "\(directory)"])
            case "unmount":
                guard let directory = request.directory else { throw SnapshotterError.invalidArgument("unmount needs directory") }
                layers.unmount(directory)
                logger.info("unmounted", metadata: ["directory": "\(directory)"])
            case "list":
                response.directories = layers.mountedDirectories().sorted()
                response.pid = getpid()
            default:
                throw SnapshotterError.invalidArgument("unknown op \(request.op)")
            }
        } catch {
            response = Response(ok: false, error: "\(error)")
        }
        guard let data = try? JSONEncoder().encode(response) else { return }
        UnixSocket.writeAll(connection, Array(data) + [0x0a])
    }
}

/// The snapshotter's side of a fuse manager: every ``LayerMounting`` call is one request on its
/// socket. Mounts stay with the manager when the snapshotter stops.
public final class FuseManagerClient: LayerMounting {
    /// The manager's socket.
    public let socketPath: String
    /// How a manager is started when none answers (``connectOrStart(socketPath:arguments:log:)``).
    private let arguments: [String]
    private let log: String

    private init(socketPath: String, arguments: [String], log: String) {
        self.socketPath = socketPath
        self.arguments = arguments
        self.log = log
    }

    /// Connects to the manager on `socketPath`, or when none answers starts one — this
    /// executable's `fuse-manager` command with `arguments` after `--address SOCKET`, in its own
    /// session (so signals to the snapshotter's process group do not reach it), output appended to
    /// `log` — and waits up to 20 s for it to answer.
    public static func connectOrStart(socketPath: String, arguments: [String], log: String) throws -> FuseManagerClient {
        let client = FuseManagerClient(socketPath: socketPath, arguments: arguments, log: log)
        try client.startUnlessAnswering()
        return client
    }

    /// Starts a manager, as ``connectOrStart(socketPath:arguments:log:)`` did, when none answers
    /// (the one serving died); returns whether it had to. The new manager serves nothing yet.
    @discardableResult
    public func startUnlessAnswering() throws -> Bool {
        if (try? mountedDirectories()) != nil { return false }
        try Self.spawn(["fuse-manager", "--address", socketPath] + arguments, log: log)
        for _ in 0 ..< 400 {
            if (try? mountedDirectories()) != nil { return true }
            usleep(50_000)
        }
        throw SnapshotterError.internal("the fuse manager did not answer on \(socketPath) (its log: \(log))")
    }

    /// The manager's process id (from its `list` answer).
    public func managerPID() throws -> Int32 {
        guard let pid = try call(.init(op: "list")).pid else { throw SnapshotterError.internal("fuse manager sent no pid") }
        return pid
    }

    public func mount(labels: [String: String], at directory: String) throws -> (size: Int64, inodes: Int64) {
        let response = try call(.init(op: "mount", directory: directory, labels: labels))
        return (response.size ?? 0, response.inodes ?? 0)
    }

    public func unmount(_ directory: String) {
        _ = try? call(.init(op: "unmount", directory: directory))
    }

    public func mountedDirectories() throws -> Set<String> {
        Set(try call(.init(op: "list")).directories ?? [])
    }

    /// The manager keeps serving: that is what it is for.
    public func shutdown() async {}

    private func call(_ request: FuseManager.Request) throws -> FuseManager.Response {
        let fd = try UnixSocket.connect(socketPath)
        defer { close(fd) }
        UnixSocket.writeAll(fd, Array(try JSONEncoder().encode(request)) + [0x0a])
        guard let line = UnixSocket.readLine(fd) else {
            throw SnapshotterError.internal("the fuse manager on \(socketPath) closed the connection")
        }
        let response = try JSONDecoder().decode(FuseManager.Response.self, from: Data(line.utf8))
        guard response.ok else { throw SnapshotterError.internal("fuse manager: \(response.error ?? "failed")") }
        return response
    }

    /// `posix_spawn` of `/proc/self/exe` in a new session, stdin from /dev/null, output to `log`.
    private static func spawn(_ arguments: [String], log: String) throws {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { throw SnapshotterError.internal("readlink /proc/self/exe: errno \(errno)") }
        let executable = String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(0x80))  // POSIX_SPAWN_SETSID
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of ours: an inherited descriptor (the socket pair through which whoever
        // started us learns that we exited, say) would outlive us in the manager.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            if let fd = Int32(name), fd > 2 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        }
        let argv: [UnsafeMutablePointer<CChar>?] = (["estargz"] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let status = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard status == 0 else { throw SnapshotterError.internal("cannot start the fuse manager \(executable): errno \(status)") }
        // Reap it if it exits while we run; once we are gone, init does.
        let child = pid
        DispatchQueue.global().async {
            var code: Int32 = 0
            waitpid(child, &code, 0)
        }
    }
}

/// Blocking unix-socket helpers for the fuse manager's line protocol.
enum UnixSocket {
    static func address(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SnapshotterError.invalidArgument("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    static func listen(_ path: String) throws -> Int32 {
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SnapshotterError.internal("socket: errno \(errno)") }
        var address = try address(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 64) == 0 else {
            let code = errno
            close(fd)
            throw SnapshotterError.internal("cannot listen on \(path): errno \(code)")
        }
        return fd
    }

    static func connect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SnapshotterError.internal("socket: errno \(errno)") }
        var address = try address(path)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            let code = errno
            close(fd)
            throw SnapshotterError.internal("cannot connect to the fuse manager on \(path): errno \(code)")
        }
        return fd
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { return }
            done += n
        }
    }

    /// Reads up to the first newline (at most 16 MiB); nil when the peer closes first.
    static func readLine(_ fd: Int32) -> String? {
        var collected: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while collected.count < 16 << 20 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { return nil }
            if let newline = buffer[0 ..< n].firstIndex(of: 0x0a) {
                collected += buffer[0 ..< newline]
                return String(decoding: collected, as: UTF8.self)
            }
            collected += buffer[0 ..< n]
        }
        return nil
    }
}
