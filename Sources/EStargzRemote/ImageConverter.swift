import EStargzCore
import Foundation

/// Converts every layer of an image to eStargz (or zstd:chunked) and writes the new image: OCI manifest with the
/// stargz annotations on each layer, the new diffIDs in the config. A multi-platform index is
/// converted for every platform (or only the one asked for) and written as an OCI index.
public enum ImageConverter {
    /// How to convert.
    public struct Options: Sendable {
        /// Options of each layer's conversion (level, chunk size, prioritized files).
        public var layer = LayerWriter.Options()
        /// The one platform to convert from an index (written as a single manifest). Nil converts
        /// every platform of an index and writes a new index referencing them; a source that is a
        /// single manifest is converted either way.
        public var platform: Platform?
        /// Leave each layer's TOC out of it and write them all to a TOC image named DST's tag +
        /// `-esgztoc` (see ``ExternalTOC``), pushed next to DST (`--estargz-external-toc`).
        /// `layer.keepDiffID` additionally keeps each layer's uncompressed bytes (and diffID).
        public var externalTOC = false
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

    /// One converted image manifest.
    public struct ImageResult: Sendable {
        /// The platform the source index gave it (nil for a source that was a single manifest).
        public var platform: Platform?
        /// The new manifest (OCI), its layers annotated.
        public var manifest: ImageManifest
        /// The digest of the new manifest's bytes.
        public var manifestDigest: String
        /// The digest of the new config (the source's with the new diffIDs).
        public var configDigest: String
        /// Each layer, in manifest order.
        public var layers: [LayerResult]
    }

    /// What was written.
    public struct Result: Sendable {
        /// The digest of what the destination's tag now names: the manifest, or the index.
        public var digest: String
        /// The converted images in the source's order (one unless a whole index was converted).
        public var images: [ImageResult]
        /// The new index, when the source was an index converted for every platform.
        public var index: ImageIndex?
        /// With ``Options/externalTOC``: where the TOC image went and its manifest's digest.
        public var tocImage: (location: ImageLocation, digest: String)? = nil
    }

    /// One source image: its manifest and config, and the index entry it came from.
    private struct SourceImage {
        var entry: Descriptor?
        var manifest: ImageManifest
        var config: [UInt8]
    }

    /// Converts `source` into `destination`. `progress` hears one line per step.
    public static func convert(source: ImageLocation, destination: ImageLocation, client: RegistryClient,
                               options: Options = Options(), progress: @Sendable (String) -> Void = { _ in }) async throws -> Result {
        // 1. The source image(s).
        let (images, sourceIndex) = try await sourceImages(source, client: client, options: options, progress: progress)
        let work = options.temporaryDirectory + "/estargz-convert-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try? FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }

        // 2. Each image's layers (a layer shared by platforms is converted once), config and manifest.
        var converted: [String: (result: LayerResult, path: String)] = [:]
        var order: [String] = []  // source layer digests, in conversion order
        var results: [ImageResult] = []
        var manifests: [[UInt8]] = []
        for image in images {
            let prefix = sourceIndex == nil ? "" : "\(image.entry?.platform?.description ?? "?"): "
            var layers: [LayerResult] = []
            for (index, layer) in image.manifest.layers.enumerated() {
                let label = "\(prefix)layer \(index + 1)/\(image.manifest.layers.count) \(layer.digest.prefix(19))"
                if let done = converted[layer.digest] {
                    progress("\(label): converted already")
                    layers.append(done.result)
                    continue
                }
                let output = "\(work)/out-\(converted.count)"
                let result = try await convertLayer(layer, from: source, to: output, work: work, client: client, options: options,
                                                    label: label, progress: progress)
                converted[layer.digest] = (result, output)
                order.append(layer.digest)
                layers.append(result)
            }
            // The config with the new diffIDs (the uncompressed tars changed: eStargz adds TOC and landmarks;
            // with keepDiffID they are the source's).
            let newConfig = try rewriteConfig(image.config, diffIDs: layers.map { $0.conversion.diffID.description })
            let configDescriptor = Descriptor(mediaType: MediaType.ociConfig, digest: digestString(newConfig), size: Int64(newConfig.count))
            let newManifest = ImageManifest(config: configDescriptor, layers: layers.map(\.descriptor), annotations: image.manifest.annotations)
            let manifestBytes = try CanonicalJSON.encode(newManifest)
            try await writeBlob(newConfig, to: destination, client: client)
            results.append(ImageResult(platform: image.entry?.platform, manifest: newManifest, manifestDigest: digestString(manifestBytes),
                                       configDigest: configDescriptor.digest, layers: layers))
            manifests.append(manifestBytes)
        }

        // 3. Layers, then manifests, then (for a whole index) the index: nothing refers to a blob not yet there.
        let mountFrom: String? = if case let .registry(src) = source, case let .registry(dst) = destination, src.registry == dst.registry {
            src.repository
        } else { nil }
        for (number, digest) in order.enumerated() {
            let entry = converted[digest]!
            switch destination {
            case let .registry(reference):
                progress("layer \(number + 1)/\(converted.count): pushing \(entry.result.descriptor.size) bytes")
                try await client.pushBlob(reference, digest: entry.result.descriptor.digest, path: entry.path, mountFrom: mountFrom)
            case let .layout(directory, _):
                try OCILayout(directory: directory, create: true).adoptBlob(path: entry.path, digest: entry.result.descriptor.digest)
            }
        }
        // The TOC image goes first: when DST's tag appears, the TOCs its layers need are there.
        let tocImage = options.externalTOC
            ? try await writeTOCImage(order.map { converted[$0]!.result }, for: destination, client: client, progress: progress) : nil
        guard let sourceIndex else {
            try await writeManifest(manifests[0], mediaType: MediaType.ociManifest, to: destination, tagged: true, client: client)
            progress("manifest \(results[0].manifestDigest)")
            return Result(digest: results[0].manifestDigest, images: results, index: nil, tocImage: tocImage)
        }
        var entries: [Descriptor] = []
        for (image, bytes) in zip(images, manifests) {
            try await writeManifest(bytes, mediaType: MediaType.ociManifest, to: destination, tagged: false, client: client)
            entries.append(Descriptor(mediaType: MediaType.ociManifest, digest: digestString(bytes), size: Int64(bytes.count),
                                      annotations: image.entry?.annotations, platform: image.entry?.platform))
        }
        let index = ImageIndex(mediaType: MediaType.ociIndex, manifests: entries, annotations: sourceIndex.annotations)
        let indexBytes = try CanonicalJSON.encode(index)
        try await writeManifest(indexBytes, mediaType: MediaType.ociIndex, to: destination, tagged: true, client: client)
        progress("index \(digestString(indexBytes)) of \(entries.count) manifests")
        return Result(digest: digestString(indexBytes), images: results, index: index, tocImage: tocImage)
    }

    /// Writes the TOC image of `layers` (every platform's, as upstream's converter does) under
    /// DST's tag + `-esgztoc`: the TOC blobs, the empty config, the manifest.
    private static func writeTOCImage(_ layers: [LayerResult], for destination: ImageLocation, client: RegistryClient,
                                      progress: @Sendable (String) -> Void) async throws -> (location: ImageLocation, digest: String) {
        let location: ImageLocation
        switch destination {
        case let .registry(reference): location = .registry(try ExternalTOC.imageReference(for: reference))
        case let .layout(directory, tag): location = .layout(directory: directory, tag: (tag ?? "latest") + ExternalTOC.suffix)
        }
        var tocs: [(toc: Descriptor, layerDigest: String)] = []
        for layer in layers {
            guard let toc = layer.conversion.externalTOC else { throw RegistryError.local("layer \(layer.descriptor.digest) has no external TOC") }
            try await writeBlob(toc, to: location, client: client)
            tocs.append((Descriptor(mediaType: MediaType.ociLayerGzip, digest: digestString(toc), size: Int64(toc.count)), layer.descriptor.digest))
        }
        let (config, manifest) = try ExternalTOC.manifest(tocs: tocs)
        try await writeBlob(config, to: location, client: client)
        try await writeManifest(manifest, mediaType: MediaType.ociManifest, to: location, tagged: true, client: client)
        progress("TOC image \(location) \(digestString(manifest)) with \(tocs.count) TOCs")
        return (location, digestString(manifest))
    }

    /// The manifests to convert: the one for `options.platform`, or every image of an index
    /// (skipping entries for no platform, such as build attestations, whose layers are no tars).
    private static func sourceImages(_ source: ImageLocation, client: RegistryClient, options: Options,
                                     progress: @Sendable (String) -> Void) async throws -> ([SourceImage], ImageIndex?) {
        switch source {
        case let .registry(reference):
            if let platform = options.platform {
                let image = try await client.resolveImage(reference, platform: platform)
                return ([SourceImage(entry: nil, manifest: image.manifest, config: image.configBytes)], nil)
            }
            let (bytes, type, _) = try await client.fetchManifest(reference)
            guard MediaType.isIndex(type) else {
                let manifest = try CanonicalJSON.decode(ImageManifest.self, from: bytes, what: reference.description)
                return ([SourceImage(entry: nil, manifest: manifest, config: try await client.fetchBlob(reference, digest: manifest.config.digest))], nil)
            }
            let index = try CanonicalJSON.decode(ImageIndex.self, from: bytes, what: reference.description)
            var images: [SourceImage] = []
            for entry in try platformEntries(of: index, what: reference.description, progress: progress) {
                let manifestBytes = try await client.fetchManifest(reference, reference: entry.digest).bytes
                let manifest = try CanonicalJSON.decode(ImageManifest.self, from: manifestBytes, what: entry.digest)
                images.append(SourceImage(entry: entry, manifest: manifest, config: try await client.fetchBlob(reference, digest: manifest.config.digest)))
            }
            return (images, index)
        case let .layout(directory, tag):
            let layout = try OCILayout(directory: directory)
            if let platform = options.platform {
                let resolved = try layout.resolve(tag: tag, platform: platform)
                return ([SourceImage(entry: nil, manifest: resolved.manifest, config: try layout.readBlob(resolved.manifest.config.digest))], nil)
            }
            let top = try layout.descriptor(tag: tag)
            let bytes = try layout.readBlob(top.digest)
            guard MediaType.isIndex(top.mediaType) || CanonicalJSON.mediaType(of: bytes).map(MediaType.isIndex) == true else {
                let manifest = try CanonicalJSON.decode(ImageManifest.self, from: bytes, what: top.digest)
                return ([SourceImage(entry: nil, manifest: manifest, config: try layout.readBlob(manifest.config.digest))], nil)
            }
            let index = try CanonicalJSON.decode(ImageIndex.self, from: bytes, what: top.digest)
            let images = try platformEntries(of: index, what: top.digest, progress: progress).map { entry in
                let manifest = try CanonicalJSON.decode(ImageManifest.self, from: try layout.readBlob(entry.digest), what: entry.digest)
                return SourceImage(entry: entry, manifest: manifest, config: try layout.readBlob(manifest.config.digest))
            }
            return (images, index)
        }
    }

    /// An index's image manifests that name a real platform.
    private static func platformEntries(of index: ImageIndex, what: String, progress: @Sendable (String) -> Void) throws(RegistryError) -> [Descriptor] {
        var entries: [Descriptor] = []
        for entry in index.manifests {
            if MediaType.isIndex(entry.mediaType) || entry.platform == nil || entry.platform?.os == "unknown" {
                progress("skipping \(entry.digest.prefix(19)) (\(entry.platform?.description ?? "no platform")): not an image for a platform")
                continue
            }
            entries.append(entry)
        }
        guard !entries.isEmpty else { throw .invalidResponse(url: what, reason: "the index lists no image for any platform") }
        return entries
    }

    /// Fetches (registry) or finds (layout) one layer and converts it into `output`.
    private static func convertLayer(_ layer: Descriptor, from source: ImageLocation, to output: String, work: String, client: RegistryClient,
                                     options: Options, label: String, progress: @Sendable (String) -> Void) async throws -> LayerResult {
        let input: String
        switch source {
        case let .registry(reference):
            input = "\(work)/in"
            progress("\(label): downloading \(layer.size) bytes")
            try await client.downloadBlob(reference, digest: layer.digest, to: input)
        case let .layout(directory, _):
            input = OCILayout(unchecked: directory).blobPath(layer.digest)
        }
        progress("\(label): converting")
        var layerOptions = options.layer
        layerOptions.externalTOC = options.externalTOC
        let conversion = try await Task(executorPreference: BlockingBridge.shared) {
            try LayerWriter.convert(inputPath: input, outputPath: output, options: layerOptions)
        }.value
        if case .registry = source { unlink(input) }
        let (digest, size) = try fileDigest(output)
        // zstd:chunked layers also carry the manifest checksum and position containers/storage reads,
        // as the reference's nativeconverter/zstdchunked writes them.
        let annotations = [
            StargzAnnotation.tocDigest: conversion.tocDigest.description,
            StargzAnnotation.uncompressedSize: String(conversion.uncompressedSize),
        ].merging(conversion.annotations) { first, _ in first }
        let descriptor = Descriptor(mediaType: layerOptions.compression.mediaType, digest: digest, size: size, annotations: annotations)
        progress("\(label): \(layer.size) → \(size) bytes, toc \(conversion.tocDigest)")
        return LayerResult(source: layer, descriptor: descriptor, conversion: conversion)
    }

    private static func writeBlob(_ bytes: [UInt8], to destination: ImageLocation, client: RegistryClient) async throws {
        switch destination {
        case let .registry(reference): try await client.pushBlob(reference, digest: digestString(bytes), bytes: bytes)
        case let .layout(directory, _): try OCILayout(directory: directory, create: true).writeBlob(bytes)
        }
    }

    /// Puts a manifest or index under the destination's tag (`tagged`), or by digest only.
    private static func writeManifest(_ bytes: [UInt8], mediaType: String, to destination: ImageLocation, tagged: Bool,
                                      client: RegistryClient) async throws {
        switch destination {
        case let .registry(reference):
            try await client.pushManifest(reference, bytes: bytes, mediaType: mediaType, tagOrDigest: tagged ? nil : digestString(bytes))
        case let .layout(directory, tag):
            let layout = try OCILayout(directory: directory, create: true)
            if tagged {
                try layout.addManifest(bytes: bytes, mediaType: mediaType, tag: tag ?? "latest")
            } else {
                try layout.writeBlob(bytes)
            }
        }
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
