import EStargzCore
import Foundation

/// Where an image lives: in a registry, or in an OCI image layout directory (`oci:DIR[:TAG]`).
public enum ImageLocation: Sendable, CustomStringConvertible {
    case registry(ImageReference)
    case layout(directory: String, tag: String?)

    /// Parses `oci:DIR[:TAG]` or a registry reference.
    public init(parsing text: String) throws(RegistryError) {
        if text.hasPrefix("oci:") {
            var rest = String(text.dropFirst(4))
            var tag: String?
            // A tag is what follows the last colon, when it has no slash (DIR may contain colons rarely).
            if let colon = rest.lastIndex(of: ":"), !rest[rest.index(after: colon)...].contains("/") {
                tag = String(rest[rest.index(after: colon)...])
                rest = String(rest[..<colon])
            }
            guard !rest.isEmpty else { throw .invalidReference(text) }
            self = .layout(directory: rest, tag: tag)
        } else {
            self = .registry(try ImageReference(parsing: text))
        }
    }

    public var description: String {
        switch self {
        case let .registry(reference): reference.description
        case let .layout(directory, tag): "oci:\(directory)" + (tag.map { ":\($0)" } ?? "")
        }
    }
}

/// An OCI image layout directory: `oci-layout`, `index.json` and `blobs/sha256/<hex>`.
public struct OCILayout: Sendable {
    public let directory: String

    /// Opens (creating when `create`) the layout at `directory`.
    public init(directory: String, create: Bool = false) throws(RegistryError) {
        self.directory = directory
        let fm = FileManager.default
        if create {
            do {
                try fm.createDirectory(atPath: directory + "/blobs/sha256", withIntermediateDirectories: true)
                if !fm.fileExists(atPath: directory + "/oci-layout") {
                    try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: directory + "/oci-layout"))
                }
                if !fm.fileExists(atPath: directory + "/index.json") {
                    try Data(CanonicalJSON.encode(ImageIndex(manifests: []))).write(to: URL(fileURLWithPath: directory + "/index.json"))
                }
            } catch let error as RegistryError {
                throw error
            } catch {
                throw .local("cannot create OCI layout \(directory): \(error)")
            }
        } else if !fm.fileExists(atPath: directory + "/index.json") {
            throw .local("\(directory) is not an OCI image layout (no index.json)")
        }
    }

    /// The path of the blob `digest`.
    public func blobPath(_ digest: String) -> String {
        let parts = digest.split(separator: ":", maxSplits: 1)
        return "\(directory)/blobs/\(parts.first ?? "sha256")/\(parts.last ?? "")"
    }

    /// Reads a blob and verifies its digest.
    public func readBlob(_ digest: String) throws(RegistryError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: blobPath(digest)) else { throw .local("blob \(digest) missing in \(directory)") }
        let bytes = Array(data)
        guard digestString(bytes) == digest else { throw .local("blob \(digest) in \(directory) is corrupt") }
        return bytes
    }

    /// Writes `bytes` as a blob; returns its digest.
    @discardableResult
    public func writeBlob(_ bytes: [UInt8]) throws(RegistryError) -> String {
        let digest = digestString(bytes)
        let path = blobPath(digest)
        guard !FileManager.default.fileExists(atPath: path) else { return digest }
        do { try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic) } catch { throw .local("cannot write \(path): \(error)") }
        return digest
    }

    /// Moves (or copies) the file at `path`, whose digest is `digest`, into the layout.
    public func adoptBlob(path: String, digest: String) throws(RegistryError) {
        let target = blobPath(digest)
        guard !FileManager.default.fileExists(atPath: target) else { return }
        if rename(path, target) != 0 {
            do { try FileManager.default.copyItem(atPath: path, toPath: target) } catch { throw .local("cannot copy \(path) into \(directory): \(error)") }
        }
    }

    /// The layout's index.
    public func index() throws(RegistryError) -> ImageIndex {
        guard let data = FileManager.default.contents(atPath: directory + "/index.json") else { throw .local("cannot read \(directory)/index.json") }
        return try CanonicalJSON.decode(ImageIndex.self, from: Array(data), what: directory + "/index.json")
    }

    /// The index.json entry tagged `tag` (or the only entry when nil): a manifest or an index.
    public func descriptor(tag: String?) throws(RegistryError) -> Descriptor {
        let candidates = try index().manifests.filter { tag == nil || $0.annotations?["org.opencontainers.image.ref.name"] == tag }
        guard candidates.count == 1 else {
            throw .local(candidates.isEmpty ? "no image \(tag ?? "(untagged)") in \(directory)"
                                            : "\(candidates.count) images tagged \(tag ?? "(untagged)") in \(directory)")
        }
        return candidates[0]
    }

    /// Resolves `tag` (or the only manifest when nil) to an image manifest, choosing `platform` in nested indexes.
    public func resolve(tag: String?, platform: Platform = .current) throws(RegistryError) -> (manifest: ImageManifest, bytes: [UInt8], digest: String) {
        let index = try index()
        let candidates = index.manifests.filter { tag == nil || $0.annotations?["org.opencontainers.image.ref.name"] == tag }
        guard var descriptor = candidates.count == 1 ? candidates[0] : (candidates.first { $0.platform.map { $0.matches(platform) } ?? false }) else {
            throw .local("no image \(tag ?? "(untagged)") in \(directory)")
        }
        while MediaType.isIndex(descriptor.mediaType) {
            let nested = try CanonicalJSON.decode(ImageIndex.self, from: try readBlob(descriptor.digest), what: descriptor.digest)
            guard let chosen = nested.manifest(for: platform) ?? (nested.manifests.count == 1 ? nested.manifests.first : nil) else {
                throw .platformNotFound(platform.description)
            }
            descriptor = chosen
        }
        let bytes = try readBlob(descriptor.digest)
        return (try CanonicalJSON.decode(ImageManifest.self, from: bytes, what: descriptor.digest), bytes, descriptor.digest)
    }

    /// Adds a manifest to index.json under `tag` (replacing an older one with that tag).
    public func addManifest(bytes: [UInt8], mediaType: String, tag: String?) throws(RegistryError) {
        let digest = try writeBlob(bytes)
        var index = try index()
        if let tag {
            index.manifests.removeAll { $0.annotations?["org.opencontainers.image.ref.name"] == tag }
        }
        index.manifests.append(Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count),
                                          annotations: tag.map { ["org.opencontainers.image.ref.name": $0] }))
        do {
            try Data(CanonicalJSON.encode(index)).write(to: URL(fileURLWithPath: directory + "/index.json"), options: .atomic)
        } catch let error as RegistryError {
            throw error
        } catch {
            throw .local("cannot write index.json: \(error)")
        }
    }
}

/// `sha256:<hex>` and size of a file, hashed in 1 MiB pieces.
func fileDigest(_ path: String) throws -> (digest: String, size: Int64) {
    let source = try FileSource(path: path)
    var hasher = SHA256Hasher()
    var offset: Int64 = 0
    var piece = [UInt8](repeating: 0, count: 1 << 20)
    while offset < source.size {
        let count = Int(min(Int64(piece.count), source.size - offset))
        try piece.withUnsafeMutableBytes { try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0 ..< count]), at: offset) }
        piece.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0 ..< count])) }
        offset += Int64(count)
    }
    return (hasher.finalize().description, source.size)
}
