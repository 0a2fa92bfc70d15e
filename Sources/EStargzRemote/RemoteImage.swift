import EStargzCore

/// An image (or one layer blob) read lazily from a registry: each eStargz layer opened
/// through its own ``RangeReader``, the layers merged in order with whiteouts applied.
public final class RemoteImage: Sendable {
    /// One layer: its descriptor, the range reader and the layer reader over it.
    public struct Layer: Sendable {
        public var descriptor: Descriptor
        public var source: RangeReader
        public var reader: LayerReader
    }

    /// The layers, lowest first.
    public let layers: [Layer]
    /// The process the image's config names (nil for a layer blob, or a config that is not one).
    public let process: ImageProcess?

    private init(layers: [Layer], process: ImageProcess?) {
        self.layers = layers
        self.process = process
    }

    /// Opens `reference`: a layer blob when its digest names a blob (not a manifest), otherwise
    /// the image it resolves to. Layers are verified against their `toc.digest` annotation. A layer
    /// whose TOC is external gets it from the image's TOC image (see ``ExternalTOC``).
    public static func open(client: RegistryClient, reference: ImageReference, platform: Platform = .current,
                            cache: (any ChunkCache)? = nil, options: RangeReader.Options = RangeReader.Options()) async throws -> RemoteImage {
        var descriptors: [Descriptor]
        var blobSource: RangeReader?
        var process: ImageProcess?
        do {
            let image = try await client.resolveImage(reference, platform: platform)
            descriptors = image.manifest.layers
            process = try? ImageProcess(imageConfig: image.configBytes)
        } catch {
            // `REPO@sha256:…` of a layer blob: the manifest endpoint does not know it. Opening it
            // learns its size (no HEAD needed).
            guard let digest = reference.digest, Self.isNotManifest(error) else { throw error }
            let source = try await RangeReader.open(client: client, repository: reference, digest: digest, options: options)
            blobSource = source
            descriptors = [Descriptor(mediaType: MediaType.ociLayerGzip, digest: digest, size: source.size)]
        }
        var layers: [Layer] = []
        var tocFinder: ExternalTOCFinder?
        for descriptor in descriptors {
            let source: RangeReader
            if let blobSource { source = blobSource } else {
                source = try await RangeReader.open(client: client, repository: reference, digest: descriptor.digest,
                                                    size: descriptor.size, options: options)
            }
            let trusted = descriptor.annotations?[StargzAnnotation.tocDigest].flatMap { SHA256Digest(parsing: $0) }
            let reader: LayerReader
            do {
                reader = try await Task(executorPreference: BlockingBridge.shared) {
                    try LayerReader(source: source, tocDigest: trusted, cache: cache)
                }.value
            } catch EStargzError.externalTOCRequired where blobSource == nil {
                // The TOC is in the image's TOC image (`TAG-esgztoc`); checked against `trusted`.
                if tocFinder == nil { tocFinder = try ExternalTOCFinder(client: client, image: reference) }
                let toc = try await tocFinder!.toc(forLayer: descriptor.digest)
                reader = try await Task(executorPreference: BlockingBridge.shared) {
                    try LayerReader(source: source, tocDigest: trusted, cache: cache, externalTOC: toc)
                }.value
            }
            layers.append(Layer(descriptor: descriptor, source: source, reader: reader))
        }
        return RemoteImage(layers: layers, process: process)
    }

    /// Every visible path of the merged file system with the layer that provides it, in path order.
    /// Whiteout files (`.wh.NAME`, `.wh..wh..opq`) hide lower entries and are not listed.
    public func mergedEntries() -> [(path: String, layer: Int, entry: LayerEntry)] {
        var visible: [String: (Int, LayerEntry)] = [:]
        for (index, layer) in layers.enumerated() {
            var added: [String: (Int, LayerEntry)] = [:]
            var hidden: [String] = []
            var opaque: [String] = []
            layer.reader.walk { path, entry in
                // Landmarks are layout markers of the format, not files of the image.
                guard !path.isEmpty, path != Landmark.prefetch, path != Landmark.noPrefetch else { return true }
                let (parent, name) = Self.split(path)
                if name == ".wh..wh..opq" {
                    opaque.append(parent)
                } else if name.hasPrefix(".wh.") {
                    hidden.append(parent.isEmpty ? String(name.dropFirst(4)) : parent + "/" + name.dropFirst(4))
                } else {
                    added[path] = (index, entry)
                }
                return true
            }
            for path in hidden {
                visible = visible.filter { $0.key != path && !$0.key.hasPrefix(path + "/") }
            }
            for directory in opaque {
                visible = visible.filter { !$0.key.hasPrefix(directory.isEmpty ? "" : directory + "/") }
            }
            visible.merge(added) { _, new in new }
        }
        return visible.map { (path: $0.key, layer: $0.value.0, entry: $0.value.1) }.sorted { $0.path < $1.path }
    }

    /// The layer and entry that `path` shows in the merged view, or nil (missing or whited out).
    public func lookup(_ path: String) -> (layer: Layer, entry: LayerEntry)? {
        var normalized = path
        while normalized.hasPrefix("/") || normalized.hasPrefix("./") { normalized.removeFirst(normalized.hasPrefix("/") ? 1 : 2) }
        let components = normalized.split(separator: "/").map(String.init)
        for layer in layers.reversed() {
            if let entry = layer.reader.entry(at: normalized) { return (layer, entry) }
            // A whiteout of the path or of any ancestor, or an opaque ancestor, hides everything below.
            var prefix = ""
            for (i, component) in components.enumerated() {
                let whiteout = (prefix.isEmpty ? "" : prefix + "/") + ".wh." + component
                if layer.reader.entry(at: whiteout) != nil { return nil }
                if i < components.count - 1 {
                    prefix = prefix.isEmpty ? component : prefix + "/" + component
                    if layer.reader.entry(at: prefix + "/.wh..wh..opq") != nil { return nil }
                }
            }
        }
        return nil
    }

    /// Bytes fetched, requests and block-cache counts summed over the layers.
    public var statistics: RangeReader.Statistics {
        layers.reduce(into: RangeReader.Statistics()) { total, layer in
            let s = layer.source.statistics
            total.bytesFetched += s.bytesFetched
            total.requests += s.requests
            total.cacheHits += s.cacheHits
            total.cacheMisses += s.cacheMisses
            total.sharedWaits += s.sharedWaits
        }
    }

    private static func isNotManifest(_ error: any Error) -> Bool {
        switch error as? RegistryError {
        case .notFound?, .unexpectedStatus?, .invalidResponse?: true
        default: false
        }
    }

    private static func split(_ path: String) -> (String, String) {
        guard let slash = path.lastIndex(of: "/") else { return ("", path) }
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }
}
