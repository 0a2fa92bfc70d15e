import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf
import Testing
import LazyFS
@testable import Snapshotter

private func temporaryRoot() -> String {
    let path = NSTemporaryDirectory() + "estargz-snapshotter-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite struct OverlaySnapshotterTests {
    @Test func prepareCommitAndStackFollowContainerdsRules() async throws {
        let root = temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let snapshotter = try OverlaySnapshotter(root: root)

        let first = try await snapshotter.prepare(key: "extract-1", parent: "", labels: ["a": "1"])
        #expect(first.count == 1 && first[0].type == "bind" && first[0].options == ["rw", "rbind"])
        try "hello".write(toFile: first[0].source + "/file", atomically: true, encoding: .utf8)
        try await snapshotter.commit(name: "layer-1", key: "extract-1", labels: ["b": "2"])
        await #expect(throws: SnapshotterError.notFound("extract-1")) { try await snapshotter.stat(key: "extract-1") }
        let committed = try await snapshotter.stat(key: "layer-1")
        #expect(committed.kind == .committed && committed.labels == ["a": "1", "b": "2"])
        #expect(try await snapshotter.usage(key: "layer-1").inodes == 2)

        let second = try await snapshotter.prepare(key: "extract-2", parent: "layer-1", labels: [:])
        #expect(second[0].type == "overlay")
        #expect(second[0].options.contains("lowerdir=" + first[0].source))
        try await snapshotter.commit(name: "layer-2", key: "extract-2", labels: [:])

        let container = try await snapshotter.prepare(key: "container", parent: "layer-2", labels: [:])
        let lower = container[0].options.first { $0.hasPrefix("lowerdir=") }
        #expect(lower?.split(separator: ":").count == 2)  // layer-2's fs above layer-1's
        let view = try await snapshotter.view(key: "view", parent: "layer-1", labels: [:])
        #expect(view == [SnapshotMount(type: "bind", source: first[0].source, options: ["ro", "rbind"])])
        await #expect(throws: SnapshotterError.self) { try await snapshotter.mounts(key: "layer-1") }
        #expect(try await snapshotter.mounts(key: "container") == container)
    }

    @Test func errorsAreTheOnesContainerdExpects() async throws {
        let root = temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let snapshotter = try OverlaySnapshotter(root: root)
        _ = try await snapshotter.prepare(key: "k", parent: "", labels: [:])
        await #expect(throws: SnapshotterError.alreadyExists("k")) { try await snapshotter.prepare(key: "k", parent: "", labels: [:]) }
        await #expect(throws: SnapshotterError.notFound("parent nope")) { try await snapshotter.prepare(key: "x", parent: "nope", labels: [:]) }
        await #expect(throws: SnapshotterError.self) { try await snapshotter.prepare(key: "y", parent: "k", labels: [:]) }  // parent not committed
        try await snapshotter.commit(name: "c", key: "k", labels: [:])
        _ = try await snapshotter.prepare(key: "child", parent: "c", labels: [:])
        await #expect(throws: SnapshotterError.self) { try await snapshotter.remove(key: "c") }  // has a child
        _ = try await snapshotter.prepare(key: "k2", parent: "", labels: [:])
        await #expect(throws: SnapshotterError.alreadyExists("c")) { try await snapshotter.commit(name: "c", key: "k2", labels: [:]) }
        try await snapshotter.remove(key: "child")
        try await snapshotter.remove(key: "c")
        #expect(await snapshotter.list().map(\.key) == ["k2"])
    }

    @Test func labelsUpdateByFieldMask() async throws {
        let root = temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let snapshotter = try OverlaySnapshotter(root: root)
        _ = try await snapshotter.prepare(key: "k", parent: "", labels: ["keep": "1", "drop": "2"])
        var record = try await snapshotter.update(key: "k", labels: ["new": "3"], paths: ["labels.new", "labels.drop"])
        #expect(record.labels == ["keep": "1", "new": "3"])
        record = try await snapshotter.update(key: "k", labels: ["only": "4"], paths: [])
        #expect(record.labels == ["only": "4"])
        await #expect(throws: SnapshotterError.self) { try await snapshotter.update(key: "k", labels: [:], paths: ["parent"]) }
    }

    @Test func stateSurvivesARestartAndCleanupRemovesOrphans() async throws {
        let root = temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            let snapshotter = try OverlaySnapshotter(root: root)
            _ = try await snapshotter.prepare(key: "a", parent: "", labels: ["x": "y"])
            try await snapshotter.commit(name: "layer", key: "a", labels: [:])
            _ = try await snapshotter.prepare(key: "b", parent: "layer", labels: [:])
        }
        try FileManager.default.createDirectory(atPath: root + "/snapshots/999/fs", withIntermediateDirectories: true)
        let again = try OverlaySnapshotter(root: root)
        #expect(await again.list().map(\.key) == ["b", "layer"])
        #expect(try await again.stat(key: "layer").labels == ["x": "y"])
        try await again.cleanup()
        #expect(!FileManager.default.fileExists(atPath: root + "/snapshots/999"))
        #expect(try await again.mounts(key: "b")[0].type == "overlay")
    }
}

extension OverlaySnapshotterTests {
    /// A crash between saving a commit and containerd hearing of it (containerd then rolls its own
    /// metadata back): after the restart the active key still answers; containerd's garbage
    /// collection removing the committed name (unknown to it) gives the data back to the active
    /// key, and committing again works. Had containerd seen the commit, building on the committed
    /// snapshot settles it and the active key is gone.
    @Test func aCommitContainerdNeverSawIsNotLost() async throws {
        let root = temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            let before = try OverlaySnapshotter(root: root)
            let mounts = try await before.prepare(key: "ns/1/a", parent: "", labels: [:])
            try "data".write(toFile: mounts[0].source + "/file", atomically: true, encoding: .utf8)
            try await before.commit(name: "ns/2/c", key: "ns/1/a", labels: [:])
            await #expect(throws: SnapshotterError.notFound("ns/1/a")) { try await before.stat(key: "ns/1/a") }
        }  // the crash: the reply never reached containerd
        let after = try OverlaySnapshotter(root: root)
        #expect(try await after.stat(key: "ns/1/a").kind == .active)
        let mounts = try await after.mounts(key: "ns/1/a")
        #expect(try String(contentsOfFile: mounts[0].source + "/file", encoding: .utf8) == "data")
        try await after.remove(key: "ns/2/c")  // containerd's GC: an orphan to it
        #expect(await after.list().map(\.key) == ["ns/1/a"])
        #expect(try String(contentsOfFile: mounts[0].source + "/file", encoding: .utf8) == "data")
        try await after.commit(name: "ns/3/c", key: "ns/1/a", labels: [:])
        #expect(await after.list().map(\.key) == ["ns/3/c"])

        // The other way: containerd saw the commit and builds on it.
        _ = try await after.prepare(key: "ns/4/b", parent: "ns/3/c", labels: [:])
        try await after.commit(name: "ns/5/d", key: "ns/4/b", labels: [:])
        let again = try OverlaySnapshotter(root: root)
        _ = try await again.prepare(key: "ns/6/e", parent: "ns/5/d", labels: [:])
        await #expect(throws: SnapshotterError.notFound("ns/4/b")) { try await again.stat(key: "ns/4/b") }
        #expect(await again.list().map(\.key) == ["ns/3/c", "ns/5/d", "ns/6/e"])
    }
}

@Suite struct SnapshotServiceTests {
    @Test func servesTheSnapshotsAPIOnAUnixSocket() async throws {
        let root = temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let socket = root + "/s.sock"
        let server = Task { try await SnapshotterServer.serve(root: root + "/state", socketPath: socket) }
        defer { server.cancel() }
        for _ in 0 ..< 100 where !FileManager.default.fileExists(atPath: socket) { try await Task.sleep(for: .milliseconds(50)) }

        try await withGRPCClient(
            transport: .http2NIOPosix(target: .unixDomainSocket(path: socket), transportSecurity: .plaintext)
        ) { client in
            let snapshots = Containerd_Services_Snapshots_V1_Snapshots.Client(wrapping: client)
            let prepared = try await snapshots.prepare(.with { $0.key = "k"; $0.labels = ["l": "v"] })
            #expect(prepared.mounts.first?.type == "bind")
            _ = try await snapshots.commit(.with { $0.name = "n"; $0.key = "k" })
            let info = try await snapshots.stat(.with { $0.key = "n" }).info
            #expect(info.kind == .committed && info.labels == ["l": "v"])
            do {
                _ = try await snapshots.stat(.with { $0.key = "missing" })
                Issue.record("stat of a missing snapshot succeeded")
            } catch let error as RPCError {
                #expect(error.code == .notFound)
            }
            let names = try await snapshots.list(.with { _ in }) { response in
                var names: [String] = []
                for try await message in response.messages { names += message.info.map(\.name) }
                return names
            }
            #expect(names == ["n"])
        }
    }
}

@Suite struct SnapshotterConfigTests {
    @Test func readsEverySetting() throws {
        let config = try SnapshotterConfig(parsing: """
            # registry settings
            [registry]
            mirrors = ["mirror.internal:5000", "127.0.0.1:5001"]   # in order
            plain_http_hosts = ["registry.lan:5000"]
            [registry.credentials]
            "registry.lan:5000" = "user:pa#ss:word"
            [fetch]
            prefetch = false
            background = true
            block_kib = 256
            tail_kib = 128
            read_ahead_directory_kib = 0
            [cache]
            directory = "/var/cache/x"
            capacity_mib = 64
            memory_mib = 16
            """)
        #expect(config.mirrors == ["mirror.internal:5000", "127.0.0.1:5001"])
        #expect(config.plainHTTPHosts == ["registry.lan:5000"])
        #expect(config.credentials == ["registry.lan:5000": "user:pa#ss:word"])
        #expect(!config.prefetch && config.backgroundFetch && config.fetchBlockKiB == 256 && config.tailKiB == 128)
        #expect(try SnapshotterConfig(parsing: "").fetchBlockKiB == 4)
        // Read-ahead: on by default; directories off here; all off with read_ahead = false.
        #expect(try SnapshotterConfig(parsing: "").readAheadPolicy == LazyFileSystem.ReadAhead())
        #expect(config.readAhead && !config.readAheadPolicy.directories && config.readAheadPolicy.programDependencies)
        #expect(try SnapshotterConfig(parsing: "[fetch]\nread_ahead = false").readAheadPolicy == .off)
        #expect(throws: SnapshotterError.self) { try SnapshotterConfig(parsing: "[fetch]\nread_ahead = 3") }
        #expect(throws: SnapshotterError.self) { try SnapshotterConfig(parsing: "[fetch]\nblock_kib = 1") }
        #expect(config.cacheDirectory == "/var/cache/x" && config.cacheCapacityMiB == 64 && config.memoryCacheMiB == 16)
        #expect(try SnapshotterConfig(parsing: "").memoryCacheMiB == 128)
        #expect(throws: SnapshotterError.self) { try SnapshotterConfig(parsing: "[cache]\nmemory_mib = 0") }
        let options = config.registryOptions
        #expect(options.mirrors == config.mirrors && options.plainHTTPHosts == ["registry.lan:5000"])
        #expect(options.credentials.credential(for: "registry.lan:5000")?.password == "pa#ss:word")
    }

    @Test func fetchTimeoutAndFuseManagerSettings() throws {
        let config = try SnapshotterConfig(parsing: """
            [fetch]
            timeout_seconds = 7
            [fuse_manager]
            enable = true
            address = "/run/x/fm.sock"
            """)
        #expect(config.fetchTimeoutSeconds == 7 && config.fuseManager && config.fuseManagerAddress == "/run/x/fm.sock")
        let options = config.registryOptions
        #expect(options.operationTimeout == .seconds(7))
        #expect(options.readTimeout == .seconds(7) && options.connectTimeout == .seconds(7))
        let defaults = try SnapshotterConfig(parsing: "")
        #expect(defaults.fetchTimeoutSeconds == 30 && !defaults.fuseManager && defaults.registryOptions.operationTimeout == .seconds(30))
        #expect(throws: SnapshotterError.self) { try SnapshotterConfig(parsing: "[fetch]\ntimeout_seconds = 0") }
    }

    @Test func typosAreErrorsThatNameTheLine() {
        for (text, line) in [("[registry]\nmirror = []", 2), ("[fetch]\nprefetch = \"yes\"", 2), ("[nope]", 1), ("x", 1)] {
            #expect(throws: SnapshotterError.self) { try SnapshotterConfig(parsing: text) }
            do { _ = try SnapshotterConfig(parsing: text) } catch {
                #expect("\(error)".contains("line \(line)"), "\(error)")
            }
        }
    }
}
