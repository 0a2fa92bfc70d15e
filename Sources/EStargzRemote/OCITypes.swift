import EStargzCore
import Foundation

/// Media types of the OCI image spec and Docker's schema 2, and the eStargz annotations.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"

    /// Whether `type` names an index (OCI index or Docker manifest list).
    public static func isIndex(_ type: String) -> Bool { type == ociIndex || type == dockerManifestList }
}

/// The annotations containerd's stargz snapshotter reads from a layer descriptor.
public enum StargzAnnotation {
    /// The SHA-256 of the layer's TOC JSON.
    public static let tocDigest = "containerd.io/snapshot/stargz/toc.digest"
    /// The size of the uncompressed layer tar.
    public static let uncompressedSize = "io.containers.estargz.uncompressed-size"
}

/// A platform in an index: `os/architecture[/variant]`.
public struct Platform: Codable, Sendable, Hashable, CustomStringConvertible {
    public var architecture: String
    public var os: String
    public var variant: String?

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// Parses `os/arch[/variant]`.
    public init(parsing text: String) throws(RegistryError) {
        let parts = text.split(separator: "/").map(String.init)
        guard parts.count == 2 || parts.count == 3 else { throw .local("platform \"\(text)\" is not os/arch[/variant]") }
        self.init(os: parts[0], architecture: parts[1], variant: parts.count == 3 ? parts[2] : nil)
    }

    /// The platform this program runs on.
    public static var current: Platform {
        #if arch(arm64)
        Platform(os: "linux", architecture: "arm64")
        #else
        Platform(os: "linux", architecture: "amd64")
        #endif
    }

    public var description: String { [os, architecture, variant].compactMap { $0 }.joined(separator: "/") }

    func matches(_ other: Platform) -> Bool {
        os == other.os && architecture == other.architecture && (variant == nil || other.variant == nil || variant == other.variant)
    }
}

/// A content descriptor: what a manifest or index says about a blob.
public struct Descriptor: Codable, Sendable, Hashable {
    public var mediaType: String
    public var digest: String
    public var size: Int64
    public var annotations: [String: String]?
    public var platform: Platform?
    public var urls: [String]?

    public init(mediaType: String, digest: String, size: Int64, annotations: [String: String]? = nil, platform: Platform? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
        self.platform = platform
    }
}

/// An image manifest (OCI or Docker schema 2).
public struct ImageManifest: Codable, Sendable, Hashable {
    public var schemaVersion: Int = 2
    public var mediaType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var annotations: [String: String]?

    public init(mediaType: String? = MediaType.ociManifest, config: Descriptor, layers: [Descriptor], annotations: [String: String]? = nil) {
        self.mediaType = mediaType
        self.config = config
        self.layers = layers
        self.annotations = annotations
    }
}

/// An image index (OCI) or manifest list (Docker).
public struct ImageIndex: Codable, Sendable, Hashable {
    public var schemaVersion: Int = 2
    public var mediaType: String?
    public var manifests: [Descriptor]
    public var annotations: [String: String]?

    public init(mediaType: String? = MediaType.ociIndex, manifests: [Descriptor], annotations: [String: String]? = nil) {
        self.mediaType = mediaType
        self.manifests = manifests
        self.annotations = annotations
    }

    /// The manifest for `platform` (the first match), or nil.
    public func manifest(for platform: Platform) -> Descriptor? {
        manifests.first { $0.platform.map { $0.matches(platform) } ?? false }
    }
}

/// JSON encoding the way registries and containerd write it (no `\/` escapes, stable key order).
enum CanonicalJSON {
    static func encode<T: Encodable>(_ value: T) throws(RegistryError) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do { return Array(try encoder.encode(value)) } catch { throw .local("cannot encode JSON: \(error)") }
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], what: String) throws(RegistryError) -> T {
        do { return try JSONDecoder().decode(type, from: Data(bytes)) } catch {
            throw .invalidResponse(url: what, reason: "not a valid \(T.self): \(error)")
        }
    }

    /// Reads the top-level `mediaType` of a manifest or index document.
    static func mediaType(of bytes: [UInt8]) -> String? {
        struct Probe: Decodable { var mediaType: String?; var manifests: [Descriptor]? }
        guard let probe = try? JSONDecoder().decode(Probe.self, from: Data(bytes)) else { return nil }
        return probe.mediaType ?? (probe.manifests != nil ? MediaType.ociIndex : MediaType.ociManifest)
    }
}

/// `sha256:<hex>` of `bytes`, as OCI writes digests.
func digestString(_ bytes: [UInt8]) -> String {
    SHA256Digest.of(bytes).description
}
