import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Podman (Debian's 4.3, containers/storage and crun) pulls an image we converted to zstd:chunked
/// from a real docker-registry and runs it. Root only; every path (storage root, runroot, tmpdir,
/// registry) is a temporary directory removed afterwards.
@Suite(.serialized, .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/podman"),
                             "needs root and podman (scripts/setup.sh installs it)"))
struct PodmanTests {
    @Test func podmanPullsAndRunsOurZstdChunkedImage() throws {
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        for tool in ["/usr/bin/crun", "/usr/bin/skopeo", "/bin/busybox"] where !FileManager.default.isExecutableFile(atPath: tool) {
            Issue.record("\(tool) is missing: install crun, skopeo and busybox-static (scripts/setup.sh does)")
            return
        }
        let dir = TemporaryDirectory(prefix: "estargz-podman")
        defer { dir.remove() }
        let registry = try TestRegistry()
        defer { registry.stop() }

        // The busybox image, converted to zstd:chunked by our CLI straight from an OCI layout.
        let archive = dir.file("image.tar"), layout = dir.directory("layout")
        try run("/usr/bin/python3", [packageRoot + "/Tests/SnapshotterTests/Fixtures/make_busybox_image.py", archive, "bbtest"])
        try run("/bin/tar", ["-xf", archive, "-C", layout])
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/estargz"
        let estargz = FileManager.default.isExecutableFile(atPath: beside) ? beside : packageRoot + "/.build/debug/estargz"
        let image = "\(registry.host)/zstd/busybox:v1"
        try run(estargz, ["image", "convert", "--quiet", "oci:\(layout):latest", image, "--zstdchunked"])

        // What was pushed: one +zstd layer with the containers/storage annotations.
        let manifest = try JSONSerialization.jsonObject(with: Data(try run("/usr/bin/skopeo",
            ["inspect", "--raw", "--tls-verify=false", "docker://" + image]).utf8)) as! [String: Any]
        let layer = (manifest["layers"] as! [[String: Any]])[0]
        #expect(layer["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar+zstd")
        let annotations = layer["annotations"] as? [String: String] ?? [:]
        #expect(annotations["io.containers.zstd-chunked.manifest-checksum"]?.hasPrefix("sha256:") == true)
        #expect(annotations["io.containers.zstd-chunked.manifest-position"]?.hasSuffix(":1") == true)
        #expect(annotations["containerd.io/snapshot/stargz/toc.digest"] != nil)

        // Podman with its own storage. crun refuses cgroup hybrid mode with controllers on the
        // unified hierarchy (as on this kind of host), so podman runs in a private mount namespace
        // without it: crun then sees plain cgroup v1. The host's mounts are untouched.
        let podman = ["/usr/bin/podman", "--root", dir.directory("root"), "--runroot", dir.directory("runroot"),
                      "--tmpdir", dir.directory("tmp"), "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
                      "--events-backend", "file", "--runtime", "crun"]
        func podmanRun(_ arguments: [String]) throws -> String {
            let words = (podman + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
            let script = "if grep -qs ' /sys/fs/cgroup/unified ' /proc/self/mounts; then umount /sys/fs/cgroup/unified; fi; exec "
                + words.joined(separator: " ")
            return try run("/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/sh", "-c", script])
        }
        defer { _ = try? podmanRun(["rmi", "--all", "--force"]) }
        let pulled = try podmanRun(["pull", "--quiet", "--tls-verify=false", image])
        let imageID = pulled.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(imageID.count == 64)
        let output = try podmanRun(["run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
                                    "--ulimit", "nproc=1024:1024", image, "/bin/cat", "/etc/message"])
        #expect(output == "hello from the layer\n")
        // The layer podman stored decompresses to the diffID our converter put in the config.
        let inspect = try podmanRun(["image", "inspect", "--format", "{{range .RootFS.Layers}}{{.}}{{end}}", image])
        let config = try JSONSerialization.jsonObject(with: Data(try run("/usr/bin/skopeo",
            ["inspect", "--config", "--raw", "--tls-verify=false", "docker://" + image]).utf8)) as! [String: Any]
        let diffIDs = (config["rootfs"] as! [String: Any])["diff_ids"] as! [String]
        #expect(inspect.trimmingCharacters(in: .whitespacesAndNewlines) == diffIDs.joined())
    }
}
