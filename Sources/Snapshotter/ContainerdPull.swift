import EStargzCore
import EStargzRemote
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf

/// Pulls an image into containerd through its gRPC API, the way `ctr-remote image rpull` does:
/// manifest and config go into containerd's content store, and every layer becomes a snapshot of
/// the chosen snapshotter prepared with the labels of a remote snapshot, so an eStargz layer is
/// mounted lazily by the snapshotter and never downloaded. A layer the snapshotter does not mount
/// (plain gzip, or no TOC digest) is downloaded into the content store and applied by containerd's
/// diff service. Afterwards the image is unpacked for that snapshotter: `ctr run --snapshotter
/// estargz REF` and the CRI plugin start containers from it.
///
/// ```swift
/// var options = ContainerdPull.Options()
/// options.namespace = "k8s.io"
/// let result = try await ContainerdPull.pull(try ImageReference(parsing: "127.0.0.1:5000/app:1"), options: options)
/// ```
public enum ContainerdPull {
    /// Where containerd is and how the image is pulled.
    public struct Options: Sendable {
        /// containerd's gRPC socket.
        public var address = "/run/containerd/containerd.sock"
        /// The containerd namespace the image goes into (`k8s.io` is the CRI plugin's).
        public var namespace = "default"
        /// The snapshotter (a proxy plugin's name in containerd's config).
        public var snapshotter = "estargz"
        /// The platform chosen from an index.
        public var platform: Platform = .current
        /// How the registry is reached (plain HTTP, mirrors, credentials).
        public var registry = RegistryClient.Options()
        public init() {}
    }

    /// What a pull did.
    public struct Result: Sendable {
        /// The name the image has in containerd (the normalized reference).
        public var name: String
        /// The image manifest's digest.
        public var manifestDigest: String
        /// The chain ID of the image's top layer: the snapshot containers start from.
        public var chainID: String
        /// Layers mounted lazily by the snapshotter.
        public var lazyLayers = 0
        /// Layers downloaded and applied by containerd.
        public var downloadedLayers = 0
        /// Layers whose snapshot was there already.
        public var existingLayers = 0
        /// Bytes of layer blobs downloaded.
        public var bytesDownloaded: Int64 = 0
    }

    /// The labels containerd's garbage collector follows, as containerd's own pull sets them.
    enum GCLabel {
        static let contentConfig = "containerd.io/gc.ref.content.config"
        static func contentLayer(_ index: Int) -> String { "containerd.io/gc.ref.content.l.\(index)" }
        static func snapshot(_ snapshotter: String) -> String { "containerd.io/gc.ref.snapshot.\(snapshotter)" }
        static let expire = "containerd.io/gc.expire"
    }

    /// containerd refuses a label whose key and value together exceed 4096 bytes; the
    /// `stargz.layers` list is cut (at a whole digest) to fit, as the reference does.
    static let layersLabelLimit = 4096 - RemoteLabel.imageLayers.utf8.count

    /// Pulls `reference` into containerd; `progress` receives one line per step.
    public static func pull(_ reference: ImageReference, options: Options = Options(),
                            progress: @escaping @Sendable (String) -> Void = { _ in }) async throws -> Result {
        let registry = RegistryClient(options: options.registry)
        do {
            let result = try await pull(reference, options: options, registry: registry, progress: progress)
            try? await registry.shutdown()
            return result
        } catch {
            try? await registry.shutdown()
            throw error
        }
    }

    private static func pull(_ reference: ImageReference, options: Options, registry: RegistryClient,
                             progress: @escaping @Sendable (String) -> Void) async throws -> Result {
        let image: RegistryClient.Image
        do { image = try await registry.resolveImage(reference, platform: options.platform) } catch {
            throw ContainerdPullError.registry(error)
        }
        progress("\(reference): resolved manifest \(image.manifestDigest)")
        let diffIDs = try Self.diffIDs(image.configBytes, layers: image.manifest.layers.count)
        let chainIDs = Self.chainIDs(diffIDs)
        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: options.address), transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { client in
            let session = ContainerdSession(client: client, namespace: options.namespace)
            let lease = try await session.createLease()
            var leased = session
            leased.lease = lease
            do {
                let result = try await pull(image, diffIDs: diffIDs, chainIDs: chainIDs, session: leased, options: options,
                                            registry: registry, progress: progress)
                try await session.deleteLease(lease)
                return result
            } catch {
                try? await session.deleteLease(lease)
                throw error
            }
        }
    }

    private static func pull(_ image: RegistryClient.Image, diffIDs: [String], chainIDs: [String], session: ContainerdSession,
                             options: Options, registry: RegistryClient,
                             progress: @escaping @Sendable (String) -> Void) async throws -> Result {
        let reference = image.reference
        let name = reference.description
        let source = ["containerd.io/distribution.source.\(reference.registry)": reference.repository]
        let manifest = image.manifest
        var result = Result(name: name, manifestDigest: image.manifestDigest, chainID: chainIDs.last ?? "")

        // Config, then the manifest that refers to it and to the layers (gc references).
        try await session.writeContent(image.configBytes, digest: manifest.config.digest, reference: "config-" + manifest.config.digest,
                                       labels: source)
        progress("config-\(manifest.config.digest): stored")
        var manifestLabels = source
        manifestLabels[GCLabel.contentConfig] = manifest.config.digest
        for (index, layer) in manifest.layers.enumerated() { manifestLabels[GCLabel.contentLayer(index)] = layer.digest }
        try await session.writeContent(image.manifestBytes, digest: image.manifestDigest, reference: "manifest-" + image.manifestDigest,
                                       labels: manifestLabels)
        progress("manifest-\(image.manifestDigest): stored")

        // Unpack: one snapshot per layer, named by its chain ID, each on the one below.
        var allLayers = ""
        for layer in manifest.layers {
            let next = allLayers.isEmpty ? layer.digest : allLayers + "," + layer.digest
            if next.utf8.count > layersLabelLimit { break }
            allLayers = next
        }
        for (index, layer) in manifest.layers.enumerated() {
            let chainID = chainIDs[index], parent = index == 0 ? "" : chainIDs[index - 1]
            if try await session.snapshotExists(chainID, snapshotter: options.snapshotter) {
                result.existingLayers += 1
                progress("layer-\(layer.digest): exists")
                continue
            }
            var labels = (layer.annotations ?? [:]).filter { $0.key.hasPrefix("containerd.io/snapshot/") }
            labels[RemoteLabel.targetSnapshot] = chainID
            labels[RemoteLabel.imageReference] = name
            labels[RemoteLabel.layerDigest] = layer.digest
            labels[RemoteLabel.imageLayers] = allLayers
            let key = "extract-\(UInt64(Date().timeIntervalSince1970 * 1e9))-\(chainID)"
            switch try await session.prepare(key: key, parent: parent, labels: labels, snapshotter: options.snapshotter) {
            case nil:
                guard try await session.snapshotExists(chainID, snapshotter: options.snapshotter) else {
                    throw ContainerdPullError.unpack(layer: layer.digest, reason: "the snapshotter reported \(chainID) but does not have it")
                }
                result.lazyLayers += 1
                progress("layer-\(layer.digest): mounted lazily by \(options.snapshotter)")
            case let mounts?:
                do {
                    let size = try await download(layer, from: reference, into: session, registry: registry, labels: source,
                                                  progress: progress)
                    let applied = try await session.apply(layer, mounts: mounts)
                    guard applied == diffIDs[index] else {
                        throw ContainerdPullError.unpack(layer: layer.digest, reason: "applied diff \(applied), the config says \(diffIDs[index])")
                    }
                    try await session.commit(name: chainID, key: key, labels: [RemoteLabel.targetSnapshot: chainID],
                                             snapshotter: options.snapshotter)
                    result.downloadedLayers += 1
                    result.bytesDownloaded += size
                    progress("layer-\(layer.digest): downloaded \(size) bytes and applied")
                } catch {
                    try? await session.removeSnapshot(key, snapshotter: options.snapshotter)
                    throw error
                }
            }
        }

        // The config keeps the unpacked snapshots; the image record keeps the manifest.
        if let top = chainIDs.last {
            try await session.setContentLabel(digest: manifest.config.digest, key: GCLabel.snapshot(options.snapshotter), value: top)
        }
        try await session.putImage(name: name, target: Descriptor(mediaType: manifest.mediaType ?? MediaType.ociManifest,
                                                                   digest: image.manifestDigest, size: Int64(image.manifestBytes.count)))
        progress("\(name): unpacked \(manifest.layers.count) layers for \(options.snapshotter) (\(result.lazyLayers) lazy, \(result.downloadedLayers) downloaded, \(result.existingLayers) present)")
        return result
    }

    /// Streams one layer blob from the registry into containerd's content store (through a
    /// temporary file, verified against its digest); returns its size.
    private static func download(_ layer: Descriptor, from reference: ImageReference, into session: ContainerdSession,
                                 registry: RegistryClient, labels: [String: String],
                                 progress: @escaping @Sendable (String) -> Void) async throws -> Int64 {
        if try await session.contentExists(layer.digest) { return 0 }
        let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("estargz-pull-\(UUID().uuidString)").path
        defer { unlink(temporary) }
        let size: Int64
        do { size = try await registry.downloadBlob(reference, digest: layer.digest, to: temporary) } catch {
            throw ContainerdPullError.registry(error)
        }
        try await session.writeContent(file: temporary, size: size, digest: layer.digest, reference: "layer-" + layer.digest, labels: labels)
        return size
    }

    // MARK: Image config

    /// The config's `rootfs.diff_ids`, one per layer.
    static func diffIDs(_ config: [UInt8], layers: Int) throws -> [String] {
        struct Config: Decodable {
            struct RootFS: Decodable { var diff_ids: [String] }
            var rootfs: RootFS
        }
        let decoded: Config
        do { decoded = try JSONDecoder().decode(Config.self, from: Data(config)) } catch {
            throw ContainerdPullError.invalidImage("the image config has no rootfs.diff_ids: \(error)")
        }
        guard decoded.rootfs.diff_ids.count == layers else {
            throw ContainerdPullError.invalidImage("the config lists \(decoded.rootfs.diff_ids.count) diff IDs for \(layers) layers")
        }
        for id in decoded.rootfs.diff_ids where SHA256Digest(parsing: id) == nil {
            throw ContainerdPullError.invalidImage("diff ID \"\(id)\" is not a sha256 digest")
        }
        return decoded.rootfs.diff_ids
    }

    /// The OCI chain IDs: the first diff ID, then `sha256(parent + " " + diffID)` for each next one.
    static func chainIDs(_ diffIDs: [String]) -> [String] {
        var chain: [String] = []
        for id in diffIDs {
            chain.append(chain.last.map { SHA256Digest.of(Array("\($0) \(id)".utf8)).description } ?? id)
        }
        return chain
    }
}

/// Why ``ContainerdPull`` failed.
public enum ContainerdPullError: Error, CustomStringConvertible, Sendable {
    /// The registry could not give the image.
    case registry(RegistryError)
    /// A containerd call failed: which one, its gRPC status and message.
    case containerd(call: String, code: String, message: String)
    /// The image's manifest or config is not usable.
    case invalidImage(String)
    /// A layer could not be unpacked.
    case unpack(layer: String, reason: String)

    public var description: String {
        switch self {
        case let .registry(error): error.description
        case let .containerd(call, code, message): "containerd \(call): \(code): \(message)"
        case let .invalidImage(reason): "invalid image: \(reason)"
        case let .unpack(layer, reason): "cannot unpack layer \(layer): \(reason)"
        }
    }
}
