import EStargzCore
@testable import EStargzRemote
import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

extension TestRegistry {
    func reference(_ repository: String, tag: String = "latest") -> ImageReference {
        ImageReference(registry: host, repository: repository, tag: tag)
    }
}

/// Runs blocking work (sync reads through a RangeReader) on a Dispatch thread, not on the
/// cooperative pool the test runs on.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        // A thread of its own: blocked Dispatch workers are replaced only slowly.
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Test images: a directory tree made into a tar.gz layer, packed into an OCI layout.
enum TestImages {
    /// Writes `files` (path → contents) under a new directory and returns a gzip tar of it.
    static func gzipLayer(_ files: [String: [UInt8]], in directory: String, name: String) throws -> String {
        let root = "\(directory)/\(name)-root"
        for (path, bytes) in files {
            let full = "\(root)/\(path)"
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: full))
        }
        let output = "\(directory)/\(name).tar.gz"
        try run("/bin/tar", ["--sort=name", "--owner=0", "--group=0", "--mtime=@0", "-C", root, "-czf", output, "."])
        return output
    }

    /// Pseudo-random bytes that do not compress (so byte counts mean something).
    static func noise(_ count: Int, seed: UInt64) -> [UInt8] { noiseBytes(count, seed: seed) }

    /// An OCI layout at `layout` whose `tag` is an OCI index of one image per platform (each with
    /// the given tar.gz layers).
    static func indexLayout(_ layout: String, tag: String, images: [(Platform, [String])]) throws {
        let oci = try OCILayout(directory: layout, create: true)
        var entries: [Descriptor] = []
        for (platform, layers) in images {
            let manifest = try image(oci, layers: layers, platform: platform)
            entries.append(Descriptor(mediaType: MediaType.ociManifest, digest: try oci.writeBlob(manifest), size: Int64(manifest.count),
                                      platform: platform))
        }
        try oci.addManifest(bytes: try CanonicalJSON.encode(ImageIndex(manifests: entries)), mediaType: MediaType.ociIndex, tag: tag)
    }

    /// An OCI layout at `layout` holding one image (`tag`) with the given layer blobs (tar.gz files).
    static func layout(_ layout: String, tag: String, layers: [String]) throws {
        let oci = try OCILayout(directory: layout, create: true)
        try oci.addManifest(bytes: try image(oci, layers: layers, platform: .current), mediaType: MediaType.ociManifest, tag: tag)
    }

    /// Writes the layers and a config for `platform` into `oci`; returns the manifest's bytes.
    private static func image(_ oci: OCILayout, layers: [String], platform: Platform) throws -> [UInt8] {
        var descriptors: [Descriptor] = []
        var diffIDs: [String] = []
        for path in layers {
            let bytes = Array(FileManager.default.contents(atPath: path)!)
            let digest = try oci.writeBlob(bytes)
            descriptors.append(Descriptor(mediaType: MediaType.ociLayerGzip, digest: digest, size: Int64(bytes.count)))
            let tar = try run("/bin/sh", ["-c", "gzip -dc '\(path)' | sha256sum | cut -d' ' -f1"]).trimmingCharacters(in: .whitespacesAndNewlines)
            diffIDs.append("sha256:" + tar)
        }
        var config: [String: Any] = ["architecture": platform.architecture, "os": platform.os,
                                     "config": ["Env": ["PATH=/bin"]], "rootfs": ["type": "layers", "diff_ids": diffIDs]]
        if let variant = platform.variant { config["variant"] = variant }
        let configBytes = Array(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]))
        let configDigest = try oci.writeBlob(configBytes)
        let manifest = ImageManifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(configBytes.count)),
                                     layers: descriptors)
        return try CanonicalJSON.encode(manifest)
    }
}
