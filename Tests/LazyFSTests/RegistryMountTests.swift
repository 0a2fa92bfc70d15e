import EStargzCore
import EStargzRemote
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// An OCI layout at `layout` holding one image (`tag`) with the given plain tar.gz layer blobs.
func writeOCILayout(_ layout: String, tag: String, gzipLayers: [String], process: [String: Any] = ["Env": ["PATH=/bin"]]) throws {
    let oci = try OCILayout(directory: layout, create: true)
    var descriptors: [Descriptor] = []
    var diffIDs: [String] = []
    for path in gzipLayers {
        let bytes = try readFile(path)
        let digest = try oci.writeBlob(bytes)
        descriptors.append(Descriptor(mediaType: MediaType.ociLayerGzip, digest: digest, size: Int64(bytes.count)))
        #expect(shell("gzip -dc '\(path)' | sha256sum | cut -d' ' -f1 > '\(path).diffid'") == 0)
        diffIDs.append("sha256:" + String(decoding: try readFile(path + ".diffid"), as: UTF8.self).trimmingCharacters())
    }
    let config: [String: Any] = ["architecture": Platform.current.architecture, "os": "linux",
                                 "config": process, "rootfs": ["type": "layers", "diff_ids": diffIDs]]
    let configBytes = Array(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]))
    let configDigest = try oci.writeBlob(configBytes)
    let manifest = ImageManifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(configBytes.count)),
                                 layers: descriptors)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    try oci.addManifest(bytes: Array(try encoder.encode(manifest)), mediaType: MediaType.ociManifest, tag: tag)
}

/// Reads a whole file through the mount.
func readAll(_ path: String) -> [UInt8]? {
    try? readFile(path)
}

/// Mounts a registry image with `estargz mount REF MNT --stats FILE`, run as a subprocess.
final class CLIMount {
    let pid: String
    let mountpoint: String
    init(_ arguments: String, mountpoint: String, log: String) throws {
        self.mountpoint = mountpoint
        #expect(shell("'\(estargzBinary)' mount \(arguments) 2>'\(log)' & echo $! > '\(log).pid'") == 0)
        pid = String(decoding: try readFile(log + ".pid"), as: UTF8.self).trimmingCharacters()
    }
    var mounted: Bool { shell("grep -q ' \(mountpoint) fuse' /proc/mounts") == 0 }
    func terminate() -> Bool {
        shell("kill -TERM \(pid)") == 0
    }
    deinit { shell("kill -9 \(pid) 2>/dev/null; umount -l '\(mountpoint)' 2>/dev/null") }
}

@Suite(.serialized, .enabled(if: canMount && access(estargzBinary, X_OK) == 0 && TestRegistry.available,
                             "needs root, /dev/fuse, the built CLI and docker-registry"))
struct RegistryMountTests {
    /// The program an image's config names (Cmd `tool`, in its PATH) is read ahead as soon as
    /// `estargz mount REF` has mounted it, before anything looks it up.
    @Test(.timeLimit(.minutes(1))) func theImagesProgramIsReadAheadAtMount() throws {
        let dir = TemporaryDirectory()
        let registry = try TestRegistry()
        defer { registry.stop() }
        let tool = noiseBytes(300_000, seed: 61)
        var tar = TarBuilder()
        for directory in ["./", "bin/", "etc/"] { try tar.append(header(directory, .directory, mode: 0o755)) }
        try tar.append(header("bin/tool", .regular, mode: 0o755), content: tool)
        try tar.append(header("bin/other", .regular, mode: 0o755), content: noiseBytes(200_000, seed: 63))
        try tar.append(header("etc/motd", .regular), content: Array("hello\n".utf8))
        try writeFile(dir.file("layer.tar"), tar.finish())
        #expect(shell("gzip -n -1 -c '\(dir.file("layer.tar"))' > '\(dir.file("layer.tar.gz"))'") == 0)
        try writeOCILayout(dir.file("oci"), tag: "v1", gzipLayers: [dir.file("layer.tar.gz")],
                           process: ["Env": ["PATH=/usr/bin:/bin"], "Cmd": ["tool", "--serve"]])
        let reference = "\(registry.host)/test/program:v1"
        #expect(shell("'\(estargzBinary)' image convert 'oci:\(dir.file("oci")):v1' '\(reference)' --chunk-size 65536 --plain-http >'\(dir.file("convert.log"))' 2>&1") == 0)
        let mountpoint = dir.directory("mnt")
        let mount = try CLIMount("'\(reference)' '\(mountpoint)' --plain-http", mountpoint: mountpoint, log: dir.file("stderr"))
        defer { _ = mount.terminate() }
        #expect(eventually(20) { mount.mounted })
        // The stats file is no lookup of bin/tool; the layer has no startup files, so all it read
        // ahead is the program (incompressible: about its size), and not bin/other.
        func readAhead() -> Int64 {
            readAll(mountpoint + "/.stargz-snapshotter/stats").flatMap { Self.number("readAheadBytes", in: String(decoding: $0, as: UTF8.self)) } ?? -1
        }
        #expect(eventually(10) { readAhead() >= Int64(tool.count) })
        #expect(readAhead() < Int64(tool.count) + 150_000, "\(readAhead())")
        #expect(readAll(mountpoint + "/bin/tool") == tool)
    }

    /// Three layers pushed as an eStargz (or zstd:chunked) image; `estargz mount REF` merges them
    /// lazily from the registry, serves until SIGTERM, and fetches only a little of the big layer.
    /// The format is told by each layer's footer: the mount takes no flag for it.
    @Test(.timeLimit(.minutes(1)), arguments: [false, true]) func mountsRegistryImage(zstdChunked: Bool) throws {
        let dir = TemporaryDirectory()
        let registry = try TestRegistry()
        defer { registry.stop() }

        // Lowest layer: one big incompressible file; above it the LayerStack layers (whiteouts, opaque dirs).
        let noise = noiseBytes(16 << 20, seed: 42)
        var big = TarBuilder()
        try big.append(header("./", .directory, mode: 0o755))
        try big.append(header("big/", .directory, mode: 0o755))
        var h = header("big/noise", .regular)
        h.size = Int64(noise.count)
        try big.append(h, content: noise)
        try big.append(header("small.txt", .regular), content: Array("small file in the big layer\n".utf8))
        let tars = [big.finish(), try LayerStack.tar(LayerStack.layers[0], style: .oci), try LayerStack.tar(LayerStack.layers[1], style: .oci)]
        var gzips: [String] = []
        for (index, tar) in tars.enumerated() {
            try writeFile(dir.file("layer\(index).tar"), tar)
            #expect(shell("gzip -n -1 -c '\(dir.file("layer\(index).tar"))' > '\(dir.file("layer\(index).tar.gz"))'") == 0)
            gzips.append(dir.file("layer\(index).tar.gz"))
        }
        try writeOCILayout(dir.file("oci"), tag: "v1", gzipLayers: gzips)
        let reference = "\(registry.host)/test/mount:v1"
        let format = zstdChunked ? "--zstdchunked" : ""
        #expect(shell("'\(estargzBinary)' image convert 'oci:\(dir.file("oci")):v1' '\(reference)' --chunk-size 262144 --plain-http \(format) >'\(dir.file("convert.log"))' 2>&1") == 0)
        if zstdChunked {
            let manifest = try run("/usr/bin/skopeo", ["inspect", "--raw", "--tls-verify=false", "docker://" + reference])
            #expect(manifest.components(separatedBy: "application/vnd.oci.image.layer.v1.tar+zstd").count == 4, "\(manifest)")
        }

        let mountpoint = dir.directory("mnt")
        let started = Date()
        let mount = try CLIMount("'\(reference)' '\(mountpoint)' --plain-http --stats '\(dir.file("stats.json"))'",
                                 mountpoint: mountpoint, log: dir.file("stderr"))
        #expect(eventually(20) { mount.mounted })
        let small = readAll(mountpoint + "/small.txt")
        let firstRead = Date().timeIntervalSince(started)
        print("registry mount: first read \(Int(firstRead * 1000)) ms after starting estargz mount")
        #expect(small == Array("small file in the big layer\n".utf8))
        // Merged across layers: the upper version wins, whiteouts and opaque directories hide lower entries.
        #expect(readAll(mountpoint + "/a/f1") == Array("one, version two".utf8))
        #expect(readAll(mountpoint + "/a/f2") == Array("two".utf8))
        #expect(readAll(mountpoint + "/b/keep") == Array("keep".utf8))
        #expect(access(mountpoint + "/b/gone", F_OK) != 0)
        #expect(access(mountpoint + "/h2", F_OK) != 0)
        #expect(access(mountpoint + "/c/old1", F_OK) != 0)
        #expect(readAll(mountpoint + "/c/new") == Array("new".utf8))
        #expect(readAll(mountpoint + "/top.txt/inner") == Array("inner".utf8))
        var info = stat()
        #expect(stat(mountpoint + "/big/noise", &info) == 0)
        #expect(info.st_size == off_t(noise.count))
        // A slice in the middle of the big file (one chunk), compared byte for byte.
        #expect(readRange(mountpoint + "/big/noise", offset: 3 << 20, count: 1000) == .success(Array(noise[(3 << 20) ..< (3 << 20) + 1000])))

        #expect(mount.terminate())
        #expect(eventually { !mount.mounted && Self.statsWritten(dir.file("stats.json")) })
        #expect(eventually { shell("test ! -e /proc/\(mount.pid) || grep -q ') Z' /proc/\(mount.pid)/stat") == 0 })
        let stats = String(decoding: try readFile(dir.file("stats.json")), as: UTF8.self)
        let fetched = Self.number("registryBytesFetched", in: stats)
        let blobBytes = Self.number("registryBlobBytes", in: stats)
        print("registry mount: fetched \(fetched ?? -1) of \(blobBytes ?? -1) blob bytes; stats \(stats)")
        #expect((blobBytes ?? 0) > 8 << 20)
        #expect((fetched ?? .max) > 0)
        #expect((fetched ?? .max) < (blobBytes ?? 0) / 4)
        #expect(Self.number("verificationFailures", in: stats) == 0)
    }

    /// Pushes a one-layer eStargz image of `tar` (256 KiB chunks) as `reference`.
    private func pushImage(_ tar: [UInt8], as reference: String, in dir: TemporaryDirectory, name: String) throws {
        try writeFile(dir.file("\(name).tar"), tar)
        #expect(shell("gzip -n -1 -c '\(dir.file("\(name).tar"))' > '\(dir.file("\(name).tar.gz"))'") == 0)
        try writeOCILayout(dir.file("oci-\(name)"), tag: "v1", gzipLayers: [dir.file("\(name).tar.gz")])
        #expect(shell("'\(estargzBinary)' image convert 'oci:\(dir.file("oci-\(name)")):v1' '\(reference)' --chunk-size 262144 --plain-http >'\(dir.file("convert-\(name).log"))' 2>&1") == 0)
    }

    /// Mounts `reference` with `options`, runs `body`, unmounts and returns the --stats JSON.
    private func withCLIMount(_ reference: String, _ options: String, in dir: TemporaryDirectory,
                              _ body: (String) throws -> Void) throws -> String {
        let mountpoint = dir.directory("mnt")
        let stats = dir.file("stats.json")
        unlink(stats)
        let mount = try CLIMount("'\(reference)' '\(mountpoint)' --plain-http --stats '\(stats)' \(options)",
                                 mountpoint: mountpoint, log: dir.file("stderr"))
        #expect(eventually(20) { mount.mounted })
        try body(mountpoint)
        #expect(mount.terminate())
        #expect(eventually { !mount.mounted && Self.statsWritten(stats) })
        return String(decoding: try readFile(stats), as: UTF8.self)
    }

    /// `--cache-dir`: verified chunks land on disk, content-addressed, so a second mount of the same
    /// image reads them from there and fetches no chunk bytes (only the footer and TOC); a damaged
    /// cache file is never served (that one chunk is fetched again); `--cache-size` bounds the directory.
    @Test(.timeLimit(.minutes(2))) func warmDiskCacheServesASecondMount() throws {
        let dir = TemporaryDirectory()
        let registry = try TestRegistry()
        defer { registry.stop() }
        let noise = noiseBytes(4 << 20, seed: 7)
        var tar = TarBuilder()
        try tar.append(header("./", .directory, mode: 0o755))
        try tar.append(header("noise", .regular), content: noise)
        try tar.append(header("small.txt", .regular), content: Array("small\n".utf8))
        let reference = "\(registry.host)/test/cached:v1"
        try pushImage(tar.finish(), as: reference, in: dir, name: "cached")
        let cache = dir.file("chunks")
        func readEverything(_ mountpoint: String) {
            #expect(readAll(mountpoint + "/noise") == noise)
            #expect(readAll(mountpoint + "/small.txt") == Array("small\n".utf8))
        }

        let cold = try withCLIMount(reference, "--cache-dir '\(cache)'", in: dir, readEverything)
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []).filter { $0.count == 64 }
        #expect(files.count == 17)  // 16 noise chunks and small.txt, named by their SHA-256
        #expect(Self.number("bytesFetched", in: cold)! > 4 << 20)

        let warm = try withCLIMount(reference, "--cache-dir '\(cache)'", in: dir, readEverything)
        print("disk cache: cold mount \(cold); warm mount \(warm)")
        #expect(Self.number("bytesFetched", in: warm) == 0)
        #expect(Self.number("chunksVerified", in: warm) == 0)
        #expect(Self.number("cacheHits", in: warm)! >= 17)
        // What the registry still sends: the blob's tail (footer and TOC) when the layer opens, one
        // 512 KiB read rounded out to the range reader's 64 KiB blocks.
        #expect(Self.number("registryBytesFetched", in: warm)! <= (512 + 64) << 10)
        #expect(Self.number("registryRequests", in: warm) == 1)

        // One damaged file: its chunk is fetched and verified again, the bytes read are still right.
        let victim = cache + "/" + files.sorted()[0]
        var bytes = try readFile(victim)
        bytes[bytes.count / 2] ^= 0x55
        try writeFile(victim, bytes)
        let repaired = try withCLIMount(reference, "--cache-dir '\(cache)'", in: dir, readEverything)
        #expect(Self.number("chunksVerified", in: repaired) == 1)
        #expect(Self.number("bytesFetched", in: repaired)! <= 300 << 10)
        #expect(try readFile(victim) != bytes)  // replaced by the verified chunk

        // --cache-size bounds the directory (MiB).
        let small = dir.file("small-cache")
        _ = try withCLIMount(reference, "--cache-dir '\(small)' --cache-size 1", in: dir, readEverything)
        let held = try FileManager.default.contentsOfDirectory(atPath: small).reduce(0) { total, name in
            total + ((try? FileManager.default.attributesOfItem(atPath: small + "/" + name)[.size] as? Int) ?? 0)
        }
        #expect(held > 0 && held <= 1 << 20)
    }

    /// `--platform` picks a manifest from an image index; without it, this machine's platform.
    @Test(.timeLimit(.minutes(2))) func platformChoosesFromAnIndex() throws {
        let dir = TemporaryDirectory()
        let registry = try TestRegistry()
        defer { registry.stop() }
        let other = Platform.current.architecture == "arm64" ? "amd64" : "arm64"
        var entries: [[String: Any]] = []
        for architecture in [Platform.current.architecture, other] {
            var tar = TarBuilder()
            try tar.append(header("./", .directory, mode: 0o755))
            try tar.append(header("arch", .regular), content: Array("\(architecture)\n".utf8))
            try pushImage(tar.finish(), as: "\(registry.host)/test/multi:\(architecture)", in: dir, name: architecture)
            let manifest = dir.file("manifest-\(architecture)")
            #expect(shell("curl -sSf -H 'Accept: \(MediaType.ociManifest)' -o '\(manifest)' 'http://\(registry.host)/v2/test/multi/manifests/\(architecture)'") == 0)
            let bytes = try readFile(manifest)
            entries.append(["mediaType": MediaType.ociManifest, "digest": SHA256Digest.of(bytes).description, "size": bytes.count,
                            "platform": ["os": "linux", "architecture": architecture]])
        }
        let index: [String: Any] = ["schemaVersion": 2, "mediaType": MediaType.ociIndex, "manifests": entries]
        try writeFile(dir.file("index.json"), Array(try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys])))
        #expect(shell("curl -sSf -X PUT -H 'Content-Type: \(MediaType.ociIndex)' --data-binary @'\(dir.file("index.json"))' 'http://\(registry.host)/v2/test/multi/manifests/multi' >/dev/null") == 0)

        let reference = "\(registry.host)/test/multi:multi"
        _ = try withCLIMount(reference, "--platform linux/\(other)", in: dir) { mountpoint in
            #expect(readAll(mountpoint + "/arch") == Array("\(other)\n".utf8))
        }
        _ = try withCLIMount(reference, "", in: dir) { mountpoint in
            #expect(readAll(mountpoint + "/arch") == Array("\(Platform.current.architecture)\n".utf8))
        }
        #expect(shell("'\(estargzBinary)' mount '\(reference)' '\(dir.file("mnt"))' --platform linux 2>/dev/null") != 0)
        #expect(shell("'\(estargzBinary)' mount '\(reference)' '\(dir.file("mnt"))' --platform linux/s390x 2>/dev/null") != 0)
    }

    /// Whether `estargz mount` has finished writing its --stats file (created first, then written).
    static func statsWritten(_ path: String) -> Bool {
        (try? readFile(path))?.last == UInt8(ascii: "\n")
    }

    static func number(_ key: String, in json: String) -> Int64? {
        guard let range = json.range(of: "\"\(key)\":") else { return nil }
        return Int64(json[range.upperBound...].prefix { $0.isNumber })
    }
}
