import EStargzCore
@testable import EStargzRemote
import Foundation
import TestSupport
import Testing

@Suite(.serialized) struct PrefetchTests {
    /// The prioritized region arrives in one request and seeds the chunk cache; the background
    /// fetch brings the rest, after which reads cost no requests.
    @Test func prioritizedAndBackgroundPrefetch() async throws {
        let registry = try TestRegistry(auth: .none)
        defer { registry.stop() }
        let dir = registry.directory.path
        let big = TestImages.noise(1 << 20, seed: 21)
        let gz = try TestImages.gzipLayer(["app/start.sh": Array("#!/bin/sh\necho hi\n".utf8), "data/big.bin": big], in: dir, name: "prefetch")
        var options = LayerWriter.Options()
        options.prioritizedFiles = ["app/start.sh"]
        options.chunkSize = 128 << 10
        _ = try LayerWriter.convert(inputPath: gz, outputPath: dir + "/prefetch.esgz", options: options)
        let blob = Array(FileManager.default.contents(atPath: dir + "/prefetch.esgz")!)
        let reference = registry.reference("prefetch/layer")
        try await RegistryClientTests.withClient { client in
            try await client.pushBlob(reference, digest: digestString(blob), bytes: blob)
            var readerOptions = RangeReader.Options()
            readerOptions.tailSize = 32 << 10
            let reader = try await RangeReader.open(client: client, repository: reference, digest: digestString(blob), options: readerOptions)
            let cache = MemoryChunkCache()
            let layer = try await offPool { try LayerReader(source: reader, cache: cache) }
            let before = reader.statistics.requests

            let region = try await Prefetch.prioritized(layer: layer, reader: reader)
            #expect(region > 0)
            #expect(reader.statistics.requests == before + 1)
            let start = try await offPool { try layer.read(path: "app/start.sh") }
            #expect(String(decoding: start, as: UTF8.self) == "#!/bin/sh\necho hi\n")
            #expect(layer.statistics.cacheHits >= 1)
            #expect(reader.statistics.requests == before + 1)

            try await Prefetch.background(layer: layer, reader: reader, stepSize: 256 << 10, bytesPerSecond: 1 << 30).value
            let afterBackground = reader.statistics.requests
            let bytes = try await offPool { try layer.read(path: "data/big.bin") }
            #expect(bytes == big)
            #expect(reader.statistics.requests == afterBackground)
        }
    }
}
