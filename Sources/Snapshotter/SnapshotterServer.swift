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
        do {
            try await snapshotter.cleanup()
            try await serve(snapshotter, socketPath: socketPath, ready: ready)
        } catch {
            await remote?.shutdown()
            throw error
        }
        await remote?.shutdown()
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
