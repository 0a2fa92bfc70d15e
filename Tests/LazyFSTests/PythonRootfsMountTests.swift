import EStargzCore
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The rootfs tar of issue 4's Python image, when present (`$ESTARGZ_PYTHON_ROOTFS_TAR` or
/// /work/bench/rootfs.tar); without it the test is skipped and says so.
let pythonRootfsTar: String? = {
    let candidates = [ProcessInfo.processInfo.environment["ESTARGZ_PYTHON_ROOTFS_TAR"], "/work/bench/rootfs.tar"]
    return candidates.compactMap { $0 }.first { access($0, R_OK) == 0 }
}()

@Suite(.serialized, .enabled(if: canMount && access(estargzBinary, X_OK) == 0 && TestRegistry.available,
                             "needs root, /dev/fuse, the built CLI and docker-registry"))
struct PythonRootfsMountTests {
    /// Issue 4: a Python rootfs pushed as a one-layer eStargz image and mounted from the registry;
    /// `python3 -c 'print("hi")'` runs in a chroot of the mount while fetching < 25 % of the layer.
    @Test(.enabled(if: pythonRootfsTar != nil, "no Python rootfs tar (set ESTARGZ_PYTHON_ROOTFS_TAR or create /work/bench/rootfs.tar)"),
          .timeLimit(.minutes(5)))
    func pythonRunsFromRegistryMount() throws {
        let tar = try #require(pythonRootfsTar)
        let dir = TemporaryDirectory()
        let registry = try TestRegistry()
        defer { registry.stop() }

        // The prepared OCI layout of the same tar when it is there, else one made here.
        var source = "oci:/work/bench/pyimg:latest"
        if tar != "/work/bench/rootfs.tar" || access("/work/bench/pyimg/index.json", R_OK) != 0 {
            #expect(shell("gzip -n -1 -c '\(tar)' > '\(dir.file("rootfs.tar.gz"))'") == 0)
            try writeOCILayout(dir.file("oci"), tag: "latest", gzipLayers: [dir.file("rootfs.tar.gz")])
            source = "oci:\(dir.file("oci")):latest"
        }
        let reference = "\(registry.host)/test/python:esgz"
        #expect(shell("'\(estargzBinary)' image convert '\(source)' '\(reference)' --plain-http >'\(dir.file("convert.log"))' 2>&1") == 0)

        let mountpoint = dir.directory("mnt")
        let started = Date()
        let mount = try CLIMount("'\(reference)' '\(mountpoint)' --plain-http --stats '\(dir.file("stats.json"))'",
                                 mountpoint: mountpoint, log: dir.file("stderr"))
        #expect(eventually(60) { mount.mounted })
        #expect(shell("chroot '\(mountpoint)' /usr/bin/python3 -c 'print(\"hi\")' > '\(dir.file("out"))' 2>'\(dir.file("err"))'") == 0)
        let elapsed = Date().timeIntervalSince(started)
        #expect(String(decoding: try readFile(dir.file("out")), as: UTF8.self) == "hi\n")

        #expect(mount.terminate())
        #expect(eventually(20) { !mount.mounted && access(dir.file("stats.json"), F_OK) == 0 })
        let stats = String(decoding: try readFile(dir.file("stats.json")), as: UTF8.self)
        let fetched = try #require(RegistryMountTests.number("registryBytesFetched", in: stats))
        let blobBytes = try #require(RegistryMountTests.number("registryBlobBytes", in: stats))
        print("python rootfs mount: python printed hi \(Int(elapsed * 1000)) ms after starting estargz mount; fetched \(fetched) of \(blobBytes) blob bytes; stats \(stats)")
        #expect(fetched * 4 < blobBytes)
    }
}
