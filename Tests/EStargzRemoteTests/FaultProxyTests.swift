import EStargzCore
@testable import EStargzRemote
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `Fixtures/fault_proxy.py` in front of a real `docker-registry`: the image is pushed to the
/// registry directly and read back through the proxy while it drops, stalls, fails, truncates
/// or corrupts responses.
final class FaultProxy: @unchecked Sendable {
    let registry: TestRegistry
    let image: RegistryClientTests.BuiltImage
    let port: Int
    let state: String
    private let process = Process()

    /// The repository as seen through the proxy.
    var reference: ImageReference { ImageReference(registry: "127.0.0.1:\(port)", repository: "faults/app", tag: "v1") }
    var layerDigest: String { digestString(image.layer) }

    /// The registry's credentials for `.basic` (keyed by the registry's and the proxy's host).
    func authenticate(_ options: inout RegistryClient.Options) {
        guard auth == .basic else { return }
        let credential = RegistryCredential(username: TestRegistry.user, password: TestRegistry.password)
        options.credentials.explicit[registry.host] = credential
        options.credentials.explicit["127.0.0.1:\(port)"] = credential
    }
    let auth: TestRegistry.Auth

    /// `files` (path → bytes, chunk size `chunkSize`) replace the default image's two files.
    init(auth: TestRegistry.Auth = .none, files: [String: [UInt8]]? = nil, chunkSize: Int? = nil) async throws {
        let registry = try TestRegistry(auth: auth)
        self.registry = registry
        self.auth = auth
        state = registry.directory.path + "/proxy"
        port = freePort()
        do {
            let built = try RegistryClientTests.buildImage(in: registry.directory.path, files: files, chunkSize: chunkSize)
            let direct = registry.reference("faults/app", tag: "v1")
            let credential = auth == .basic ? RegistryCredential(username: TestRegistry.user, password: TestRegistry.password) : nil
            try await RegistryClientTests.withClient({ $0.credentials.explicit[registry.host] = credential }) {
                try await RegistryClientTests.push(built, with: $0, to: direct)
            }
            image = built
        } catch {
            registry.stop()
            throw error
        }
        do {
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/fault_proxy.py").path
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", script, String(port), registry.host, state]
            process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            try process.run()
            try waitUntilListening(port, process: process)
        } catch {
            stop()
            throw error
        }
    }

    /// Faults the next `count` requests with `mode` (-1: all of them).
    func set(_ mode: String, _ count: Int = -1) throws {
        try "\(mode) \(count)\n".write(toFile: state + "/mode", atomically: true, encoding: .utf8)
        usleep(20_000) // distinct mtime even on coarse clocks (the inode changes anyway)
    }

    /// One entry per request the proxy saw: (method, path, range, action, arrival time in seconds).
    var log: [(method: String, path: String, range: String, action: String, time: Double)] {
        let text = (try? String(contentsOfFile: state + "/log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map { line in
            let parts = line.split(separator: " ").map(String.init)
            return (parts[0], parts[1], parts[2], parts[3], Double(parts[4]) ?? 0)
        }
    }

    func actions(_ action: String) -> Int { log.filter { $0.action == action }.count }

    func clearLog() { try? FileManager.default.removeItem(atPath: state + "/log") }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            var waited = 0
            while process.isRunning, waited < 200 { usleep(10_000); waited += 1 }
        }
        registry.stop()
    }

    deinit { stop() }

    /// Reads `path` of the layer through the proxy (a fresh RangeReader with a small tail, so
    /// file reads are separate Range requests) with a client configured by `configure`.
    func readThroughProxy(_ path: String, beforeRead: () throws -> Void = {},
                          _ configure: @escaping (inout RegistryClient.Options) -> Void) async throws -> [UInt8] {
        let tocDigest = image.result.tocDigest
        let size = Int64(image.layer.count)
        return try await RegistryClientTests.withClient({ options in
            options.initialBackoff = .milliseconds(10)
            options.maxRetries = 3
            authenticate(&options)
            configure(&options)
        }) { client in
            var options = RangeReader.Options()
            options.tailSize = 8 << 10
            options.wholeBlobLimit = 0
            let source = try await RangeReader.open(client: client, repository: reference, digest: layerDigest, size: size, options: options)
            let layer = try LayerReader(source: source, tocDigest: tocDigest)
            try beforeRead()
            return try await offPool { try layer.read(path: path) }
        }
    }
}

@Suite(.serialized, .timeLimit(.minutes(3))) struct FaultProxyTests {
    static let blob = TestImages.noise(300_000, seed: 3)

    static func registryError(_ error: any Error) -> RegistryError? { error as? RegistryError }

    @Test func droppedConnectionsAreRetried() async throws {
        let proxy = try await FaultProxy()
        defer { proxy.stop() }
        try proxy.set("drop", 2)
        let bytes = try await proxy.readThroughProxy("bin/blob") { _ in }
        #expect(bytes == Self.blob)
        #expect(proxy.actions("drop") == 2)
        #expect(proxy.actions("pass") >= 2) // the tail and the file's range

        // Persistent: a typed transport error after maxRetries + 1 attempts, not a hang.
        try proxy.set("drop")
        proxy.clearLog()
        let start = ContinuousClock.now
        await #expect {
            _ = try await RegistryClientTests.withClient({ $0.maxRetries = 2; $0.initialBackoff = .milliseconds(10) }) { client in
                try await client.fetchBlob(proxy.reference, digest: proxy.layerDigest)
            }
        } throws: { error in
            if case .transport = Self.registryError(error) { return true }
            return false
        }
        #expect(proxy.actions("drop") == 3)
        #expect(ContinuousClock.now - start < .seconds(30))  // not a hang (room for a loaded machine)
    }

    @Test func stalledServerTimesOut() async throws {
        let proxy = try await FaultProxy()
        defer { proxy.stop() }
        // One stalled request: the request timeout fires and the retry succeeds.
        try proxy.set("stall", 1)
        let bytes = try await proxy.readThroughProxy("etc/hello.txt") { $0.requestTimeout = .seconds(1) }
        #expect(bytes == Array("hello, registry\n".utf8))
        #expect(proxy.actions("stall") == 1)

        // Stalled for good: a typed timeout within (attempts × timeout + backoff), not a hang.
        try proxy.set("stall")
        proxy.clearLog()
        let start = ContinuousClock.now
        await #expect {
            _ = try await RegistryClientTests.withClient({ $0.maxRetries = 1; $0.initialBackoff = .milliseconds(10); $0.requestTimeout = .seconds(1) }) { client in
                try await client.fetchRange(proxy.reference, digest: proxy.layerDigest, range: 0 ..< 100)
            }
        } throws: { error in
            if case .timedOut = Self.registryError(error) { return true }
            return false
        }
        let elapsed = ContinuousClock.now - start
        // Two 1 s attempts take ~2 s; the bound says "not a hang" with room for a loaded 2-core
        // machine running the whole suite (7.6 s was seen there).
        #expect(elapsed < .seconds(20))
        #expect(proxy.actions("stall") == 2)
    }

    @Test(arguments: ["500", "429"]) func errorStatusThenPass(_ status: String) async throws {
        let proxy = try await FaultProxy()
        defer { proxy.stop() }
        try proxy.set(status, 2)
        let bytes = try await proxy.readThroughProxy("bin/blob") { _ in }
        #expect(bytes == Self.blob)
        #expect(proxy.actions(status) == 2)

        // Persistent: the status itself, typed, after maxRetries + 1 attempts.
        try proxy.set(status)
        proxy.clearLog()
        await #expect {
            _ = try await RegistryClientTests.withClient({ $0.maxRetries = 2; $0.initialBackoff = .milliseconds(10) }) { client in
                try await client.fetchRange(proxy.reference, digest: proxy.layerDigest, range: 0 ..< 100)
            }
        } throws: { error in
            if case let .unexpectedStatus(_, code, _) = Self.registryError(error) { return code == Int(status) }
            return false
        }
        #expect(proxy.actions(status) == 3)
    }

    @Test func truncatedBodyIsNeverAccepted() async throws {
        let proxy = try await FaultProxy()
        defer { proxy.stop() }
        // Once: the short body is retried (or the read fails); it never yields short or wrong bytes.
        try proxy.set("truncate", 1)
        do {
            let bytes = try await proxy.readThroughProxy("bin/blob") { _ in }
            #expect(bytes == Self.blob)
        } catch {
            Issue.record("a once-truncated body was not retried: \(error)")
        }
        #expect(proxy.actions("truncate") == 1)

        // Always: whole-blob and range fetches fail with a typed error.
        try proxy.set("truncate")
        await #expect {
            _ = try await RegistryClientTests.withClient({ $0.maxRetries = 1; $0.initialBackoff = .milliseconds(10) }) { client in
                try await client.fetchBlob(proxy.reference, digest: proxy.layerDigest)
            }
        } throws: { Self.registryError($0) != nil }
        await #expect {
            _ = try await RegistryClientTests.withClient({ $0.maxRetries = 1; $0.initialBackoff = .milliseconds(10) }) { client in
                try await client.fetchRange(proxy.reference, digest: proxy.layerDigest, range: 0 ..< 50_000)
            }
        } throws: { Self.registryError($0) != nil }
    }

    @Test func flippedByteIsNeverReturned() async throws {
        let proxy = try await FaultProxy()
        defer { proxy.stop() }
        // Every range response starting at offset 0 (bin/blob's data; not the footer and TOC) has one byte inverted.
        try proxy.set("flip")
        await #expect {
            _ = try await proxy.readThroughProxy("bin/blob") { _ in }
        } throws: { error in
            switch error as? EStargzError {
            case .chunkDigestMismatch, .corruptChunk: true
            default: false
            }
        }
        #expect(proxy.actions("flip") >= 1, "\(proxy.log)")

        // With the proxy honest again, a fresh reader gets the right bytes.
        try proxy.set("pass")
        #expect(try await proxy.readThroughProxy("bin/blob") { _ in } == Self.blob)
    }
}
