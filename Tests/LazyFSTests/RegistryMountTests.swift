import EStargzCore
import EStargzRemote
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// An OCI layout at `layout` holding one image (`tag`) with the given plain tar.gz layer blobs.
func writeOCILayout(_ layout: String, tag: String, gzipLayers: [String]) throws {
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
                                 "config": ["Env": ["PATH=/bin"]], "rootfs": ["type": "layers", "diff_ids": diffIDs]]
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
    /// Three layers pushed as an eStargz image; `estargz mount REF` merges them lazily from the
    /// registry, serves until SIGTERM, and fetches only a little of the big layer.
    @Test(.timeLimit(.minutes(1))) func mountsRegistryImage() throws {
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
        #expect(shell("'\(estargzBinary)' image convert 'oci:\(dir.file("oci")):v1' '\(reference)' --chunk-size 262144 --plain-http >'\(dir.file("convert.log"))' 2>&1") == 0)

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
        #expect(eventually { !mount.mounted && access(dir.file("stats.json"), F_OK) == 0 })
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

    static func number(_ key: String, in json: String) -> Int64? {
        guard let range = json.range(of: "\"\(key)\":") else { return nil }
        return Int64(json[range.upperBound...].prefix { $0.isNumber })
    }
}
