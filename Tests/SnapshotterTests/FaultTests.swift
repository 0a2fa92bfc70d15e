import EStargzCore
import EStargzRemote
import Foundation
@testable import Snapshotter
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Faults a production node meets: the registry going away, the cache disk filling up, many readers
/// at once, and the snapshotter being killed. Real registry, real FUSE mounts, real containerd.
@Suite(.serialized, .enabled(if: geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0 && TestRegistry.available,
                             "needs root, /dev/fuse and docker-registry"))
struct FaultTests {
    /// The snapshotter's `[fetch] timeout_seconds` bounds a read that needs the registry: with the
    /// registry killed (connections refused) or frozen (connections accepted, nothing answered), a
    /// read of a chunk not fetched yet fails with EIO within the timeout, chunks already fetched keep
    /// reading, and once the registry is back the same mount serves the failed file.
    @Test(.timeLimit(.minutes(2))) func registryOutageFailsUncachedReadsInTimeAndRecovers() async throws {
        let image = try DataImage(files: 12)
        defer { image.environment.tearDown() }
        let config = try SnapshotterConfig(parsing: "[fetch]\nprefetch = false\ntimeout_seconds = 5\n")
        #expect(config.fetchTimeoutSeconds == 5)
        let remote = try RemoteLayers(registry: config.registryOptions, prefetch: false)
        let mountpoint = image.environment.directory + "/lazy"
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        let outcome = Result { () throws -> Void in
            try remote.mount(labels: image.labels, at: mountpoint)
            let registry = try #require(image.environment.registry)
            let cached = "data/f000"
            #expect(directRead(mountpoint + "/" + cached).bytes == image.expected(cached))

            for (fault, file) in [("killed", "data/f003"), ("frozen", "data/f007")] {
                if fault == "killed" { registry.kill() } else { registry.freeze() }
                let failed = directRead(mountpoint + "/" + file)
                print("registry \(fault): uncached read failed after \(String(format: "%.2f", failed.seconds)) s: \(failed.error)")
                #expect(failed.status != 0, "\(fault): the read must fail")
                #expect(failed.error.contains("Input/output error"), "\(fault): \(failed.error)")
                #expect(failed.seconds < 5 + 3, "\(fault): EIO within the 5 s timeout (and some slack), not a hang")
                // What was fetched before the outage still reads, from memory, without the registry.
                let again = directRead(mountpoint + "/" + cached)
                #expect(again.bytes == image.expected(cached), "\(fault): cached chunks keep reading")
                #expect(again.seconds < 1)
                if fault == "killed" { try registry.restart() } else { registry.thaw() }
                // Back: the same mount, no remount, serves the file that failed.
                let recovered = directRead(mountpoint + "/" + file)
                #expect(recovered.status == 0 && recovered.bytes == image.expected(file), "\(fault): \(recovered.error)")
            }
        }
        await remote.shutdown()
        try outcome.get()
    }
}

extension FaultTests {
    /// `[cache] directory` on a 512 KiB tmpfs, far smaller than the layer: a container still reads
    /// every file correctly (chunks from the registry and memory), the snapshotter logs the full
    /// disk once (not once per chunk), and the cache holds only whole, correct chunk files.
    @Test(.timeLimit(.minutes(2))) func fullCacheDiskStillServesEveryFile() throws {
        let image = try DataImage(files: 12)
        let environment = image.environment
        defer { environment.tearDown() }
        let cache = environment.directory + "/small-cache"
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        try TestSupport.run("/bin/mount", ["-t", "tmpfs", "-o", "size=512k", "tmpfs", cache])
        defer { _ = try? TestSupport.run("/bin/umount", ["-l", cache]) }
        let config = environment.directory + "/snapshotter.toml"
        try "[cache]\ndirectory = \"\(cache)\"\n".write(toFile: config, atomically: true, encoding: .utf8)
        try environment.startSnapshotter(config: config)
        try environment.startContainerd()
        try environment.pull(image.reference)

        let output = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", image.reference, environment.containerID("full1"),
                                          "/bin/sh", "-c", "cd /data && /bin/busybox sha256sum *"])
        #expect(output == image.sha256sumListing(), "every file read correctly with the cache disk full")

        let log = String(decoding: try readFile(environment.directory + "/snapshotter.log"), as: UTF8.self)
        let lines = log.split(separator: "\n").filter { $0.contains("cannot keep chunks") }
        #expect(lines.count == 1, "one line for the full disk, not one per chunk: \(lines)")
        #expect(lines.first?.contains("No space left on device") == true, "\(lines)")
        let names = try FileManager.default.contentsOfDirectory(atPath: cache)
        #expect(!names.isEmpty, "the cache still keeps what fits")
        for name in names {
            #expect(!name.contains(".tmp."), "no partial chunk file left: \(name)")
            let bytes = try readFile(cache + "/" + name)
            #expect(SHA256Digest.of(bytes).description == "sha256:" + name, "\(name) holds exactly its chunk")
        }
    }

    /// Eight containers of one lazily pulled image started at once, each hashing every data file:
    /// every hash is right, each chunk is fetched and verified once (shared in-flight reads and
    /// the shared chunk cache), and the snapshotter's peak RSS is reported and bounded.
    @Test(.timeLimit(.minutes(3))) func eightContainersAtOnceReadOneLazyImage() throws {
        let image = try DataImage(files: 24)
        let environment = image.environment
        defer { environment.tearDown() }
        try environment.startSnapshotter()
        try environment.startContainerd()
        try environment.pull(image.reference)
        let expected = image.sha256sumListing()
        let directory = environment.directory
        let runs = (0 ..< 8).map { index -> Process in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/ctr")
            process.arguments = ["--address", directory + "/containerd.sock", "--namespace", "estargz-test", "run", "--rm",
                                 "--snapshotter", "estargz", image.reference, environment.containerID("load\(index)"),
                                 "/bin/sh", "-c", "cd /data && /bin/busybox sha256sum *"]
            process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            let log = directory + "/load\(index).out"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            process.standardOutput = FileHandle(forWritingAtPath: log)
            process.standardError = FileHandle(forWritingAtPath: log + ".err")
            return process
        }
        let started = Date()
        for (index, process) in runs.enumerated() {
            _ = FileManager.default.createFile(atPath: directory + "/load\(index).out.err", contents: nil)
            process.standardError = FileHandle(forWritingAtPath: directory + "/load\(index).out.err")
            try process.run()
        }
        for process in runs { process.waitUntilExit() }
        print("8 containers at once: \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        for (index, process) in runs.enumerated() {
            let output = String(decoding: try readFile(directory + "/load\(index).out"), as: UTF8.self)
            let errors = String(decoding: try readFile(directory + "/load\(index).out.err"), as: UTF8.self)
            #expect(process.terminationStatus == 0, "container \(index): \(errors)")
            #expect(output == expected, "container \(index) read every file correctly")
        }
        let stats = try lazyLayerStats(environment)
        let chunks = image.chunkCount
        print("8 containers: chunks verified \(stats["chunksVerified"] ?? -1) of \(chunks), bytes fetched \(stats["bytesFetched"] ?? -1), "
              + "read errors \(stats["readErrors"] ?? -1)")
        #expect((stats["chunksVerified"] ?? .max) <= Int64(chunks), "each chunk fetched and verified once")
        #expect(stats["readErrors"] == 0)
        let pid = try #require(environment.snapshotter?.processIdentifier)
        let peak = try #require(statusKiB(pid, "VmHWM"))
        print("8 containers: snapshotter peak RSS \(peak / 1024) MiB")
        #expect(peak < 400 << 10, "snapshotter RSS bounded")
    }

    /// SIGKILL of the snapshotter at random moments while `ctr snapshots` prepares, commits and
    /// removes in a loop: after a restart (and containerd's garbage collection, which ends in our
    /// Cleanup) containerd and the snapshotter agree on every snapshot, no directory is orphaned,
    /// and every snapshot containerd lists can be used and removed.
    @Test(.timeLimit(.minutes(3))) func killsDuringSnapshotChangesLoseNothing() throws {
        let iterations = Int(ProcessInfo.processInfo.environment["ESTARGZ_CRASH_ITERATIONS"] ?? "") ?? 12
        let environment = try ContainerdEnvironment(containerdConfig: """
            [plugins."io.containerd.gc.v1.scheduler"]
              deletion_threshold = 1
              schedule_delay = "0s"
            """)
        defer { environment.tearDown() }
        try environment.startSnapshotter()
        try environment.startContainerd()
        let snapshots = ["snapshots", "--snapshotter", "estargz"]
        try environment.ctrRetrying(snapshots + ["prepare", "base-active", ""])
        try environment.ctrRetrying(snapshots + ["commit", "base", "base-active"])
        let script = environment.directory + "/loop.sh"
        let ctr = "/usr/bin/ctr --address \(environment.directory)/containerd.sock --namespace estargz-test snapshots --snapshotter estargz"
        try """
            i=0
            while [ ! -e \(environment.directory)/loop.stop ]; do
              i=$((i+1))
              \(ctr) prepare a$i base >/dev/null 2>&1
              \(ctr) commit c$i a$i >/dev/null 2>&1
              \(ctr) prepare b$i c$i >/dev/null 2>&1
              \(ctr) rm b$i >/dev/null 2>&1
              [ $((i % 3)) = 0 ] && \(ctr) rm c$i >/dev/null 2>&1
              echo $i > \(environment.directory)/loop.progress
            done
            """.write(toFile: script, atomically: true, encoding: .utf8)
        let loop = Process()
        loop.executableURL = URL(fileURLWithPath: "/bin/sh")
        loop.arguments = [script]
        try loop.run()
        var kills = 0
        var generator = SystemRandomNumberGenerator()
        while loop.isRunning && kills < iterations {
            usleep(UInt32.random(in: 100_000 ... 600_000, using: &generator))
            environment.killSnapshotter()
            kills += 1
            try environment.startSnapshotter()
        }
        usleep(300_000)
        _ = FileManager.default.createFile(atPath: environment.directory + "/loop.stop", contents: nil)
        loop.waitUntilExit()
        let rounds = (try? String(contentsOfFile: environment.directory + "/loop.progress", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "0"
        print("metadata crash loop: \(kills) SIGKILLs during \(rounds) prepare/commit/prepare/rm rounds")
        #expect(kills == iterations)

        // A removal, after the last restart, runs containerd's GC: orphans out, then Cleanup. Twice:
        // a commit containerd did see, whose name it then removed, comes back as the active key
        // (we cannot tell that from a commit it never saw), which the second round collects.
        var theirs: Set<String> = [], ours: (names: Set<String>, orphans: [String], badParents: [String]) = ([], [], [])
        for round in 1 ... 2 {
            try environment.ctrRetrying(snapshots + ["prepare", "gc-trigger-\(round)", ""])
            try environment.ctrRetrying(snapshots + ["rm", "gc-trigger-\(round)"])
            usleep(1_000_000)
        }
        for _ in 0 ..< 40 {
            theirs = Set(try environment.ctrRetrying(snapshots + ["ls"]).split(separator: "\n").dropFirst()
                .compactMap { $0.split(whereSeparator: \.isWhitespace).first.map(String.init) })
            ours = try backendState(environment.directory + "/snapshotter")
            if theirs == ours.names && ours.orphans.isEmpty { break }
            usleep(250_000)
        }
        #expect(theirs == ours.names, "containerd \(theirs.sorted()) vs snapshotter \(ours.names.sorted())")
        #expect(ours.orphans.isEmpty, "directories no snapshot owns: \(ours.orphans)")
        #expect(ours.badParents.isEmpty, "snapshots whose parent is missing: \(ours.badParents)")
        #expect(theirs.contains("base"))

        // Usable: a child of every committed snapshot can be prepared, then everything removed.
        let listing = try environment.ctrRetrying(snapshots + ["ls"])
        let committed = listing.split(separator: "\n").dropFirst().filter { $0.contains("Committed") }
            .compactMap { $0.split(whereSeparator: \.isWhitespace).first.map(String.init) }
        for name in committed {
            try environment.ctr(snapshots + ["prepare", "use-" + name, name])
            try environment.ctr(snapshots + ["rm", "use-" + name])
        }
        var remaining = theirs
        while !remaining.isEmpty {
            let parents = Set(try environment.ctr(snapshots + ["ls"]).split(separator: "\n").dropFirst()
                .compactMap { line -> String? in
                    let fields = line.split(whereSeparator: \.isWhitespace)
                    return fields.count >= 3 ? String(fields[1]) : nil
                })
            let leaves = remaining.filter { !parents.contains($0) }
            #expect(!leaves.isEmpty)
            if leaves.isEmpty { break }
            for leaf in leaves {
                do { try environment.ctr(snapshots + ["rm", leaf]) } catch {
                    Issue.record("\(error); listing:\n\(try environment.ctr(snapshots + ["ls"]))")
                }
            }
            remaining.subtract(leaves)
        }
        // containerd removes from its own metadata at once and from ours in its garbage collection.
        var end = try backendState(environment.directory + "/snapshotter")
        for _ in 0 ..< 40 where !(end.names.isEmpty && end.orphans.isEmpty) {
            usleep(250_000)
            end = try backendState(environment.directory + "/snapshotter")
        }
        #expect(end.names.isEmpty && end.orphans.isEmpty, "\(end)")
    }

    /// The snapshotter's own view, read from its root: containerd names of its records (the part of
    /// `NAMESPACE/ID/NAME` after the ID), directories under snapshots/ that no record owns, and
    /// records whose parent is not a committed record.
    private func backendState(_ root: String) throws -> (names: Set<String>, orphans: [String], badParents: [String]) {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/metadata.json"))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let records = try #require(object["snapshots"] as? [String: [String: Any]])
        let ids = Set(records.values.compactMap { ($0["id"] as? Int).map(String.init) })
        let names = Set(records.keys.map { key in key.split(separator: "/", maxSplits: 2).last.map(String.init) ?? key })
        let directories = (try? FileManager.default.contentsOfDirectory(atPath: root + "/snapshots")) ?? []
        let badParents = records.compactMap { key, record -> String? in
            guard let parent = record["parent"] as? String, !parent.isEmpty else { return nil }
            return (records[parent]?["kind"] as? String) == "committed" ? nil : key
        }
        return (names, directories.filter { !ids.contains($0) }.sorted(), badParents)
    }

    /// The stats file of the (one) lazily mounted layer under the snapshotter's root.
    private func lazyLayerStats(_ environment: ContainerdEnvironment) throws -> [String: Int64] {
        let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
        let target = try #require(mounts.split(separator: "\n").map { $0.split(separator: " ") }
            .first { $0[1].hasPrefix(environment.directory + "/snapshotter/snapshots/") && $0[2].hasPrefix("fuse") }?[1])
        let data = try Data(contentsOf: URL(fileURLWithPath: String(target) + "/.stargz-snapshotter/stats"))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return object.compactMapValues { ($0 as? NSNumber)?.int64Value }
    }
}

extension FaultTests {
    /// With `[fuse_manager] enable = true` the lazy layers are served by `estargz fuse-manager`, a
    /// process of its own: a container hashing every file of the image in a loop (O_DIRECT, so
    /// each read reaches the FUSE mount) while the snapshotter is SIGKILLed and started again twice
    /// sees no error and no wrong byte; the restarted snapshotter finds the manager and its mounts
    /// and keeps serving containerd.
    @Test(.timeLimit(.minutes(3))) func containerKeepsReadingWhileTheSnapshotterIsKilled() throws {
        let image = try DataImage(files: 16)
        defer { image.environment.tearDown() }
        let bb = "/bin/busybox"
        let round = """
            cd /data && for f in *; do
              \(bb) dd if=$f iflag=direct bs=1M status=none 2>>/host/errors | \(bb) sha256sum | \(bb) sed "s/-$/$f/"
            done > /host/round 2>>/host/errors
            """
        try restartScenario(image, expected: image.sha256sumListing(), round: round, compare: "\(bb) cmp -s", copy: "\(bb) cp")
    }

    /// With `[fuse_manager] enable = true`, when the manager itself dies (SIGKILL) the snapshotter
    /// starts a new one within seconds and mounts the lazy layers again in it, stale mounts
    /// detached, so new containers of the image start again without a restart of anything.
    /// (Containers running on the dead mounts cannot be saved: a FUSE connection dies with the
    /// process that served it.)
    @Test(.timeLimit(.minutes(2))) func aKilledFuseManagerIsReplacedAndItsLayersMountedAgain() throws {
        let image = try DataImage(files: 4)
        let environment = image.environment
        defer { environment.tearDown() }
        let first = try pullWithFuseManager(image)
        #expect(try environment.ctr(["run", "--rm", "--snapshotter", "estargz", image.reference, "before", "/bin/cat", "/etc/message"])
            == "hello from the layer\n")
        let layers = try environment.lazyMounts()
        #expect(layers.count == 1)

        kill(first, SIGKILL)
        var second: Int32?
        var served = false
        for _ in 0 ..< 200 where !served {
            usleep(100_000)
            if let pid = environment.fuseManagerPID, pid != first { second = pid }
            served = second != nil && layers.allSatisfy { FileManager.default.contents(atPath: $0 + "/etc/message") != nil }
        }
        #expect(second != nil, "a new fuse manager")
        #expect(served, "the layers are served again")
        let now = try environment.lazyMounts()
        #expect(now == layers, "\(now)")
        #expect(try environment.ctr(["run", "--rm", "--snapshotter", "estargz", image.reference, "after", "/bin/cat", "/etc/message"])
            == "hello from the layer\n")
    }

    /// The same with the python image (scripts/python-rootfs.sh's rootfs, cached under
    /// ~/.cache/swift-estargz): every regular file of it read and hashed by the image's
    /// own python3 in a loop (page cache dropped per file). About 40 s: run with ESTARGZ_PYTHON_RESTART=1.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["ESTARGZ_PYTHON_RESTART"] == "1", "ESTARGZ_PYTHON_RESTART=1 runs it"),
          .timeLimit(.minutes(10)))
    func pythonContainerKeepsReadingWhileTheSnapshotterIsKilled() throws {
        let tar = FileManager.default.homeDirectoryForCurrentUser.path + "/.cache/swift-estargz/python-rootfs.tar"
        let image = try DataImage(files: 0, rootfsTar: tar, tag: "python")
        defer { image.environment.tearDown() }
        let script = image.environment.packageRoot + "/Tests/SnapshotterTests/Fixtures/read_tree.py"
        let expected = try TestSupport.run("/usr/bin/python3", [script, image.extracted])
        let round = "/usr/bin/python3 /host/read_tree.py / > /host/round 2>>/host/errors"
        try restartScenario(image, expected: expected, round: round, compare: "cmp -s", copy: "cp", extraFiles: [script])
    }

    /// Starts the snapshotter with `[fuse_manager] enable = true` (its config in DIR/snapshotter.toml)
    /// and containerd, and pulls the image; returns the fuse manager's pid.
    private func pullWithFuseManager(_ image: DataImage) throws -> Int32 {
        let environment = image.environment
        let config = environment.directory + "/snapshotter.toml"
        try "[fuse_manager]\nenable = true\n".write(toFile: config, atomically: true, encoding: .utf8)
        try environment.startSnapshotter(config: config)
        let manager = try #require(environment.fuseManagerPID, "the snapshotter started a fuse manager")
        try environment.startContainerd()
        try environment.pull(image.reference)
        return manager
    }

    /// With `[fuse_manager] enable = true`: a container runs `round` (which writes /host/round)
    /// again and again, each result compared with `expected`, while the snapshotter is SIGKILLed
    /// and started again twice.
    private func restartScenario(_ image: DataImage, expected: String, round: String, compare: String, copy: String,
                                 extraFiles: [String] = []) throws {
        let environment = image.environment
        let manager = try pullWithFuseManager(image)

        let host = environment.directory + "/host"
        try FileManager.default.createDirectory(atPath: host, withIntermediateDirectories: true)
        for file in extraFiles { try FileManager.default.copyItem(atPath: file, toPath: host + "/" + (file as NSString).lastPathComponent) }
        try expected.write(toFile: host + "/expected", atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: host + "/rounds", contents: nil)
        _ = FileManager.default.createFile(atPath: host + "/errors", contents: nil)
        let script = """
            i=0
            while [ ! -e /host/stop ]; do
              i=$((i+1))
              \(round)
              if \(compare) /host/round /host/expected; then echo ok >> /host/rounds
              else echo "bad $i" >> /host/rounds; \(copy) /host/round /host/bad.$i; fi
            done
            """
        let reader = Process()
        reader.executableURL = URL(fileURLWithPath: "/usr/bin/ctr")
        reader.arguments = ["--address", environment.directory + "/containerd.sock", "--namespace", "estargz-test", "run", "--rm",
                            "--snapshotter", "estargz", "--mount", "type=bind,src=\(host),dst=/host,options=rbind:rw",
                            image.reference, environment.containerID("reader"), "/bin/sh", "-c", script]
        _ = FileManager.default.createFile(atPath: host + "/ctr.log", contents: nil)
        reader.standardOutput = FileHandle(forWritingAtPath: host + "/ctr.log")
        reader.standardError = FileHandle(forWritingAtPath: host + "/ctr.log")
        try reader.run()
        defer { if reader.isRunning { kill(reader.processIdentifier, SIGKILL) } }
        func rounds() -> [Substring] {
            ((try? String(contentsOfFile: host + "/rounds", encoding: .utf8)) ?? "").split(separator: "\n")
        }
        func waitForRounds(_ count: Int) -> Bool {
            for _ in 0 ..< 6000 where reader.isRunning {
                if rounds().count >= count { return true }
                usleep(50_000)
            }
            return rounds().count >= count
        }
        let ctrLog = { (try? String(contentsOfFile: host + "/ctr.log", encoding: .utf8)) ?? "" }
        try #require(waitForRounds(2), "the container reads: \(rounds()), ctr: \(ctrLog())")
        var duringRestarts = 0
        for restart in 1 ... 2 {
            let before = rounds().count
            environment.killSnapshotter()
            // The snapshotter is down: the container keeps reading from the manager's mounts.
            let downSince = Date()
            #expect(waitForRounds(before + 1), "restart \(restart): reads go on with the snapshotter dead")
            while Date().timeIntervalSince(downSince) < 1.5 { usleep(50_000) }
            let whileDown = rounds().count - before
            try environment.startSnapshotter(config: environment.directory + "/snapshotter.toml")
            duringRestarts += whileDown
            print("restart \(restart): \(whileDown) rounds read in the \(String(format: "%.1f", Date().timeIntervalSince(downSince))) s the snapshotter was down")
            #expect(environment.fuseManagerPID == manager, "the same fuse manager serves on")
            #expect(waitForRounds(rounds().count + 1))
        }
        // The restarted snapshotter serves containerd on the layers it re-learned from the manager.
        let message = try environment.ctrRetrying(["run", "--rm", "--snapshotter", "estargz", image.reference, environment.containerID("after"), "/bin/sh", "-c", "true"])
        #expect(message.isEmpty)

        _ = FileManager.default.createFile(atPath: host + "/stop", contents: nil)
        for _ in 0 ..< 6000 where reader.isRunning { usleep(50_000) }
        let all = rounds()
        let errors = (try? String(contentsOfFile: host + "/errors", encoding: .utf8)) ?? "?"
        let files = expected.split(separator: "\n").count
        print("restarts survived: 2; rounds \(all.count) of \(files) files (\(all.count * files) file reads, "
              + "\(duringRestarts) rounds while the snapshotter was down); bad rounds \(all.filter { $0 != "ok" }.count); "
              + "read errors: \(errors.isEmpty ? "none" : errors)")
        if let pid = environment.fuseManagerPID, let peak = statusKiB(pid, "VmHWM") {
            let stats = (try? lazyLayerStats(environment)) ?? [:]
            print("fuse manager peak RSS \(peak / 1024) MiB; layer bytes fetched \(stats["bytesFetched"] ?? -1), "
                  + "chunks verified \(stats["chunksVerified"] ?? -1), reads served \(stats["reads"] ?? -1), EIO \(stats["readErrors"] ?? -1)")
            #expect(stats["readErrors"] == 0)
        }
        #expect(reader.terminationStatus == 0, "\(ctrLog())")
        #expect(all.count >= 4 && all.allSatisfy { $0 == "ok" }, "every round read every byte right: \(all)")
        if let bad = all.first(where: { $0 != "ok" }), let number = bad.split(separator: " ").last,
           let got = try? String(contentsOfFile: host + "/bad.\(number)", encoding: .utf8) {
            let seen = Set(got.split(separator: "\n")), wanted = Set(expected.split(separator: "\n"))
            Issue.record("round \(number): unexpected \(seen.subtracting(wanted).sorted().prefix(10)), missing \(wanted.subtracting(seen).sorted().prefix(10))")
        }
        #expect(errors.isEmpty, "no read error: \(errors)")
        let log = String(decoding: try readFile(environment.directory + "/snapshotter.log"), as: UTF8.self)
        #expect(log.contains("still mounted by the fuse manager"), "the restarted snapshotter kept the mounts")
    }
}

extension FaultTests {
    /// Benchmarks/soak.py for a few seconds: 64 threads reading random ranges of random files
    /// through one lazy mount with O_DIRECT. Every byte equals the source, no read fails, each
    /// chunk is fetched once (the registry sends at most the blob, however many readers want a
    /// chunk at once) and the mount's RSS stays bounded. The 60 s soak is the script's default.
    @Test(.timeLimit(.minutes(2))) func sixtyFourReadersThroughOneMount() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/estargz"
        let estargz = FileManager.default.isExecutableFile(atPath: beside) ? beside : root + "/.build/debug/estargz"
        let output = root + "/.build/soak-\(getpid()).json"
        defer { unlink(output) }
        let status = shell("python3 '\(root)/Benchmarks/soak.py' --estargz '\(estargz)' --threads 64 --duration 6 --files 40 --json '\(output)' >/dev/null")
        let data = try Data(contentsOf: URL(fileURLWithPath: output))
        let result = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        func number(_ key: String) -> Int64 { (result[key] as? NSNumber)?.int64Value ?? -1 }
        print("soak (6 s, 64 threads): \(number("reads")) reads, \(number("bytes")) bytes, \(number("mismatches")) wrong, "
              + "\(number("errors")) errors; registry \(number("registryBytesFetched")) of \(number("blobBytes")) blob bytes in "
              + "\(number("registryRequests")) requests; chunks verified \(number("chunksVerified")) of \(number("chunks")); "
              + "peak RSS \(number("peakRSSKiB") / 1024) MiB")
        #expect(status == 0, "\(result["firstError"] ?? "")")
        #expect(number("reads") > 1000)
        #expect(number("mismatches") == 0 && number("errors") == 0 && number("readErrors") == 0)
        #expect(number("registryBytesFetched") <= number("blobBytes"), "no block fetched twice")
        #expect(number("chunksVerified") <= number("chunks"), "no chunk verified twice")
        #expect(number("peakRSSKiB") > 0 && number("peakRSSKiB") < 300 << 10, "RSS bounded")
    }
}

extension ContainerdEnvironment {
    /// `name` made unique to this environment: runc keeps container state by namespace and ID in
    /// one place for every containerd on the machine, and tests elsewhere use the same namespace.
    func containerID(_ name: String) -> String {
        name + "-" + (directory as NSString).lastPathComponent.split(separator: "-").last.map(String.init)!
    }
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
func statusKiB(_ pid: Int32, _ field: String) -> Int64? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        return line.split(whereSeparator: \.isWhitespace).dropFirst().first.flatMap { Int64($0) }
    }
    return nil
}

/// An eStargz image with data files in a real registry (64 KiB chunks), the labels that mount its
/// layer lazily, and the files' expected bytes (the pushed blob extracted with tar).
struct DataImage {
    let environment: ContainerdEnvironment
    let reference: String
    let digest: String
    let toc: SHA256Digest
    let extracted: String
    let files: Int

    init(files: Int, rootfsTar: String? = nil, tag: String = "data") throws {
        environment = try ContainerdEnvironment(dataFiles: files, rootfsTar: rootfsTar)
        self.files = files
        do {
            let port = try environment.startRegistry()
            let layout = try environment.imageLayout()
            reference = "127.0.0.1:\(port)/bbdata:\(tag)"
            try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + layout, reference, "--chunk-size", "65536"])
            let (path, digest) = try environment.largestBlob()
            self.digest = digest
            toc = try LayerReader(source: try FileSource(path: path)).tocDigest
            extracted = environment.directory + "/expected"
            try FileManager.default.createDirectory(atPath: extracted, withIntermediateDirectories: true)
            // As the mount shows the layer: without the TOC and the landmark files.
            try TestSupport.run("/bin/tar", ["-xzf", path, "-C", extracted, "--exclude=stargz.index.json",
                                             "--exclude=.no.prefetch.landmark", "--exclude=.prefetch.landmark"])
        } catch {
            environment.tearDown()
            throw error
        }
    }

    var labels: [String: String] {
        [RemoteLabel.imageReference: reference, RemoteLabel.layerDigest: digest, RemoteLabel.tocDigest: toc.description]
    }

    func expected(_ path: String) -> [UInt8]? { try? readFile(extracted + "/" + path) }

    /// `sha256sum *` in data/, as busybox prints it.
    func sha256sumListing() -> String {
        (0 ..< files).map { index in
            let name = String(format: "f%03d", index)
            return SHA256Digest.of(expected("data/" + name) ?? []).description.dropFirst(7) + "  " + name + "\n"
        }.joined()
    }

    /// The chunks of the layer's regular files (64 KiB each).
    var chunkCount: Int {
        var count = 0
        let enumerator = FileManager.default.enumerator(atPath: extracted)
        while let path = enumerator?.nextObject() as? String {
            var info = stat()
            guard lstat(extracted + "/" + path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
            count += (Int(info.st_size) + 65535) / 65536
        }
        return count
    }
}

/// Reads a whole file with O_DIRECT (every byte asked of the file system, none from the page
/// cache) in a `dd` child that is SIGKILLed after 60 s, so a hang fails the test instead of holding it.
func directRead(_ path: String) -> (status: Int32, bytes: [UInt8]?, error: String, seconds: Double) {
    let out = "/tmp/estargz-direct-\(UUID().uuidString.prefix(8))"
    defer { unlink(out); unlink(out + ".err") }
    let started = Date()
    let status = shell("timeout -s KILL 60 dd if='\(path)' of='\(out)' iflag=direct bs=1M status=none 2>'\(out).err'")
    let seconds = Date().timeIntervalSince(started)
    let error = (try? readFile(out + ".err")).map { String(decoding: $0, as: UTF8.self) } ?? ""
    return (status, status == 0 ? try? readFile(out) : nil, error, seconds)
}
