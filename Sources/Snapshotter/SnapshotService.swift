import Foundation
import GRPCCore
import SwiftProtobuf

/// containerd's `containerd.services.snapshots.v1.Snapshots` API over an ``OverlaySnapshotter``.
/// The `snapshotter` field of requests is ignored: a proxy plugin serves exactly one snapshotter.
struct SnapshotService: Containerd_Services_Snapshots_V1_Snapshots.SimpleServiceProtocol {
    let snapshotter: OverlaySnapshotter

    func prepare(request: Containerd_Services_Snapshots_V1_PrepareSnapshotRequest,
                 context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_PrepareSnapshotResponse {
        let mounts = try await call { try await snapshotter.prepare(key: request.key, parent: request.parent, labels: request.labels) }
        return .with { $0.mounts = mounts.map(Self.message) }
    }

    func view(request: Containerd_Services_Snapshots_V1_ViewSnapshotRequest,
              context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_ViewSnapshotResponse {
        let mounts = try await call { try await snapshotter.view(key: request.key, parent: request.parent, labels: request.labels) }
        return .with { $0.mounts = mounts.map(Self.message) }
    }

    func mounts(request: Containerd_Services_Snapshots_V1_MountsRequest,
                context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_MountsResponse {
        let mounts = try await call { try await snapshotter.mounts(key: request.key) }
        return .with { $0.mounts = mounts.map(Self.message) }
    }

    func commit(request: Containerd_Services_Snapshots_V1_CommitSnapshotRequest,
                context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await call { try await snapshotter.commit(name: request.name, key: request.key, labels: request.labels) }
        return Google_Protobuf_Empty()
    }

    func remove(request: Containerd_Services_Snapshots_V1_RemoveSnapshotRequest,
                context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await call { try await snapshotter.remove(key: request.key) }
        return Google_Protobuf_Empty()
    }

    func stat(request: Containerd_Services_Snapshots_V1_StatSnapshotRequest,
              context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_StatSnapshotResponse {
        let record = try await call { try await snapshotter.stat(key: request.key) }
        return .with { $0.info = Self.info(record) }
    }

    func update(request: Containerd_Services_Snapshots_V1_UpdateSnapshotRequest,
                context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_UpdateSnapshotResponse {
        let record = try await call {
            try await snapshotter.update(key: request.info.name, labels: request.info.labels, paths: request.updateMask.paths)
        }
        return .with { $0.info = Self.info(record) }
    }

    func list(request: Containerd_Services_Snapshots_V1_ListSnapshotsRequest,
              response: RPCWriter<Containerd_Services_Snapshots_V1_ListSnapshotsResponse>,
              context: ServerContext) async throws {
        let records = await snapshotter.list()
        // containerd's own service sends batches of 100.
        for start in stride(from: 0, to: records.count, by: 100) {
            let batch = records[start ..< min(records.count, start + 100)]
            try await response.write(.with { $0.info = batch.map(Self.info) })
        }
    }

    func usage(request: Containerd_Services_Snapshots_V1_UsageRequest,
               context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_UsageResponse {
        let usage = try await call { try await snapshotter.usage(key: request.key) }
        return .with {
            $0.size = usage.size
            $0.inodes = usage.inodes
        }
    }

    func cleanup(request: Containerd_Services_Snapshots_V1_CleanupRequest,
                 context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await call { try await snapshotter.cleanup() }
        return Google_Protobuf_Empty()
    }

    // MARK: -

    /// Runs `body`, turning a ``SnapshotterError`` into the gRPC status containerd expects
    /// (it maps NotFound / AlreadyExists / FailedPrecondition back to its errdefs).
    private func call<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as SnapshotterError {
            let code: RPCError.Code
            switch error {
            case .notFound: code = .notFound
            case .alreadyExists: code = .alreadyExists
            case .failedPrecondition: code = .failedPrecondition
            case .invalidArgument: code = .invalidArgument
            case .internal: code = .internalError
            }
            throw RPCError(code: code, message: error.description)
        }
    }

    static func message(_ mount: SnapshotMount) -> Containerd_Types_Mount {
        .with {
            $0.type = mount.type
            $0.source = mount.source
            $0.options = mount.options
        }
    }

    static func info(_ record: SnapshotRecord) -> Containerd_Services_Snapshots_V1_Info {
        .with {
            $0.name = record.key
            $0.parent = record.parent
            switch record.kind {
            case .view: $0.kind = .view
            case .active: $0.kind = .active
            case .committed: $0.kind = .committed
            }
            $0.createdAt = Google_Protobuf_Timestamp(date: record.created)
            $0.updatedAt = Google_Protobuf_Timestamp(date: record.updated)
            $0.labels = record.labels
        }
    }
}
