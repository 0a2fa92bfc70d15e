import EStargzCore
import EStargzRemote
import Foundation
import LazyFS
import Logging
import Synchronization

/// An additional layer store for containers/storage (Podman, CRI-O, Buildah): with
/// `additionallayerstores = ["MOUNTPOINT:ref"]` in storage.conf, a pull first looks for each layer at
/// `MOUNTPOINT/BASE64(IMAGE-REF)/LAYER-DIGEST/` and, when `diff`, `info` and `blob` are there, uses
/// them instead of downloading the layer:
///
/// - `diff`: the layer's tree as an overlayfs lower directory. Here a symlink to a LazyFS mount of the
///   eStargz layer (one layer, whiteouts as overlayfs wants them) at `ROOT/layers/HEX`, made when `diff`
///   is first looked up: its chunks are fetched from the registry only when read, verified first.
/// - `info`: the layer's containers/storage record as JSON (`compressed-diff-digest`, `compressed-size`,
///   `diff-digest`, `diff-size`, `compression`), from the image's manifest and config.
/// - `blob`: the compressed layer blob, read from the registry with range requests.
/// - creating `use` (answered ENOENT) says a user took the layer; `rmdir` of the layer directory
///   (answered ENOENT) that it let go of it. Mounted layers stay mounted while the store runs.
///
/// Layers that are not eStargz (no TOC digest annotation) are not found here, so containers/storage
/// pulls them the usual way. The top levels are a small FUSE file system of their own
/// (``LayerStoreFileSystem``); each layer tree is a separate LazyFS mount, which the kernel's overlayfs
/// stacks directly, so a container's file reads never pass through the store's own file system.
public final class AdditionalLayerStore: @unchecked Sendable {
    /// The store's state directory (`layers/` holds the lazy mounts).
    public let root: String
    let remote: RemoteLayers
    let platform: Platform
    let logger = Logger(label: "estargz.store")
    private let state = Mutex(State())
    /// Mounting a layer is done once per layer: concurrent lookups of its `diff` wait for the first.
    private let mounting = NSLock()

    struct State {
        var images: [String: RegistryClient.Image] = [:]
        var layers: [String: Layer] = [:]  // by digest
        var blobs: [String: RangeReader] = [:]  // by digest
        var uses: [String: Int] = [:]  // by "REF/DIGEST"
    }

    /// A layer of an image the store knows: what `info` says and where `diff` points once mounted.
    struct Layer {
        var reference: ImageReference
        var descriptor: Descriptor
        var info: [UInt8]
        var mountpoint: String?
    }

    /// - Parameters:
    ///   - root: where the layers are mounted (`ROOT/layers/HEX`); created if missing.
    ///   - remote: opens and mounts the layers (registry settings, chunk cache, prefetch).
    ///   - platform: the manifest chosen from a multi-platform image.
    public init(root: String, remote: RemoteLayers, platform: Platform = .current) throws {
        self.root = root
        self.remote = remote
        self.platform = platform
        try FileManager.default.createDirectory(atPath: root + "/layers", withIntermediateDirectories: true)
    }

    /// Serves the store at `mountpoint` until the returned mount is unmounted.
    public func mount(at mountpoint: String) throws -> LayerStoreMount {
        try LayerStoreMount(fileSystem: LayerStoreFileSystem(store: self), mountpoint: mountpoint)
    }

    /// Why a layer is not served: answered ENOENT (not here: containers/storage pulls it) or EIO.
    enum LookupError: Error {
        case notHere(String)
        case failed(String)
    }

    /// The image `reference` names, fetched once (manifest for ``platform`` and config).
    private func image(_ reference: String) throws(LookupError) -> (ImageReference, RegistryClient.Image) {
        let parsed: ImageReference
        do { parsed = try ImageReference(parsing: reference) } catch { throw .notHere("\(reference) is not an image reference") }
        if let known = state.withLock({ $0.images[reference] }) { return (parsed, known) }
        let client = remote.client, platform = self.platform
        do {
            let image = try RemoteLayers.blocking { try await client.resolveImage(parsed, platform: platform) }
            state.withLock { $0.images[reference] = image }
            return (parsed, image)
        } catch {
            throw .failed("resolving \(reference): \(error)")
        }
    }

    /// The layer `digest` of the image `reference`, with its info record; eStargz layers only.
    func layer(reference: String, digest: String) throws(LookupError) -> Layer {
        if let known = state.withLock({ $0.layers[digest] }) { return known }
        let (parsed, image) = try self.image(reference)
        guard let index = image.manifest.layers.firstIndex(where: { $0.digest == digest }) else {
            throw .notHere("\(digest) is not a layer of \(reference)")
        }
        let descriptor = image.manifest.layers[index]
        guard descriptor.annotations?[StargzAnnotation.tocDigest].flatMap(SHA256Digest.init(parsing:)) != nil else {
            throw .notHere("layer \(digest) of \(reference) has no \(StargzAnnotation.tocDigest) annotation (not eStargz)")
        }
        let config = (try? JSONSerialization.jsonObject(with: Data(image.configBytes))) as? [String: Any]
        let diffIDs = (config?["rootfs"] as? [String: Any])?["diff_ids"] as? [String] ?? []
        guard diffIDs.count == image.manifest.layers.count else {
            throw .failed("\(reference): the config has \(diffIDs.count) diff_ids for \(image.manifest.layers.count) layers")
        }
        // containers/storage's Layer record; compression 2 is its archive.Gzip.
        var record: [String: Any] = ["compressed-diff-digest": digest, "compressed-size": descriptor.size,
                                     "diff-digest": diffIDs[index], "compression": 2]
        if let size = descriptor.annotations?[StargzAnnotation.uncompressedSize].flatMap(Int64.init) { record["diff-size"] = size }
        let info = Array((try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])) ?? Data()) + [0x0a]
        let layer = Layer(reference: parsed, descriptor: descriptor, info: info, mountpoint: nil)
        return state.withLock { state in
            if let known = state.layers[digest] { return known }
            state.layers[digest] = layer
            return layer
        }
    }

    /// The path of the layer's lazy mount, mounting it the first time.
    func diff(reference: String, digest: String) throws(LookupError) -> String {
        let layer = try self.layer(reference: reference, digest: digest)
        if let mountpoint = layer.mountpoint { return mountpoint }
        mounting.lock()
        defer { mounting.unlock() }
        if let mountpoint = state.withLock({ $0.layers[digest]?.mountpoint }) { return mountpoint }
        let mountpoint = root + "/layers/" + digest.replacingOccurrences(of: ":", with: "-")
        do {
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
            let labels = [RemoteLabel.imageReference: layer.reference.description, RemoteLabel.layerDigest: digest,
                          RemoteLabel.tocDigest: layer.descriptor.annotations![StargzAnnotation.tocDigest]!]
            try remote.mount(labels: labels, at: mountpoint)
        } catch {
            throw .failed("mounting layer \(digest) of \(reference): \(error)")
        }
        state.withLock { $0.layers[digest]?.mountpoint = mountpoint }
        logger.info("layer served", metadata: ["reference": "\(reference)", "layer": "\(digest)", "diff": "\(mountpoint)"])
        return mountpoint
    }

    /// A reader of the layer's compressed blob (range requests; the bytes are the registry's, not verified here).
    func blob(reference: String, digest: String) throws(LookupError) -> RangeReader {
        let layer = try self.layer(reference: reference, digest: digest)
        if let known = state.withLock({ $0.blobs[digest] }) { return known }
        let client = remote.client
        do {
            let source = try RemoteLayers.blocking {
                try await RangeReader.open(client: client, repository: layer.reference, digest: digest, size: layer.descriptor.size)
            }
            return state.withLock { state in
                if let known = state.blobs[digest] { return known }
                state.blobs[digest] = source
                return source
            }
        } catch {
            throw .failed("opening blob \(digest) of \(reference): \(error)")
        }
    }

    /// containers/storage took (`use` created) or let go of (layer directory removed) a layer.
    func count(reference: String, digest: String, by change: Int) {
        let now = state.withLock { state -> Int in
            state.uses["\(reference)/\(digest)", default: 0] += change
            return state.uses["\(reference)/\(digest)"]!
        }
        logger.info(change > 0 ? "layer in use" : "layer released",
                    metadata: ["reference": "\(reference)", "layer": "\(digest)", "users": "\(now)"])
    }

    /// How many users containers/storage announced for the layer and has not released.
    public func users(reference: String, digest: String) -> Int {
        state.withLock { $0.uses["\(reference)/\(digest)"] ?? 0 }
    }

    /// What the store fetched from registries for the layers it mounted and the blobs read through it,
    /// against the sizes of the layers it mounted, as JSON: `layersMounted`, `registryBytesFetched`,
    /// `registryRequests`, `registryBlobBytes`.
    public var statisticsJSON: String {
        let mounted = remote.registryStatistics
        let (blobBytes, blobRequests, layers) = state.withLock { state in
            (state.blobs.values.reduce(Int64(0)) { $0 + $1.statistics.bytesFetched },
             state.blobs.values.reduce(Int64(0)) { $0 + $1.statistics.requests },
             state.layers.values.filter { $0.mountpoint != nil }.count)
        }
        return #"{"layersMounted":\#(layers),"registryBytesFetched":\#(mounted.bytesFetched + blobBytes),"#
            + #""registryRequests":\#(mounted.requests + blobRequests),"registryBlobBytes":\#(mounted.blobBytes)}"#
    }

    /// Unmounts every layer and closes the registry connections; call once, when the store's own
    /// mount is gone (not from an event loop).
    public func shutdown() {
        remote.unmountAll()
        try? remote.client.syncShutdown()
    }
}
