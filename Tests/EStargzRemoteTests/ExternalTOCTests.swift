import EStargzCore
@testable import EStargzRemote
import Foundation
import TestSupport
import Testing

/// `image convert` with the newer eStargz options against a real docker-registry: the external
/// TOC image (named DST's tag + `-esgztoc`) found with no flag, keep-diff-id, min chunk size.
@Suite(.serialized) struct ExternalTOCTests {
    static func sourceImage(in dir: String) throws -> (layers: [String], files: [String: [UInt8]]) {
        var lowerFiles: [String: [UInt8]] = ["usr/lib/big.bin": TestImages.noise(1 << 20, seed: 3)]
        for i in 0 ..< 30 { lowerFiles["etc/conf-\(i)"] = Array(String(repeating: "setting \(i) = on\n", count: 20 + i).utf8) }
        let lower = try TestImages.gzipLayer(lowerFiles, in: dir, name: "lower")
        let upper = try TestImages.gzipLayer(["etc/motd": Array("upper\n".utf8)], in: dir, name: "upper")
        try TestImages.layout(dir + "/src", tag: "v1", layers: [lower, upper])
        return ([lower, upper], lowerFiles.merging(["etc/motd": Array("upper\n".utf8)]) { $1 })
    }

    @Test func externalTOCKeepDiffIDImageIsFoundAndVerifiedWithNoFlag() async throws {
        let registry = try TestRegistry(auth: .none)
        defer { registry.stop() }
        let dir = registry.directory.path
        let (sourceLayers, files) = try Self.sourceImage(in: dir)

        try await RegistryClientTests.withClient { client in
            var options = ImageConverter.Options()
            options.externalTOC = true
            options.layer.keepDiffID = true
            options.layer.minimumChunkSize = 16 << 10
            options.layer.chunkSize = 256 << 10
            let destination = registry.reference("esgz/app", tag: "v1")
            let result = try await ImageConverter.convert(source: .layout(directory: dir + "/src", tag: "v1"),
                                                          destination: .registry(destination), client: client, options: options)
            let tocImage = try #require(result.tocImage)
            #expect(tocImage.location.description == registry.reference("esgz/app", tag: "v1-esgztoc").description)

            // The image: diffIDs unchanged (the source's), each layer gunzips to the source's tar.
            let image = try await client.resolveImage(destination)
            let config = try JSONSerialization.jsonObject(with: Data(image.configBytes)) as! [String: Any]
            let diffIDs = (config["rootfs"] as! [String: Any])["diff_ids"] as! [String]
            for (index, layer) in image.manifest.layers.enumerated() {
                let sourceTar = try run("/bin/sh", ["-c", "gzip -dc '\(sourceLayers[index])' | sha256sum | cut -d' ' -f1"])
                #expect(diffIDs[index] == "sha256:" + sourceTar.trimmingCharacters(in: .whitespacesAndNewlines))
                let path = "\(dir)/pulled-\(index)"
                try await client.downloadBlob(destination, digest: layer.digest, to: path)
                _ = try run("/bin/sh", ["-c", "gunzip -c < '\(path)' > '\(path).tar'; gunzip -c < '\(sourceLayers[index])' > '\(path).src.tar'"])
                #expect(FileManager.default.contentsEqual(atPath: path + ".tar", andPath: path + ".src.tar"), "layer \(index) restores the source tar")
                #expect(layer.annotations?[StargzAnnotation.tocDigest] != nil)
            }

            // The TOC image: one layer per eStargz layer, annotated with that layer's digest.
            let tocManifest = try await client.resolveImage(registry.reference("esgz/app", tag: "v1-esgztoc")).manifest
            #expect(Set(tocManifest.layers.compactMap { $0.annotations?[ExternalTOC.layerDigestAnnotation] })
                == Set(image.manifest.layers.map(\.digest)))
            #expect(tocManifest.layers.map(\.digest) == tocManifest.layers.map(\.digest).sorted())

            // Read lazily by name only: the TOCs come from the TOC image and are checked.
            let remote = try await RemoteImage.open(client: client, reference: destination, cache: MemoryChunkCache())
            #expect(remote.layers.allSatisfy { $0.reader.footerFormat == .externalTOC })
            for (path, content) in files {
                let bytes = try await offPool { () -> [UInt8] in
                    let (layer, entry) = try #require(remote.lookup(path))
                    return try layer.reader.read(path: entry.path)
                }
                #expect(bytes == content, "\(path)")
            }

            // A TOC image whose TOCs do not match the layers' toc.digest annotations: typed error, no reads.
            let swapped = tocManifest.layers.enumerated().map { index, layer -> Descriptor in
                var layer = layer
                let other = tocManifest.layers[(index + 1) % tocManifest.layers.count]
                layer.annotations = [ExternalTOC.layerDigestAnnotation: other.annotations![ExternalTOC.layerDigestAnnotation]!]
                return layer
            }
            let lying = ImageManifest(config: tocManifest.config, layers: swapped)
            _ = try await client.pushManifest(registry.reference("esgz/app", tag: "v1-esgztoc"), bytes: try CanonicalJSON.encode(lying),
                                              mediaType: MediaType.ociManifest)
            await #expect {
                _ = try await RemoteImage.open(client: client, reference: destination)
            } throws: { error in
                if case .tocDigestMismatch = error as? EStargzError { return true }
                return false
            }

            // No TOC image at all (another tag of the same image): a registry not-found naming the TOC image.
            _ = try await client.pushManifest(registry.reference("esgz/app", tag: "v2"), bytes: try CanonicalJSON.encode(image.manifest),
                                              mediaType: MediaType.ociManifest)
            await #expect {
                _ = try await RemoteImage.open(client: client, reference: registry.reference("esgz/app", tag: "v2"))
            } throws: { error in
                if case let .notFound(url) = error as? RegistryError { return url.contains("v2-esgztoc") }
                return false
            }
        }
    }

    @Test func minimumChunkSizeImageReadsLazily() async throws {
        let registry = try TestRegistry(auth: .none)
        defer { registry.stop() }
        let dir = registry.directory.path
        let (_, files) = try Self.sourceImage(in: dir)
        try await RegistryClientTests.withClient { client in
            var options = ImageConverter.Options()
            options.layer.minimumChunkSize = 50000
            options.layer.chunkSize = 256 << 10
            let destination = registry.reference("esgz/min", tag: "v1")
            let result = try await ImageConverter.convert(source: .layout(directory: dir + "/src", tag: "v1"),
                                                          destination: .registry(destination), client: client, options: options)
            #expect(result.tocImage == nil)
            let remote = try await RemoteImage.open(client: client, reference: destination, cache: MemoryChunkCache())
            let opened = remote.statistics.bytesFetched
            let conf = try await offPool { () -> [UInt8] in
                let (layer, entry) = try #require(remote.lookup("etc/conf-7"))
                return try layer.reader.read(path: entry.path)
            }
            #expect(conf == files["etc/conf-7"])
            // One shared member (about 50 kB) and not the 1 MiB file next to it.
            #expect(remote.statistics.bytesFetched - opened < 512 << 10)
            for (path, content) in files {
                let bytes = try await offPool { () -> [UInt8] in
                    let (layer, entry) = try #require(remote.lookup(path))
                    return try layer.reader.read(path: entry.path)
                }
                #expect(bytes == content, "\(path)")
            }
        }
    }
}
