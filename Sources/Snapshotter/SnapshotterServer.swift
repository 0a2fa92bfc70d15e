import EStargzRemote
import Foundation
import GRPCCore
import Logging
import GRPCNIOTransportHTTP2Posix

/// Serves a snapshotter to containerd as a proxy plugin:
///
/// ```toml
/// [proxy_plugins.estargz]
///   type = "snapshot"
///   address = "/run/estargz/snapshotter.sock"
/// ```
public enum SnapshotterServer {
    /// Serves the snapshotter whose state lives under `root` on the unix socket `socketPath`
    /// until the task is cancelled. A stale socket file from an earlier run is replaced.
    public static func serve(root: String, socketPath: String, remote: (any LayerMounting)? = nil,
                             ready: (@Sendable () -> Void)? = nil) async throws {
        let snapshotter = try OverlaySnapshotter(root: root, remote: remote)
        defer { unlink(socketPath) }
        for failure in await snapshotter.remountRemoteSnapshots() {
            Logger(label: "estargz.snapshotter").error("cannot remount a remote snapshot", metadata: ["snapshot": "\(failure)"])
        }
        let watchdog = (remote as? FuseManagerClient).map { watch($0, snapshotter) }
        defer { watchdog?.cancel() }
        do {
            try await snapshotter.cleanup()
            try await serve(snapshotter, socketPath: socketPath, ready: ready)
        } catch {
            await remote?.shutdown()
            throw error
        }
        await remote?.shutdown()
    }

    /// Once a second: when the fuse manager no longer answers (it died), a new one is started and
    /// every lazy layer is mounted again in it, stale mounts detached, so new containers of those
    /// images start again. Containers running on the dead mounts get errors from them: a FUSE
    /// connection dies with the process that served it.
    private static func watch(_ manager: FuseManagerClient, _ snapshotter: OverlaySnapshotter) -> Task<Void, Never> {
        let logger = Logger(label: "estargz.snapshotter")
        return Task(executorPreference: BlockingBridge.shared) {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                guard !Task.isCancelled else { return }
                do {
                    guard try manager.startUnlessAnswering() else { continue }
                    logger.warning("the fuse manager stopped answering: started a new one, mounting the lazy layers again")
                    for failure in await snapshotter.remountRemoteSnapshots() {
                        logger.error("cannot remount a remote snapshot", metadata: ["snapshot": "\(failure)"])
                    }
                } catch {
                    logger.error("cannot start a fuse manager", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    private static func serve(_ snapshotter: OverlaySnapshotter, socketPath: String,
                              ready: (@Sendable () -> Void)?) async throws {
        let directory = (socketPath as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        unlink(socketPath)
        try await withGRPCServer(
            transport: .http2NIOPosix(address: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext),
            services: [SnapshotService(snapshotter: snapshotter)]
        ) { server in
            _ = try await server.listeningAddress
            ready?()
            try await withTaskCancellationHandler {
                while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) }
            } onCancel: {
                server.beginGracefulShutdown()
            }
        }
    }
}
