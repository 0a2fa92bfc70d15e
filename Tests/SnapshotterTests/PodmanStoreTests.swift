import EStargzCore
import EStargzRemote
import Foundation
@testable import Snapshotter
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `estargz store` as Podman's additional layer store: Podman 4.3 (Debian's, as root, with a temporary
/// root, runroot and storage.conf) runs our eStargz image from a local registry; the layer is served
/// lazily from the store (its `diff` a LazyFS mount), so only a small part of it is fetched.
@Suite(.serialized, .enabled(if: geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0, "needs root and /dev/fuse"))
struct PodmanStoreTests {
    @Test func podmanRunsAnEStargzImageLazilyFromTheStore() throws {
        for tool in ["/usr/bin/podman", "/usr/sbin/runc", "/usr/bin/docker-registry", "/usr/bin/skopeo", "/bin/busybox"] {
            #expect(FileManager.default.fileExists(atPath: tool), "\(tool) is missing: scripts/setup.sh installs it")
        }
        let environment = try PodmanEnvironment()
        defer { environment.tearDown() }

        // Our converter makes the eStargz image; the same image stays in the registry as plain gzip too.
        let layout = try environment.imageLayout(paddingMiB: 8)
        let lazy = "\(environment.registry.host)/bbstore:esgz", plain = "\(environment.registry.host)/bbstore:gzip"
        try run(environment.estargz, ["image", "convert", "--quiet", "oci:" + layout, lazy])
        try run("/usr/bin/skopeo", ["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false", "oci:" + layout, "docker://" + plain])

        try environment.startStore()
        let output = try environment.podman(["run", "--rm", lazy, "/bin/cat", "/etc/message"])
        #expect(output == "hello from the layer\n")
        // The image's layer is the store's: its diff points into the store, which mounted it lazily.
        let diffs = try environment.layerDiffLinks()
        #expect(diffs.count == 1 && diffs.allSatisfy { $0.hasPrefix(environment.storeMountpoint + "/") }, "\(diffs)")
        let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
        #expect(mounts.contains(environment.directory.path + "/store/layers/sha256-"))
        // A second container from the same image reads through the same lazy layer.
        #expect(try environment.podman(["run", "--rm", lazy, "/bin/sh", "-c", "echo again; ls /padding.bin"]) == "again\n/padding.bin\n")

        // A plain gzip image is not the store's: Podman pulls it as usual, next to the lazy one.
        #expect(try environment.podman(["run", "--rm", plain, "/bin/cat", "/etc/message"]) == "hello from the layer\n")
        #expect(try environment.layerDiffLinks().count == 1)

        let stats = try environment.stopStore()
        let fetched = try #require(stats["registryBytesFetched"]), blob = try #require(stats["registryBlobBytes"])
        #expect(stats["layersMounted"] == 1, "\(stats)")
        #expect(blob > 8 << 20, "\(stats)")
        #expect(fetched > 0 && fetched * 4 < blob, "the run fetched a small part of the layer: \(stats)")
    }
}

extension PodmanStoreTests {
    /// The protocol as containers/storage's overlay driver speaks it, checked file by file on an
    /// in-process store: `info`, `blob` and `diff` of an eStargz layer, `use` and release notices
    /// (ENOENT, counted), and nothing for a gzip layer or a name that is not BASE64 of a reference.
    @Test func storeServesTheAdditionalLayerStoreProtocol() async throws {
        let environment = try PodmanEnvironment()
        defer { environment.tearDown() }
        let layout = try environment.imageLayout(paddingMiB: 1)
        let lazy = "\(environment.registry.host)/bbstore:esgz", plain = "\(environment.registry.host)/bbstore:gzip"
        try run(environment.estargz, ["image", "convert", "--quiet", "oci:" + layout, lazy])
        try run("/usr/bin/skopeo", ["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false", "oci:" + layout, "docker://" + plain])
        let client = RegistryClient()
        let image = try await client.resolveImage(try ImageReference(parsing: lazy))
        let gzip = try await client.resolveImage(try ImageReference(parsing: plain))
        try await client.shutdown()
        let layer = try #require(image.manifest.layers.first)
        let config = try JSONSerialization.jsonObject(with: Data(image.configBytes)) as? [String: Any]
        let diffID = try #require(((config?["rootfs"] as? [String: Any])?["diff_ids"] as? [String])?.first)

        let mountpoint = environment.directory.directory("als")
        let store = try AdditionalLayerStore(root: environment.directory.path + "/store",
                                             remote: try RemoteLayers(cacheDirectory: nil, prefetch: false))
        let mount = try store.mount(at: mountpoint)
        defer { mount.unmount() }
        let layerDirectory = mountpoint + "/" + Data(lazy.utf8).base64EncodedString() + "/" + layer.digest
        let gzipLayer = try #require(gzip.manifest.layers.first).digest
        let notServed = [mountpoint + "/" + Data(plain.utf8).base64EncodedString() + "/" + gzipLayer + "/diff",
                         mountpoint + "/" + Data(plain.utf8).base64EncodedString() + "/" + gzipLayer + "/info",
                         mountpoint + "/" + Data(plain.utf8).base64EncodedString() + "/" + gzipLayer + "/blob",
                         mountpoint + "/not-base64!/" + layer.digest + "/diff",
                         mountpoint + "/" + Data(lazy.utf8).base64EncodedString() + "/sha256:12/diff"]
        // The file-system calls block on this process's own FUSE loop: made off the cooperative pool,
        // what they saw checked here.
        let seen = try await offPool { () throws -> Observed in
            var seen = Observed()
            seen.info = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: layerDirectory + "/info"))) as? [String: Any] ?? [:]
            seen.blob = try readFile(layerDirectory + "/blob")
            seen.diffTarget = try FileManager.default.destinationOfSymbolicLink(atPath: layerDirectory + "/diff")
            seen.message = try String(contentsOfFile: layerDirectory + "/diff/etc/message", encoding: .utf8)
            var status = stat()
            seen.shMode = lstat(layerDirectory + "/diff/bin/sh", &status) == 0 ? status.st_mode : 0
            seen.useErrno = open(layerDirectory + "/use", O_CREAT | O_WRONLY, 0o644) == -1 ? errno : 0
            seen.usersAfterUse = store.users(reference: lazy, digest: layer.digest)
            seen.rmdirErrno = rmdir(layerDirectory) == -1 ? errno : 0
            seen.usersAfterRelease = store.users(reference: lazy, digest: layer.digest)
            seen.notServed = notServed.map { stat($0, &status) == -1 ? errno : 0 }
            return seen
        }
        // info: containers/storage's Layer record.
        #expect(seen.info["compressed-diff-digest"] as? String == layer.digest)
        #expect((seen.info["compressed-size"] as? NSNumber)?.int64Value == layer.size)
        #expect(seen.info["diff-digest"] as? String == diffID)
        #expect((seen.info["diff-size"] as? NSNumber)?.stringValue == layer.annotations?[StargzAnnotation.uncompressedSize])
        #expect((seen.info["compression"] as? NSNumber)?.intValue == 2)
        // blob: the compressed layer, byte for byte.
        #expect(Int64(seen.blob.count) == layer.size && SHA256Digest.of(seen.blob).description == layer.digest)
        // diff: a symlink to the layer's lazy mount, which is the layer's tree.
        #expect(seen.diffTarget == environment.directory.path + "/store/layers/" + layer.digest.replacingOccurrences(of: ":", with: "-"))
        #expect(seen.message == "hello from the layer\n")
        #expect(seen.shMode == S_IFLNK | 0o777)
        // use / release: answered ENOENT, counted.
        #expect(seen.useErrno == ENOENT && seen.usersAfterUse == 1)
        #expect(seen.rmdirErrno == ENOENT && seen.usersAfterRelease == 0)
        // Not served: a gzip layer, a name that is no reference, a name that is no digest.
        #expect(seen.notServed == Array(repeating: ENOENT, count: notServed.count), "\(notServed)")
        #expect(store.statisticsJSON.contains("\"layersMounted\":1"))
    }
}

/// What ``PodmanStoreTests/storeServesTheAdditionalLayerStoreProtocol()`` saw through the store.
private struct Observed: @unchecked Sendable {
    var info: [String: Any] = [:]
    var blob: [UInt8] = []
    var diffTarget = "", message = ""
    var shMode: mode_t = 0
    var useErrno: Int32 = 0, rmdirErrno: Int32 = 0
    var usersAfterUse = -1, usersAfterRelease = -1
    var notServed: [Int32] = []
}

/// Runs blocking file-system calls (served by this process's own FUSE loop) off the cooperative pool.
private func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// A registry, a store and Podman's storage in one temporary directory, torn down whatever happens.
private final class PodmanEnvironment {
    let directory = TemporaryDirectory(prefix: "estargz-podman")
    let registry: TestRegistry
    private var store: Process?
    var storeMountpoint: String { directory.path + "/als" }
    let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    var estargz: String {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/estargz"
        return FileManager.default.isExecutableFile(atPath: beside) ? beside : packageRoot + "/.build/debug/estargz"
    }

    init() throws {
        registry = try TestRegistry()
        // The overlay driver with our store; `:ref` puts BASE64(image reference) in each layer's path.
        try """
            [storage]
            driver = "overlay"
            graphroot = "\(directory.path)/graph"
            runroot = "\(directory.path)/run"
            [storage.options]
            additionallayerstores = ["\(storeMountpoint):ref"]

            """.write(toFile: directory.file("storage.conf"), atomically: true, encoding: .utf8)
    }

    func imageLayout(paddingMiB: Int) throws -> String {
        try run("/usr/bin/python3", [packageRoot + "/Tests/SnapshotterTests/Fixtures/make_busybox_image.py",
                                     directory.file("image.tar"), "bbstore", "--padding", String(paddingMiB)])
        let layout = directory.directory("layout")
        try run("/bin/tar", ["-xf", directory.file("image.tar"), "-C", layout])
        return layout
    }

    func startStore() throws {
        _ = directory.directory("als")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: estargz)
        process.arguments = ["store", "--root", directory.path + "/store", "--stats", directory.file("stats.json"), storeMountpoint]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: directory.file("store.log"), isDirectory: false)
            .creatingFile())
        try process.run()
        store = process
        for _ in 0 ..< 200 {
            if (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8))?.contains(" \(storeMountpoint) fuse") == true { return }
            guard process.isRunning else { break }
            usleep(50_000)
        }
        throw TestSupportError("the store did not mount: \((try? String(contentsOfFile: directory.file("store.log"), encoding: .utf8)) ?? "")")
    }

    /// Stops the store (SIGTERM) and returns its statistics.
    func stopStore() throws -> [String: Int64] {
        guard let store else { return [:] }
        terminate([store])
        self.store = nil
        let data = try Data(contentsOf: URL(fileURLWithPath: directory.file("stats.json")))
        return try JSONDecoder().decode([String: Int64].self, from: data)
    }

    /// Podman as root with this environment's storage (CONTAINERS_STORAGE_CONF); cgroupfs and runc, no network, and limits the
    /// machine allows (Podman's default nofile/nproc exceed a container's hard limits).
    @discardableResult
    func podman(_ arguments: [String]) throws -> String {
        // Root and runroot come from storage.conf: with --root, Podman 4.3 drops storage.conf's driver
        // options, additionallayerstores among them.
        let global = ["--tmpdir", directory.path + "/tmp", "--cgroup-manager", "cgroupfs", "--runtime", "runc", "--events-backend", "file"]
        var command = arguments
        if command.first == "run" {
            command.insert(contentsOf: ["--tls-verify=false", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"], at: 1)
        }
        return try run("/usr/bin/env", ["CONTAINERS_STORAGE_CONF=" + directory.file("storage.conf"), "/usr/bin/podman"] + global + command)
    }

    /// The targets of the image layers' `diff` symlinks in Podman's overlay storage (additional layers only).
    func layerDiffLinks() throws -> [String] {
        let overlay = directory.path + "/graph/overlay"
        return try FileManager.default.contentsOfDirectory(atPath: overlay).compactMap {
            try? FileManager.default.destinationOfSymbolicLink(atPath: overlay + "/" + $0 + "/diff")
        }
    }

    func tearDown() {
        if let store { terminate([store]) }
        // Whatever Podman (its storage's own bind mount, container mounts) or the store left mounted, innermost first.
        let mounts = ((try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? "").split(separator: "\n")
            .map { String($0.split(separator: " ")[1]) }.filter { $0.hasPrefix(directory.path) }
        for mountpoint in mounts.reversed() { umount2(mountpoint, Int32(MNT_DETACH)) }
        registry.stop()
        directory.remove()
    }
}

private extension URL {
    func creatingFile() throws -> URL {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        return self
    }
}
