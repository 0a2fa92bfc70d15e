import EStargzCore
@testable import EStargzRemote
import Foundation
import TestSupport
import Testing

/// Against real `docker-registry` processes: plain, htpasswd basic auth, and token auth.
@Suite(.serialized) struct RegistryClientTests {
    /// An eStargz layer built from a small tree, and the image around it.
    struct BuiltImage {
        var layer: [UInt8]
        var result: LayerWriter.Result
        var config: [UInt8]
        var manifest: [UInt8]
    }

    /// `files` default to etc/hello.txt and a 300,000-byte bin/blob; `chunkSize` to the writer's.
    static func buildImage(in dir: String, files: [String: [UInt8]]? = nil, chunkSize: Int? = nil) throws -> BuiltImage {
        let gz = try TestImages.gzipLayer(files ?? ["etc/hello.txt": Array("hello, registry\n".utf8),
                                                    "bin/blob": TestImages.noise(300_000, seed: 3)], in: dir, name: "built")
        var options = LayerWriter.Options()
        if let chunkSize { options.chunkSize = chunkSize }
        let result = try LayerWriter.convert(inputPath: gz, outputPath: dir + "/built.esgz", options: options)
        let layer = Array(FileManager.default.contents(atPath: dir + "/built.esgz")!)
        let config = try ImageConverter.rewriteConfig(Array(#"{"architecture":"amd64","os":"linux"}"#.utf8), diffIDs: [result.diffID.description])
        let manifest = ImageManifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: digestString(config), size: Int64(config.count)),
                                     layers: [Descriptor(mediaType: MediaType.ociLayerGzip, digest: digestString(layer), size: Int64(layer.count),
                                                         annotations: [StargzAnnotation.tocDigest: result.tocDigest.description])])
        return BuiltImage(layer: layer, result: result, config: config, manifest: try CanonicalJSON.encode(manifest))
    }

    static func push(_ image: BuiltImage, with client: RegistryClient, to reference: ImageReference) async throws {
        try await client.pushBlob(reference, digest: digestString(image.layer), bytes: image.layer)
        try await client.pushBlob(reference, digest: digestString(image.config), bytes: image.config)
        try await client.pushManifest(reference, bytes: image.manifest, mediaType: MediaType.ociManifest)
    }

    /// Runs `body` with a client that is shut down afterwards, whatever happens.
    static func withClient<T>(_ configure: (inout RegistryClient.Options) -> Void = { _ in },
                              _ body: (RegistryClient) async throws -> T) async throws -> T {
        var options = RegistryClient.Options()
        options.credentials = CredentialStore(loadDockerConfig: false)
        options.maxRetries = 1
        configure(&options)
        let client = RegistryClient(options: options)
        do {
            let result = try await body(client)
            try await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    @Test func pushReadBackMonolithicChunkedAndMount() async throws {
        let registry = try TestRegistry(auth: .none)
        defer { registry.stop() }
        let image = try Self.buildImage(in: registry.directory.path)
        // Chunked upload: the layer (≈300 KiB) goes up in 64 KiB PATCHes.
        let reference = registry.reference("test/app", tag: "v1")
        try await Self.withClient({ $0.uploadChunkSize = 64 << 10 }) { client in
        try await Self.push(image, with: client, to: reference)

        let resolved = try await client.resolveImage(reference)
        #expect(resolved.manifestBytes == image.manifest)
        #expect(resolved.configBytes == image.config)
        #expect(try await client.fetchBlob(reference, digest: digestString(image.layer)) == image.layer)
        #expect(try await client.blobSize(reference, digest: digestString(image.layer)) == Int64(image.layer.count))

        // Cross-repository mount: the blob appears in another repository without an upload.
        let other = registry.reference("test/other")
        try await client.pushBlob(other, digest: digestString(image.layer), bytes: [], mountFrom: "test/app")
        #expect(try await client.blobExists(other, digest: digestString(image.layer)))

        // Lazy read of one file through the registry, verified against the annotated TOC digest.
        let remote = try await RemoteImage.open(client: client, reference: reference, cache: MemoryChunkCache())
        let hello = try await offPool { try remote.lookup("/etc/hello.txt")!.layer.reader.read(path: "etc/hello.txt") }
        #expect(String(decoding: hello, as: UTF8.self) == "hello, registry\n")
        // A layer blob by digest (`REPO@sha256:…`) opens as that one layer.
        var blobReference = registry.reference("test/app")
        blobReference.tag = nil
        blobReference.digest = digestString(image.layer)
        let single = try await RemoteImage.open(client: client, reference: blobReference)
        #expect(single.layers.count == 1)
        #expect(single.lookup("bin/blob")?.entry.size == 300_000)
        }
    }

    static func isUnauthorized(_ error: any Error) -> Bool {
        if case .unauthorized = error as? RegistryError { return true }
        return false
    }

    @Test func basicAuth() async throws {
        let registry = try TestRegistry(auth: .basic)
        defer { registry.stop() }
        let image = try Self.buildImage(in: registry.directory.path)
        let reference = registry.reference("secure/app")

        try await Self.withClient({ $0.credentials.explicit[registry.host] = RegistryCredential(username: TestRegistry.user, password: TestRegistry.password) }) { good in
            try await Self.push(image, with: good, to: reference)
            #expect(try await good.resolveImage(reference).configBytes == image.config)
        }
        try await Self.withClient { anonymous in
            await #expect { try await anonymous.resolveImage(reference) } throws: { Self.isUnauthorized($0) }
        }
        try await Self.withClient({ $0.credentials.explicit[registry.host] = RegistryCredential(username: TestRegistry.user, password: "nope") }) { wrong in
            await #expect { try await wrong.resolveImage(reference) } throws: { Self.isUnauthorized($0) }
        }
    }

    @Test func bearerTokenAuth() async throws {
        let registry = try TestRegistry(auth: .token)
        defer { registry.stop() }
        let image = try Self.buildImage(in: registry.directory.path)
        let reference = registry.reference("tokens/app")

        // Credentials from a Docker config.json, as `docker login` writes them.
        let config = registry.directory.path + "/docker-config.json"
        let auth = Data("\(TestRegistry.user):\(TestRegistry.password)".utf8).base64EncodedString()
        try #"{"auths":{"\#(registry.host)":{"auth":"\#(auth)"}}}"#.write(toFile: config, atomically: true, encoding: .utf8)
        try await Self.withClient({ $0.credentials = CredentialStore(dockerConfigPath: config) }) { client in
        try await Self.push(image, with: client, to: reference)
        let resolved = try await client.resolveImage(reference)
        #expect(resolved.manifestBytes == image.manifest)
        #expect(registry.tokenRequests >= 1)
        #expect(try await client.fetchRange(reference, digest: digestString(image.layer), range: 10 ..< 20) == Array(image.layer[10 ..< 20]))
        }
        try await Self.withClient { anonymous in
            await #expect { try await anonymous.resolveImage(reference) } throws: { Self.isUnauthorized($0) }
        }
    }
}

/// Mirrors, retries and backoff against servers that fail.
@Suite(.serialized) struct ResilienceTests {
    @Test func deadMirrorFallsThroughAndRetries5xx() async throws {
        let registry = try TestRegistry(auth: .none)
        defer { registry.stop() }
        let image = try RegistryClientTests.buildImage(in: registry.directory.path)
        let reference = registry.reference("mirror/app")
        try await RegistryClientTests.withClient { client in try await RegistryClientTests.push(image, with: client, to: reference) }
        // A mirror nobody listens on: connection errors, retried with backoff, then the registry itself.
        let dead = "127.0.0.1:\(freePort())"
        try await RegistryClientTests.withClient({ $0.mirrors = [dead]; $0.initialBackoff = .milliseconds(10); $0.connectTimeout = .milliseconds(300) }) { client in
            let config = try await client.resolveImage(reference).configBytes
            #expect(config == image.config)
        }

        // A server that fails twice with 503 and then answers: retried, not failed.
        let dir = registry.directory.path
        let script = #"""
            import http.server, sys
            count = [0]
            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    count[0] += 1
                    if count[0] <= 2:
                        self.send_response(503); self.send_header("Content-Length", "0"); self.end_headers(); return
                    body = b"0123456789"
                    self.send_response(206)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *a): pass
            http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
            """#
        try script.write(toFile: dir + "/flaky.py", atomically: true, encoding: .utf8)
        let port = freePort()
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = ["python3", dir + "/flaky.py", String(port)]
        try server.run()
        defer {
            kill(server.processIdentifier, SIGKILL)
            while server.isRunning { usleep(10_000) }
        }
        try waitUntilListening(port, process: server)
        let flaky = ImageReference(registry: "127.0.0.1:\(port)", repository: "flaky/blob")
        try await RegistryClientTests.withClient({ $0.maxRetries = 3; $0.initialBackoff = .milliseconds(10) }) { client in
            let bytes = try await client.fetchRange(flaky, digest: "sha256:" + String(repeating: "0", count: 64), range: 0 ..< 10)
            #expect(bytes == Array("0123456789".utf8))
        }
    }
}
