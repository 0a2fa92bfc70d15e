import EStargzRemote
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf

/// The containerd calls of a pull, in one namespace (and lease, once there is one).
struct ContainerdSession: Sendable {
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    let namespace: String
    var lease: String?

    /// containerd reads the namespace, and the lease that keeps new content and snapshots from
    /// its garbage collector, from these gRPC headers.
    var metadata: Metadata {
        var metadata = Metadata()
        metadata.addString(namespace, forKey: "containerd-namespace")
        if let lease { metadata.addString(lease, forKey: "containerd-lease") }
        return metadata
    }

    private var content: Containerd_Services_Content_V1_Content.Client<HTTP2ClientTransport.Posix> { .init(wrapping: client) }
    private var snapshots: Containerd_Services_Snapshots_V1_Snapshots.Client<HTTP2ClientTransport.Posix> { .init(wrapping: client) }

    /// Runs one call, turning its failure into ``ContainerdPullError/containerd(call:code:message:)``.
    private func call<T: Sendable>(_ name: String, _ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as RPCError {
            throw ContainerdPullError.containerd(call: name, code: "\(error.code)", message: error.message)
        }
    }

    func createLease() async throws -> String {
        let id = "estargz-pull-\(UUID().uuidString.lowercased())"
        let expiry = ISO8601DateFormatter().string(from: Date().addingTimeInterval(24 * 3600))
        let leases = Containerd_Services_Leases_V1_Leases.Client(wrapping: client)
        let request = Containerd_Services_Leases_V1_CreateRequest.with {
            $0.id = id
            $0.labels = [ContainerdPull.GCLabel.expire: expiry]
        }
        return try await call("Leases.Create") { try await leases.create(request, metadata: metadata).lease.id }
    }

    func deleteLease(_ id: String) async throws {
        let leases = Containerd_Services_Leases_V1_Leases.Client(wrapping: client)
        _ = try await call("Leases.Delete") { try await leases.delete(.with { $0.id = id }, metadata: metadata) }
    }

    func contentExists(_ digest: String) async throws -> Bool {
        do {
            _ = try await content.info(.with { $0.digest = digest }, metadata: metadata)
            return true
        } catch let error as RPCError where error.code == .notFound {
            return false
        } catch let error as RPCError {
            throw ContainerdPullError.containerd(call: "Content.Info", code: "\(error.code)", message: error.message)
        }
    }

    /// Writes a small blob in one message (WRITE and COMMIT together), unless the store has it;
    /// labels are set either way.
    func writeContent(_ bytes: [UInt8], digest: String, reference: String, labels: [String: String]) async throws {
        if try await contentExists(digest) {
            for (key, value) in labels { try await setContentLabel(digest: digest, key: key, value: value) }
            return
        }
        let request = Containerd_Services_Content_V1_WriteContentRequest.with {
            $0.action = .commit
            $0.ref = reference
            $0.total = Int64(bytes.count)
            $0.expected = digest
            $0.offset = 0
            $0.data = Data(bytes)
            $0.labels = labels
        }
        if try await !write([request], reference: reference) {
            for (key, value) in labels { try await setContentLabel(digest: digest, key: key, value: value) }
        }
    }

    /// Streams a file into the content store in 1 MiB WRITE messages, then COMMITs it.
    func writeContent(file: String, size: Int64, digest: String, reference: String, labels: [String: String]) async throws {
        guard let handle = FileHandle(forReadingAtPath: file) else { throw ContainerdPullError.unpack(layer: digest, reason: "cannot read \(file)") }
        defer { try? handle.close() }
        let piece = 1 << 20
        do {
            try await content.write(metadata: metadata, requestProducer: { writer in
                var offset: Int64 = 0
                while offset < size {
                    let data = try handle.read(upToCount: piece) ?? Data()
                    guard !data.isEmpty else { break }
                    try await writer.write(.with {
                        $0.action = .write
                        $0.ref = reference
                        $0.total = size
                        $0.expected = digest
                        $0.offset = offset
                        $0.data = data
                    })
                    offset += Int64(data.count)
                }
                try await writer.write(.with {
                    $0.action = .commit
                    $0.ref = reference
                    $0.total = size
                    $0.expected = digest
                    $0.offset = offset
                    $0.labels = labels
                })
            }, onResponse: { response in
                for try await _ in response.messages {}
            })
        } catch let error as RPCError where error.code == .alreadyExists {
            // containerd has the blob (another namespace's pull): nothing to write.
        } catch let error as RPCError {
            throw ContainerdPullError.containerd(call: "Content.Write \(reference)", code: "\(error.code)", message: error.message)
        }
    }

    /// Sends the requests on one Write stream; false when containerd already has the blob (in
    /// another namespace, or written meanwhile by another pull: the same bytes).
    private func write(_ requests: [Containerd_Services_Content_V1_WriteContentRequest], reference: String) async throws -> Bool {
        do {
            try await content.write(metadata: metadata, requestProducer: { writer in
                for request in requests { try await writer.write(request) }
            }, onResponse: { response in
                for try await _ in response.messages {}
            })
            return true
        } catch let error as RPCError where error.code == .alreadyExists {
            return false
        } catch let error as RPCError {
            throw ContainerdPullError.containerd(call: "Content.Write \(reference)", code: "\(error.code)", message: error.message)
        }
    }

    func setContentLabel(digest: String, key: String, value: String) async throws {
        let request = Containerd_Services_Content_V1_UpdateRequest.with {
            $0.info.digest = digest
            $0.info.labels = [key: value]
            $0.updateMask.paths = ["labels.\(key)"]
        }
        _ = try await call("Content.Update") { try await content.update(request, metadata: metadata) }
    }

    func snapshotExists(_ key: String, snapshotter: String) async throws -> Bool {
        do {
            _ = try await snapshots.stat(.with { $0.snapshotter = snapshotter; $0.key = key }, metadata: metadata)
            return true
        } catch let error as RPCError where error.code == .notFound {
            return false
        } catch let error as RPCError {
            throw ContainerdPullError.containerd(call: "Snapshots.Stat", code: "\(error.code)", message: error.message)
        }
    }

    /// Prepares an extraction snapshot: its mounts, or nil when the snapshotter answered that the
    /// target snapshot exists (it mounted the layer itself).
    func prepare(key: String, parent: String, labels: [String: String], snapshotter: String) async throws -> [Containerd_Types_Mount]? {
        let request = Containerd_Services_Snapshots_V1_PrepareSnapshotRequest.with {
            $0.snapshotter = snapshotter
            $0.key = key
            $0.parent = parent
            $0.labels = labels
        }
        do {
            return try await snapshots.prepare(request, metadata: metadata).mounts
        } catch let error as RPCError where error.code == .alreadyExists {
            return nil
        } catch let error as RPCError {
            throw ContainerdPullError.containerd(call: "Snapshots.Prepare", code: "\(error.code)", message: error.message)
        }
    }

    func commit(name: String, key: String, labels: [String: String], snapshotter: String) async throws {
        let request = Containerd_Services_Snapshots_V1_CommitSnapshotRequest.with {
            $0.snapshotter = snapshotter
            $0.name = name
            $0.key = key
            $0.labels = labels
        }
        _ = try await call("Snapshots.Commit") { try await snapshots.commit(request, metadata: metadata) }
    }

    func removeSnapshot(_ key: String, snapshotter: String) async throws {
        _ = try await call("Snapshots.Remove") {
            try await snapshots.remove(.with { $0.snapshotter = snapshotter; $0.key = key }, metadata: metadata)
        }
    }

    /// Has containerd's diff service unpack the layer (from the content store) into the mounts;
    /// returns the digest of the uncompressed tar it applied (the layer's diff ID).
    func apply(_ layer: Descriptor, mounts: [Containerd_Types_Mount]) async throws -> String {
        let diff = Containerd_Services_Diff_V1_Diff.Client(wrapping: client)
        let request = Containerd_Services_Diff_V1_ApplyRequest.with {
            $0.diff = .with {
                $0.mediaType = layer.mediaType
                $0.digest = layer.digest
                $0.size = layer.size
            }
            $0.mounts = mounts
        }
        return try await call("Diff.Apply") { try await diff.apply(request, metadata: metadata).applied.digest }
    }

    /// Creates the image record, or points the existing one at `target`.
    func putImage(name: String, target: Descriptor) async throws {
        let images = Containerd_Services_Images_V1_Images.Client(wrapping: client)
        let image = Containerd_Services_Images_V1_Image.with {
            $0.name = name
            $0.target = .with {
                $0.mediaType = target.mediaType
                $0.digest = target.digest
                $0.size = target.size
            }
        }
        do {
            _ = try await images.create(.with { $0.image = image }, metadata: metadata)
        } catch let error as RPCError where error.code == .alreadyExists {
            _ = try await call("Images.Update") {
                try await images.update(.with { $0.image = image; $0.updateMask.paths = ["target"] }, metadata: metadata)
            }
        } catch let error as RPCError {
            throw ContainerdPullError.containerd(call: "Images.Create", code: "\(error.code)", message: error.message)
        }
    }
}
