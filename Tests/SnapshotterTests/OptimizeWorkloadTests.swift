import EStargzCore
import EStargzRemote
import Foundation
import TestSupport
import Testing

/// `estargz image optimize` runs the image's own workload (Entrypoint + Cmd, Env, WorkingDir, User
/// from its config) and each of ctr-remote's overrides takes effect: the workload prints what it saw.
@Suite(.serialized) struct OptimizeWorkloadTests {
    /// What every test workload prints, one `key=value` per line.
    static let report = #"echo "args=$0 $*"; echo "user=$(busybox id -u):$(busybox id -g)"; echo "cwd=$(pwd)"; "#
        + #"echo "greeting=$GREETING"; echo "extra=$EXTRA"; echo "fromfile=$FROMFILE"; echo "netns=$(busybox readlink /proc/self/ns/net)"; echo "netdevs=$(busybox ls /sys/class/net | busybox tr '\n' ' ')"; echo "loflags=$(cat /sys/class/net/lo/flags)"; "#
        + #"cat /etc/message; if [ -e /mnt/host/data ]; then echo "mounted=$(cat /mnt/host/data)"; "#
        + #"echo overwrite > /mnt/host/data 2>/dev/null && echo writable || echo read-only; fi"#

    let directory = TemporaryDirectory(prefix: "estargz-optimize-workload")
    let estargz: String = {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/estargz"
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        return FileManager.default.isExecutableFile(atPath: beside) ? beside : root + "/.build/debug/estargz"
    }()

    /// An OCI layout of the busybox test image whose config runs ``report`` as the user daemon in /etc.
    func layout() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let config: [String: Any] = ["Entrypoint": ["/bin/sh", "-c"], "Cmd": [Self.report, "from-config"],
                                     "Env": ["PATH=/bin", "GREETING=hello from the config"], "WorkingDir": "/etc", "User": "daemon"]
        let json = String(decoding: try JSONSerialization.data(withJSONObject: config), as: UTF8.self)
        try run("/usr/bin/python3", [root + "/Tests/SnapshotterTests/Fixtures/make_busybox_image.py", directory.file("image.tar"),
                                     "bbworkload", "--config", json])
        let layout = directory.directory("layout")
        try run("/bin/tar", ["-xf", directory.file("image.tar"), "-C", layout])
        return layout
    }

    /// The key=value lines the workload printed.
    func lines(_ output: String) -> [String: String] {
        var values: [String: String] = [:]
        for line in output.split(separator: "\n") {
            if let equals = line.firstIndex(of: "=") { values[String(line[..<equals])] = String(line[line.index(after: equals)...]) }
        }
        return values
    }

    @Test func runsTheImagesOwnWorkloadWithItsConfig() throws {
        let output = try run(estargz, ["image", "optimize", "--quiet", "oci:" + (try layout()), "oci:" + directory.path + "/out:opt"])
        let seen = lines(output)
        #expect(seen["args"] == "from-config ", "\(output)")
        #expect(seen["user"] == "2:3", "User daemon from the config, looked up in the image's etc/passwd: \(output)")
        #expect(seen["cwd"] == "/etc", "\(output)")
        #expect(seen["greeting"] == "hello from the config", "\(output)")
        #expect(seen["extra"] == "", "the host's environment does not leak in: \(output)")
        #expect(output.contains("hello from the layer\n"), "\(output)")
        let hostNamespace = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        #expect(seen["netns"]?.hasPrefix("net:[") == true && seen["netns"] != hostNamespace, "a new network namespace: \(output)")
        #expect(seen["netdevs"] == "lo " && seen["loflags"] == "0x9", "only a loopback device, up: \(output)")
        // The workload's reads are recorded: what it read is prioritized in the converted layer.
        let layer = try LayerReader(source: try FileSource(path: try layerBlob(directory.path + "/out")))
        let end = try #require(layer.prefetchRegionEnd)
        for path in ["etc/message", "bin/busybox", "etc/passwd", "etc/group"] {
            let entry = try #require(layer.entry(at: path))
            #expect(layer.chunks(of: entry).allSatisfy { $0.blobEnd <= end }, "\(path) should be prefetched")
        }
        let random = try #require(layer.entry(at: "etc/random"))
        #expect(layer.chunks(of: random).allSatisfy { $0.blobOffset > end }, "etc/random was not read by the workload")
    }

    @Test func optionsOverrideTheImageConfig() throws {
        let host = directory.directory("host")
        try "from the host\n".write(toFile: host + "/data", atomically: true, encoding: .utf8)
        try "# an env file\nFROMFILE=yes\n\nGREETING=from the file\n".write(toFile: directory.file("env"), atomically: true, encoding: .utf8)
        let started = Date()
        let output = try run(estargz, ["image", "optimize", "--quiet", "oci:" + (try layout()), "oci:" + directory.path + "/out:opt",
                                       "--entrypoint", #"["/bin/sh", "-c"]"#, "--args", "[\(jsonString(Self.report + "; busybox sleep 60")), \"from-args\", \"x\"]",
                                       "--env-file", directory.file("env"), "--env", "GREETING=overridden", "--env", "EXTRA=added", "--cwd", "/bin/new-dir",
                                       "--user", "root:staff", "--mount", host + ":/mnt/host", "--net", "host", "--period", "3"])
        let seen = lines(output)
        #expect(seen["args"] == "from-args x", "\(output)")
        #expect(seen["user"] == "0:50", "root, group staff from the image's etc/group: \(output)")
        #expect(seen["cwd"] == "/bin/new-dir", "\(output)")
        #expect(seen["greeting"] == "overridden" && seen["extra"] == "added" && seen["fromfile"] == "yes", "--env after --env-file: \(output)")
        #expect(seen["mounted"] == "from the host" && output.contains("read-only\n"), "\(output)")
        #expect(try String(contentsOfFile: host + "/data", encoding: .utf8) == "from the host\n")
        let hostNamespace = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        #expect(seen["netns"] == hostNamespace, "--net host: \(output)")
        // --period 3 stopped `sleep 60` (and the whole workload with it).
        #expect(Date().timeIntervalSince(started) < 40)
    }

    @Test func commandAfterTheTerminatorReplacesEntrypointAndCmd() throws {
        let output = try run(estargz, ["image", "optimize", "--quiet", "oci:" + (try layout()), "oci:" + directory.path + "/out:opt",
                                       "--", "/bin/sh", "-c", Self.report, "from-command"])
        #expect(lines(output)["args"] == "from-command ", "\(output)")
        #expect(lines(output)["user"] == "2:3", "\(output)")
    }

    /// `--estargz-external-toc`: DST's layer holds no TOC; its TOC image (DST's tag + `-esgztoc`) does,
    /// for the layer it names, and with it the layer opens with the workload's files prioritized.
    @Test func externalTOCPutsTheTOCsInATOCImage() throws {
        let out = directory.path + "/out-ext"
        _ = try run(estargz, ["image", "optimize", "--quiet", "oci:" + (try layout()), "oci:" + out + ":opt", "--estargz-external-toc"])
        let image = try manifest(out, tag: "opt"), tocImage = try manifest(out, tag: "opt-esgztoc")
        let layer = try #require((image["layers"] as? [[String: Any]])?.first)
        let layerDigest = try #require(layer["digest"] as? String)
        let tocDigest = try #require((layer["annotations"] as? [String: String])?[StargzAnnotation.tocDigest].flatMap(SHA256Digest.init(parsing:)))
        let tocLayer = try #require((tocImage["layers"] as? [[String: Any]])?.first)
        #expect((tocLayer["annotations"] as? [String: String])?["containerd.io/snapshot/stargz/layer.digest"] == layerDigest)
        let blob = try FileSource(path: out + "/blobs/sha256/" + layerDigest.dropFirst(7))
        #expect(throws: EStargzError.externalTOCRequired) { try LayerReader(source: blob, tocDigest: tocDigest) }
        let toc = try readFile(out + "/blobs/sha256/" + (try #require(tocLayer["digest"] as? String)).dropFirst(7))
        let reader = try LayerReader(source: blob, tocDigest: tocDigest, externalTOC: toc)
        let end = try #require(reader.prefetchRegionEnd)
        let message = try #require(reader.entry(at: "etc/message"))
        #expect(reader.chunks(of: message).allSatisfy { $0.blobEnd <= end }, "etc/message was read by the workload")
        #expect(String(decoding: try reader.read(path: "etc/message"), as: UTF8.self) == "hello from the layer\n")
    }

    /// The manifest the layout's index names `tag`.
    func manifest(_ layout: String, tag: String) throws -> [String: Any] {
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: layout + "/index.json"))) as? [String: Any]
        let entry = try #require((index?["manifests"] as? [[String: Any]])?.first {
            ($0["annotations"] as? [String: String])?["org.opencontainers.image.ref.name"] == tag
        })
        let digest = try #require((entry["digest"] as? String)?.dropFirst(7))
        return try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: layout + "/blobs/sha256/" + digest))) as? [String: Any])
    }

    func jsonString(_ text: String) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: [text]), as: UTF8.self).dropFirst().dropLast().description
    }

    /// The one layer blob of the layout's image.
    func layerBlob(_ layout: String) throws -> String {
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: layout + "/index.json"))) as? [String: Any]
        let manifestDigest = try #require(((index?["manifests"] as? [[String: Any]])?.last?["digest"] as? String)?.dropFirst(7))
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: layout + "/blobs/sha256/" + manifestDigest))) as? [String: Any]
        let layerDigest = try #require(((manifest?["layers"] as? [[String: Any]])?.first?["digest"] as? String)?.dropFirst(7))
        return layout + "/blobs/sha256/" + layerDigest
    }
}
