import EStargzCore
import Foundation

/// Converts every layer of an image to eStargz and writes the new image: OCI manifest with the
/// stargz annotations on each layer, the new diffIDs in the config.
public enum ImageConverter {
    /// How to convert.
    public struct Options: Sendable {
        /// Options of each layer's conversion (level, chunk size, prioritized files).
        public var layer = LayerWriter.Options()
        /// The platform to pick from an index.
        public var platform = Platform.current
        /// Where downloaded and converted layers are kept while converting.
        public var temporaryDirectory = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        public init() {}
    }

    /// One converted layer.
    public struct LayerResult: Sendable {
        /// The source layer's descriptor.
        public var source: Descriptor
        /// The new layer's descriptor (with annotations).
        public var descriptor: Descriptor
        /// What the writer reported.
        public var conversion: LayerWriter.Result
    }

    /// The converted image.
    public struct Result: Sendable {
        public var manifest: ImageManifest
        public var manifestDigest: String
        public var configDigest: String
        public var layers: [LayerResult]
    }

    /// Converts `source` into `destination`. `progress` hears one line per step.
    public static func convert(source: ImageLocation, destination: ImageLocation, client: RegistryClient,
                               options: Options = Options(), progress: @Sendable (String) -> Void = { _ in }) async throws -> Result {
        // 1. The source image.
        let manifest: ImageManifest
        let configBytes: [UInt8]
        switch source {
        case let .registry(reference):
            let image = try await client.resolveImage(reference, platform: options.platform)
            (manifest, configBytes) = (image.manifest, image.configBytes)
        case let .layout(directory, tag):
            let layout = try OCILayout(directory: directory)
            let resolved = try layout.resolve(tag: tag, platform: options.platform)
            (manifest, configBytes) = (resolved.manifest, try layout.readBlob(resolved.manifest.config.digest))
        }
        let work = options.temporaryDirectory + "/estargz-convert-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try? FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }

        // 2. Each layer: fetch, convert, hash.
        var results: [LayerResult] = []
        for (index, layer) in manifest.layers.enumerated() {
            let label = "layer \(index + 1)/\(manifest.layers.count) \(layer.digest.prefix(19))"
            let input: String
            switch source {
            case let .registry(reference):
                input = "\(work)/in-\(index)"
                progress("\(label): downloading \(layer.size) bytes")
                try await client.downloadBlob(reference, digest: layer.digest, to: input)
            case let .layout(directory, _):
                input = OCILayout(unchecked: directory).blobPath(layer.digest)
            }
            progress("\(label): converting")
            let output = "\(work)/out-\(index)"
            let layerOptions = options.layer
            let conversion = try await Task(executorPreference: BlockingBridge.shared) {
                try LayerWriter.convert(inputPath: input, outputPath: output, options: layerOptions)
            }.value
            if case .registry = source { unlink(input) }
            let (digest, size) = try fileDigest(output)
            let descriptor = Descriptor(mediaType: MediaType.ociLayerGzip, digest: digest, size: size, annotations: [
                StargzAnnotation.tocDigest: conversion.tocDigest.description,
                StargzAnnotation.uncompressedSize: String(conversion.uncompressedSize),
            ])
            progress("\(label): \(layer.size) → \(size) bytes, toc \(conversion.tocDigest)")
            results.append(LayerResult(source: layer, descriptor: descriptor, conversion: conversion))
        }

        // 3. Config with the new diffIDs (the uncompressed tars changed: eStargz adds TOC and landmarks).
        let newConfig = try rewriteConfig(configBytes, diffIDs: results.map { $0.conversion.diffID.description })
        let configDescriptor = Descriptor(mediaType: MediaType.ociConfig, digest: digestString(newConfig), size: Int64(newConfig.count))
        let newManifest = ImageManifest(config: configDescriptor, layers: results.map(\.descriptor), annotations: manifest.annotations)
        let manifestBytes = try CanonicalJSON.encode(newManifest)

        // 4. Write or push.
        switch destination {
        case let .registry(reference):
            let mountFrom: String? = if case let .registry(src) = source, src.registry == reference.registry { src.repository } else { nil }
            for (index, layer) in results.enumerated() {
                progress("layer \(index + 1)/\(results.count): pushing \(layer.descriptor.size) bytes")
                try await client.pushBlob(reference, digest: layer.descriptor.digest, path: "\(work)/out-\(index)", mountFrom: mountFrom)
            }
            try await client.pushBlob(reference, digest: configDescriptor.digest, bytes: newConfig)
            try await client.pushManifest(reference, bytes: manifestBytes, mediaType: MediaType.ociManifest)
        case let .layout(directory, tag):
            let layout = try OCILayout(directory: directory, create: true)
            for (index, layer) in results.enumerated() {
                try layout.adoptBlob(path: "\(work)/out-\(index)", digest: layer.descriptor.digest)
            }
            try layout.writeBlob(newConfig)
            try layout.addManifest(bytes: manifestBytes, mediaType: MediaType.ociManifest, tag: tag ?? "latest")
        }
        progress("manifest \(digestString(manifestBytes))")
        return Result(manifest: newManifest, manifestDigest: digestString(manifestBytes), configDigest: configDescriptor.digest, layers: results)
    }

    /// Replaces `rootfs.diff_ids`, keeping every other field of the config as it was.
    static func rewriteConfig(_ bytes: [UInt8], diffIDs: [String]) throws(RegistryError) -> [UInt8] {
        guard var config = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
            throw .local("the image config is not a JSON object")
        }
        var rootfs = config["rootfs"] as? [String: Any] ?? ["type": "layers"]
        rootfs["diff_ids"] = diffIDs
        config["rootfs"] = rootfs
        guard let data = try? JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            throw .local("cannot encode the image config")
        }
        return Array(data)
    }
}

extension OCILayout {
    /// A layout value for a directory already checked.
    init(unchecked directory: String) { self.directory = directory }
}
