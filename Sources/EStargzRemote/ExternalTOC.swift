import EStargzCore
import Synchronization

/// eStargz images whose TOCs live in a second image, the *TOC image* (upstream's
/// `--estargz-external-toc`, docs/estargz.md "eStargz image with an external TOC"):
///
/// - Its name is the image's with `-esgztoc` appended to the tag (`reg/app:1.0` →
///   `reg/app:1.0-esgztoc`), in the same repository.
/// - It is an OCI manifest whose config is `{}` and whose layers each hold one layer's TOC: a
///   gzip member of a tar with `stargz.index.json`. Each such layer descriptor names the eStargz
///   layer it belongs to in the annotation ``layerDigestAnnotation``; layers are sorted by digest.
/// - The eStargz layer itself ends with the external-TOC footer and still carries its
///   `containerd.io/snapshot/stargz/toc.digest` annotation, which the fetched TOC must match.
public enum ExternalTOC {
    /// On a TOC image's layer: the digest of the eStargz layer whose TOC it holds.
    public static let layerDigestAnnotation = "containerd.io/snapshot/stargz/layer.digest"
    /// Appended to the image's tag to name its TOC image.
    public static let suffix = "-esgztoc"

    /// The TOC image's reference: same registry and repository, the tag (or `latest`) + `-esgztoc`.
    /// An image named only by digest has no TOC image name (as with the reference).
    public static func imageReference(for image: ImageReference) throws(RegistryError) -> ImageReference {
        guard image.digest == nil || image.tag != nil else {
            throw .invalidReference("\(image): an image named by digest only has no TOC image name (the tag + \"\(suffix)\")")
        }
        return ImageReference(registry: image.registry, repository: image.repository, tag: (image.tag ?? "latest") + suffix)
    }

    /// The TOC image's config (empty, as upstream's converter writes it) and manifest for TOC
    /// blobs `tocs` (each the TOC layer's descriptor and the eStargz layer digest it belongs to).
    static func manifest(tocs: [(toc: Descriptor, layerDigest: String)]) throws(RegistryError) -> (config: [UInt8], manifest: [UInt8]) {
        let config = Array("{}".utf8)
        let layers = tocs.map { item in
            Descriptor(mediaType: MediaType.ociLayerGzip, digest: item.toc.digest, size: item.toc.size,
                       annotations: [layerDigestAnnotation: item.layerDigest])
        }.sorted { $0.digest < $1.digest }
        let manifest = ImageManifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: digestString(config), size: Int64(config.count)),
                                     layers: layers)
        return (config, try CanonicalJSON.encode(manifest))
    }
}

/// Finds layers' TOCs in an image's TOC image on its registry: the TOC image's manifest is fetched
/// once, then each TOC blob on demand (digest-checked by the client; the caller checks the TOC
/// JSON against the layer's `toc.digest` when it opens the layer).
public final class ExternalTOCFinder: Sendable {
    private let client: RegistryClient
    /// The TOC image's reference.
    public let reference: ImageReference
    private let layers = Mutex<[String: Descriptor]?>(nil)

    /// A finder for the TOC image of `image` (nothing is fetched yet).
    public init(client: RegistryClient, image: ImageReference) throws(RegistryError) {
        self.client = client
        self.reference = try ExternalTOC.imageReference(for: image)
    }

    /// The TOC blob (a gzip member holding `stargz.index.json`) of the eStargz layer `layerDigest`.
    /// - Throws: `RegistryError.notFound` when there is no TOC image or it names no TOC for that layer.
    public func toc(forLayer layerDigest: String) async throws(RegistryError) -> [UInt8] {
        let known: [String: Descriptor]
        if let cached = layers.withLock({ $0 }) {
            known = cached
        } else {
            // A TOC image is a single manifest; resolveImage also accepts an index (for this platform).
            let manifest = try await client.resolveImage(reference).manifest
            var byLayer: [String: Descriptor] = [:]
            for layer in manifest.layers {
                if let digest = layer.annotations?[ExternalTOC.layerDigestAnnotation] { byLayer[digest] = layer }
            }
            layers.withLock { $0 = byLayer }
            known = byLayer
        }
        guard let descriptor = known[layerDigest] else {
            throw .notFound(url: "\(reference): no TOC for layer \(layerDigest) (annotation \(ExternalTOC.layerDigestAnnotation))")
        }
        return try await client.fetchBlob(reference, digest: descriptor.digest, limit: Int(LayerReader.Limits().maximumCompressedTOCSize))
    }
}
