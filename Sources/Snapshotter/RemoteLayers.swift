import Dispatch
import EStargzCore
import EStargzRemote
import Foundation
import LazyFS
import Logging
import Synchronization

/// The labels through which containerd asks for a remote snapshot. containerd copies a layer
/// descriptor's `containerd.io/snapshot/…` annotations into the Prepare labels; `estargz pull`
/// and `ctr-remote image rpull` add the image reference and layer digest, containerd's CRI
/// plugin (with `disable_snapshot_annotations = false`) its own `cri.*` ones.
enum RemoteLabel {
    /// The committed snapshot containerd will look for (the layer's chain ID).
    static let targetSnapshot = "containerd.io/snapshot.ref"
    static let imageReference = "containerd.io/snapshot/remote/stargz.reference"
    static let layerDigest = "containerd.io/snapshot/remote/stargz.digest"
    /// Every layer of the image, comma-separated (so a snapshotter may fetch ahead).
    static let imageLayers = "containerd.io/snapshot/remote/stargz.layers"
    /// What the CRI plugin sets for the same three.
    static let criImageReference = "containerd.io/snapshot/cri.image-ref"
    static let criLayerDigest = "containerd.io/snapshot/cri.layer-digest"
    static let criImageLayers = "containerd.io/snapshot/cri.image-layers"
    /// The eStargz TOC digest annotation (the trusted root of every chunk digest).
    static let tocDigest = "containerd.io/snapshot/stargz/toc.digest"
    /// Only between the snapshotter and the layer server, never stored: the `fs` directories of
    /// the snapshots below the one being mounted, top first, `:`-separated (read-ahead looks there
    /// for what a program of this layer needs).
    static let lowerDirectories = "estargz.snapshotter/lower-directories"
    /// Only between the snapshotter and the layer server, never stored: the layer is mounted again
    /// after a restart, not for a pull, so nothing is fetched ahead for a container about to start.
    static let restoring = "estargz.snapshotter/restoring"
    /// Marks a snapshot whose `fs` directory is a lazy mount.
    static let remote = "containerd.io/snapshot/remote"
    static let remoteValue = "remote snapshot"
}

/// Lazily mounted eStargz layers: each remote snapshot's `fs` directory is a LazyFS mount (one
/// layer, overlayfs-style whiteouts) reading its blob from the registry chunk by chunk.
public final class RemoteLayers: LayerMounting {
    let client: RegistryClient
    private let cache: MemoryChunkCache
    private let mounts = Mutex<[String: LazyMount]>([:])
    private let sources = Mutex<[String: RangeReader]>([:])
    private let prefetch: Bool
    private let backgroundFetch: Bool
    private let readerOptions: RangeReader.Options
    private let readAhead: LazyFileSystem.ReadAhead
    /// Per image (reference and layer list): its layers and where its program may be, from its
    /// config, fetched once beside its first layer's TOC.
    private let imagePrograms = Mutex<[String: Task<(layers: Set<String>, paths: [String]), Never>]>([:])
    private let logger = Logger(label: "estargz.snapshotter.remote")

    /// - Parameters:
    ///   - registry: registry settings (mirrors, credentials, plain-HTTP); loopback is plain HTTP anyway.
    ///   - cacheDirectory: where verified chunks are kept across layers and restarts (nil: memory only).
    ///   - cacheCapacity: bytes the on-disk cache may hold.
    ///   - memoryCacheCapacity: bytes of verified chunks kept in memory in front of the disk, shared
    ///     by every layer. A kernel read is usually a slice of a chunk (128 KiB of a 4 MiB one): a
    ///     chunk in memory serves it with one copy, while the disk tier reads and hashes the whole
    ///     chunk again for every slice.
    ///   - prefetch: fetch each layer's prioritized region right after mounting it.
    ///   - backgroundFetch: then fetch the rest of the layer in the background.
    ///   - fetchBlockSize: granularity of range reads from the registry (bytes). Every miss is
    ///     rounded out to whole blocks. Blocks no longer bring neighbours along by chance: read-ahead
    ///     fetches the neighbours worth having, so 4 KiB only rounds each request to a page.
    ///   - tailSize: how much of a layer's end the first request reads (footer and, when it fits,
    ///     the TOC); a larger TOC costs one more request for exactly the rest. 64 KiB holds the TOC
    ///     of small layers, and on large ones (a python rootfs: a 400 KB TOC) fetches no file data
    ///     with it: a 512 KiB tail fetched ~150 KB beyond the TOC per layer, for one round trip less.
    ///   - readAhead: what each mount guesses and fetches before it is read (``LazyFS/LazyFileSystem/ReadAhead``).
    public init(registry: RegistryClient.Options = RegistryClient.Options(), cacheDirectory: String? = nil,
                cacheCapacity: Int64 = 1 << 30, memoryCacheCapacity: Int = 128 << 20, prefetch: Bool = true,
                backgroundFetch: Bool = false, fetchBlockSize: Int64 = 4 << 10, tailSize: Int64 = 64 << 10,
                readAhead: LazyFileSystem.ReadAhead = LazyFileSystem.ReadAhead()) throws {
        client = RegistryClient(options: registry)
        let logger = self.logger
        let disk = try cacheDirectory.map {
            try DiskChunkCache(directory: $0, capacity: cacheCapacity) { message in logger.warning("\(message)") }
        }
        cache = MemoryChunkCache(capacity: memoryCacheCapacity, backing: disk)
        self.prefetch = prefetch
        self.backgroundFetch = backgroundFetch
        self.readAhead = readAhead
        var options = RangeReader.Options()
        options.blockSize = fetchBlockSize
        options.tailSize = tailSize
        readerOptions = options
    }

    /// Hits and misses of the in-memory chunk tier (a miss goes to the disk cache, then the registry).
    var memoryCacheCounts: (hits: Int64, misses: Int64) { cache.counts }

    /// What the layers mounted so far fetched from their registries: bytes, range requests, and the
    /// sizes of their blobs (what downloading them whole would have cost).
    public var registryStatistics: (bytesFetched: Int64, requests: Int64, blobBytes: Int64) {
        sources.withLock { sources in
            sources.values.reduce((Int64(0), Int64(0), Int64(0))) { total, source in
                let s = source.statistics
                return (total.0 + s.bytesFetched, total.1 + s.requests, total.2 + source.size)
            }
        }
    }

    /// Whether these labels describe a layer that can be mounted lazily.
    static func describesRemoteLayer(_ labels: [String: String]) -> Bool {
        reference(in: labels) != nil && layerDigest(in: labels) != nil
            && labels[RemoteLabel.tocDigest].flatMap(SHA256Digest.init(parsing:)) != nil
    }

    /// The image reference of a remote layer's labels: ours (and ctr-remote's), or the CRI plugin's.
    static func reference(in labels: [String: String]) -> String? {
        labels[RemoteLabel.imageReference] ?? labels[RemoteLabel.criImageReference]
    }

    /// The layer digest of a remote layer's labels: ours (and ctr-remote's), or the CRI plugin's.
    static func layerDigest(in labels: [String: String]) -> String? {
        labels[RemoteLabel.layerDigest] ?? labels[RemoteLabel.criLayerDigest]
    }

    /// Opens the layer the labels name (footer and TOC only, the TOC checked against its digest)
    /// and mounts it at `directory`. Blocks while the TOC is fetched. Returns the layer's usage
    /// as ``usage(of:)`` defines it.
    @discardableResult
    public func mount(labels: [String: String], at directory: String) throws -> (size: Int64, inodes: Int64) {
        guard let referenceText = Self.reference(in: labels), let digest = Self.layerDigest(in: labels),
              let toc = labels[RemoteLabel.tocDigest].flatMap(SHA256Digest.init(parsing:)) else {
            throw SnapshotterError.invalidArgument("labels do not describe an eStargz layer")
        }
        let reference = try ImageReference(parsing: referenceText)
        let client = self.client, readerOptions = self.readerOptions
        // A layer mounted again after a restart is not about to start a container: the startup
        // files and the program of every layer of every image would be a burst for nobody, and
        // its prioritized region comes through the chunk cache (a disk cache has it), not from
        // the registry ahead of it. Reads, and the guesses they lead to, fetch as usual.
        let restoring = labels[RemoteLabel.restoring] != nil
        let program = readAhead.firstProgram && !restoring ? imageProgram(reference, labels: labels) : nil
        // The registry is async; LayerReader and LazyFS are synchronous. Bridge on a Dispatch thread,
        // never on a thread of Swift's cooperative pool.
        let clock = ContinuousClock(), started = clock.now
        let source = try Self.blocking { try await RangeReader.open(client: client, repository: reference, digest: digest, options: readerOptions) }
        let fetched = clock.now
        let layer: LayerReader
        do {
            layer = try LayerReader(source: source, tocDigest: toc, cache: cache)
        } catch EStargzError.externalTOCRequired {
            // The TOC is in the image's TOC image (`TAG-esgztoc`) on the same registry.
            let finder = try ExternalTOCFinder(client: client, image: reference)
            let external = try Self.blocking { try await finder.toc(forLayer: digest) }
            layer = try LayerReader(source: source, tocDigest: toc, cache: cache, externalTOC: external)
        }
        let opened = clock.now
        // The region's bytes start flowing now, while the mount is set up and Prepare returns.
        let ahead = prefetch && !restoring && (layer.prefetchRegionEnd ?? 0) > 0 ? Self.fetchAhead(source, upTo: layer.prefetchRegionEnd!) : nil
        var options = LazyFileSystem.Options()
        options.prefetch = prefetch
        options.backgroundFetch = backgroundFetch
        options.readAhead = readAhead
        if restoring { options.readAhead.startupFiles = [] }
        var built = opened
        do {
            let fileSystem = try LazyFileSystem(layers: [layer], mode: .overlayLayer, options: options)
            if let lowers = labels[RemoteLabel.lowerDirectories]?.split(separator: ":").map(String.init), !lowers.isEmpty {
                // The layers below, as mounted when read-ahead asks (lower layers are prepared first).
                fileSystem.readAheadAlso { [weak self] in
                    self.map { layers in layers.mounts.withLock { mounted in lowers.compactMap { mounted[$0]?.fileSystem } } } ?? []
                }
            }
            built = clock.now
            let mount = try fileSystem.mount(at: directory)
            mounts.withLock { $0[directory] = mount }
            sources.withLock { $0[directory] = source }
            if let program {
                Task.detached { [weak self] in
                    let (layers, paths) = await program.value
                    // Not for a layer unmounted meanwhile.
                    guard layers.contains(digest), self?.mounts.withLock({ $0[directory] === mount }) == true else { return }
                    fileSystem.readAheadProgram(atAnyOf: paths)
                }
            }
        } catch {
            ahead?.cancel()
            throw error
        }
        let mounted = clock.now
        let usage = Self.usage(of: layer)
        let measured = clock.now
        func ms(_ duration: Duration) -> String {
            String(Double(duration.components.seconds) * 1e3 + Double(duration.components.attoseconds) / 1e15)
        }
        // Where a cold start's Prepare goes: the first request(s), the TOC, the inode table, the mount.
        logger.info("layer mounted lazily", metadata: [
            "layer": "\(digest)", "entries": "\(layer.tocEntryCount)",
            "tail_ms": "\(ms(fetched - started))", "toc_ms": "\(ms(opened - fetched))",
            "inodes_ms": "\(ms(built - opened))", "mount_ms": "\(ms(mounted - built))",
            "usage_ms": "\(ms(measured - mounted))",
            "prioritized_bytes": "\(layer.prefetchRegionEnd ?? 0)", "fetched_bytes": "\(source.statistics.bytesFetched)",
        ])
        return usage
    }

    /// The image's layers and the paths its program may be at (its config's Entrypoint or Cmd, looked
    /// up in its `PATH`), fetched once per image: manifest and config, two small requests beside the
    /// TOC's. Nothing when they cannot be had (read-ahead then waits for the runtime's lookup).
    private func imageProgram(_ reference: ImageReference, labels: [String: String]) -> Task<(layers: Set<String>, paths: [String]), Never> {
        // The layer list tells a tag pushed again apart from the image it named before.
        let key = reference.description + " " + (labels[RemoteLabel.imageLayers] ?? labels[RemoteLabel.criImageLayers] ?? "")
        let client = self.client, logger = self.logger
        return imagePrograms.withLock { images in
            if let known = images[key] { return known }
            let task = Task.detached { () -> (layers: Set<String>, paths: [String]) in
                do {
                    let image = try await client.resolveImage(reference)
                    let process = try ImageProcess(imageConfig: image.configBytes)
                    return (Set(image.manifest.layers.map(\.digest)), process.programPaths)
                } catch {
                    logger.debug("no image config for read-ahead", metadata: ["image": "\(reference)", "error": "\(error)"])
                    return ([], [])
                }
            }
            // Bounded: a node pulls many images over its life; forgetting one costs two small requests.
            if images.count >= 256 { images.removeAll() }
            images[key] = task
            return task
        }
    }

    /// Streams the prioritized region `0 ..< end` into the reader's block cache in blob order, 1 MiB
    /// per request with three requests in flight (the next one goes out as soon as any finishes),
    /// so LazyFS's chunk-by-chunk prefetch (and any read of those files) finds its bytes arriving
    /// instead of paying a round trip per block. At most half the block cache's budget, so nothing
    /// is evicted before it is used. Cancelling the task stops it after the requests in flight.
    @discardableResult
    static func fetchAhead(_ source: RangeReader, upTo end: Int64) -> Task<Void, Never> {
        let limit = min(end, source.options.memoryLimit / 2)
        let piece: Int64 = 1 << 20, window = 3
        return Task.detached {
            await withTaskGroup(of: Bool.self) { group in
                var offset: Int64 = 0
                func sendNext() {
                    let range = offset ..< min(limit, offset + piece)
                    offset = range.upperBound
                    group.addTask { (try? await source.fetch(range)) != nil }
                }
                while offset < limit && offset < piece * Int64(window) { sendNext() }
                while let succeeded = await group.next() {
                    guard succeeded, !Task.isCancelled else { return }
                    if offset < limit { sendNext() }
                }
            }
        }
    }

    /// What a lazily mounted layer reports to containerd's Usage: the layer as if extracted, from
    /// its TOC alone — `size` is the bytes of its regular files (apparent sizes, each hardlinked
    /// file once), `inodes` its entries (each hardlinked file once, the root included), both as the
    /// mount shows the layer (without the prefetch landmarks). Nothing is fetched for it, and it does
    /// not change as chunks arrive: fetched chunks live in the chunk cache shared by all layers,
    /// which is not any one snapshot's usage.
    static func usage(of layer: LayerReader) -> (size: Int64, inodes: Int64) {
        var seen = Set<Int>()
        var size: Int64 = 0
        layer.walk { path, entry in
            if path == Landmark.prefetch || path == Landmark.noPrefetch { return false }
            if seen.insert(entry.id).inserted { size += entry.size }
            return true
        }
        return (size, Int64(seen.count))
    }

    /// The directories with a layer mounted now.
    public func mountedDirectories() -> Set<String> {
        mounts.withLock { Set($0.keys) }
    }

    /// Unmounts the layer mounted at `directory`, if any.
    public func unmount(_ directory: String) {
        let mount = mounts.withLock { $0.removeValue(forKey: directory) }
        sources.withLock { _ = $0.removeValue(forKey: directory) }
        mount?.unmount()
    }

    /// Unmounts every layer (at shutdown).
    public func unmountAll() {
        let all = mounts.withLock { current in
            defer { current.removeAll() }
            return Array(current.values)
        }
        sources.withLock { $0.removeAll() }
        for mount in all { mount.unmount() }
    }

    /// Unmounts every layer and closes the registry connections; call once, at the end.
    public func shutdown() async {
        unmountAll()
        try? await client.shutdown()
    }

    /// Runs async registry work for the synchronous snapshotter and FUSE paths, on the bridge's own
    /// threads: waiting on a cooperative-pool thread for work that needs that pool deadlocks when
    /// as many callers wait as the machine has cores.
    static func blocking<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
        try BlockingBridge.wait(operation)
    }
}
