import EStargzCore
@testable import EStargzRemote
import Foundation
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

    static func buildImage(in dir: String) throws -> BuiltImage {
        let gz = try TestImages.gzipLayer(["etc/hello.txt": Array("hello, registry\n".utf8),
                                           "bin/blob": TestImages.noise(300_000, seed: 3)], in: dir, name: "built")
        let result = try LayerWriter.convert(inputPath: gz, outputPath: dir + "/built.esgz")
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
