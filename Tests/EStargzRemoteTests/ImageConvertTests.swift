import EStargzCore
@testable import EStargzRemote
import Foundation
import TestSupport
import Testing

@Suite(.serialized) struct ImageConvertTests {
    /// A two-layer gzip image pushed with skopeo, converted by us, then read lazily.
    @Test func convertSkopeoPushedImageAndReadLazily() async throws {
        let registry = try TestRegistry(auth: .none)
        defer { registry.stop() }
        let dir = registry.directory.path
        let big = TestImages.noise(3 << 20, seed: 11)
        let lower = try TestImages.gzipLayer(["usr/lib/big.bin": big, "etc/motd": Array("lower\n".utf8),
                                              "etc/gone": Array("deleted above\n".utf8)], in: dir, name: "lower")
        let upper = try TestImages.gzipLayer(["etc/motd": Array("upper wins\n".utf8), "etc/.wh.gone": []], in: dir, name: "upper")
        try TestImages.layout(dir + "/src-layout", tag: "v1", layers: [lower, upper])
        try run("/usr/bin/skopeo", ["--insecure-policy", "copy", "--dest-tls-verify=false",
                                    "oci:\(dir)/src-layout:v1", "docker://\(registry.host)/plain/app:v1"])

        try await RegistryClientTests.withClient { client in
            let source = ImageLocation.registry(registry.reference("plain/app", tag: "v1"))
            let destination = ImageLocation.registry(registry.reference("esgz/app", tag: "v1"))
            var options = ImageConverter.Options()
            options.layer.chunkSize = 256 << 10
            let result = try await ImageConverter.convert(source: source, destination: destination, client: client, options: options)
            #expect(result.layers.count == 2)

            // Manifest and config as pushed: annotations, diffIDs, TOC digests.
            let image = try await client.resolveImage(registry.reference("esgz/app", tag: "v1"))
            #expect(image.manifestDigest == result.manifestDigest)
            let config = try JSONSerialization.jsonObject(with: Data(image.configBytes)) as! [String: Any]
            let diffIDs = (config["rootfs"] as! [String: Any])["diff_ids"] as! [String]
            #expect(diffIDs == result.layers.map { $0.conversion.diffID.description })
            #expect((config["config"] as? [String: Any])?["Env"] as? [String] == ["PATH=/bin"])
            for (index, layer) in image.manifest.layers.enumerated() {
                #expect(layer.mediaType == MediaType.ociLayerGzip)
                #expect(layer.annotations?[StargzAnnotation.tocDigest] == result.layers[index].conversion.tocDigest.description)
                #expect(layer.annotations?[StargzAnnotation.uncompressedSize] == String(result.layers[index].conversion.uncompressedSize))
                // The diffID is the SHA-256 of the uncompressed blob.
                let path = "\(dir)/check-\(index)"
                try await client.downloadBlob(registry.reference("esgz/app"), digest: layer.digest, to: path)
                let tarDigest = try run("/bin/sh", ["-c", "gzip -dc '\(path)' | sha256sum | cut -d' ' -f1"]).trimmingCharacters(in: .whitespacesAndNewlines)
                #expect("sha256:" + tarDigest == diffIDs[index])
            }

            // Lazy reads: open verifies each TOC against its annotation; a small file costs far less than the layer.
            let remote = try await RemoteImage.open(client: client, reference: registry.reference("esgz/app", tag: "v1"), cache: MemoryChunkCache())
            let opened = remote.statistics
            let motd = try await offPool { () -> [UInt8] in
                let (layer, entry) = remote.lookup("etc/motd")!
                return try layer.reader.read(path: entry.path)
            }
            #expect(String(decoding: motd, as: UTF8.self) == "upper wins\n")
            #expect(remote.lookup("etc/gone") == nil)
            let paths = remote.mergedEntries().map(\.path)
            #expect(paths.contains("usr/lib/big.bin"))
            #expect(!paths.contains("etc/gone") && !paths.contains("etc/.wh.gone"))
            let afterCat = remote.statistics
            let layerBytes = remote.layers.reduce(Int64(0)) { $0 + $1.source.size }
            #expect(afterCat.bytesFetched < layerBytes / 4)
            #expect(afterCat.requests - opened.requests <= 1)

            // One chunk of the big file in the middle: one more request of about a block or two.
            let (bigLayer, bigEntry) = remote.lookup("usr/lib/big.bin")!
            let piece = try await offPool { try bigLayer.reader.read(path: bigEntry.path, offset: 1 << 20, count: 4096) }
            #expect(piece == Array(big[(1 << 20) ..< (1 << 20) + 4096]))
            let afterPiece = remote.statistics
            #expect(afterPiece.bytesFetched - afterCat.bytesFetched < 512 << 10)
            print("lazy numbers: layers \(layerBytes) bytes; open \(opened.bytesFetched) B/\(opened.requests) req; cat motd +\(afterCat.bytesFetched - opened.bytesFetched) B/+\(afterCat.requests - opened.requests) req; 4 KiB of big.bin +\(afterPiece.bytesFetched - afterCat.bytesFetched) B/+\(afterPiece.requests - afterCat.requests) req")

            // Registry to an OCI layout works too (skopeo reads it back).
            _ = try await ImageConverter.convert(source: source, destination: .layout(directory: dir + "/out-layout", tag: "esgz"),
                                                 client: client, options: options)
            let inspected = try run("/usr/bin/skopeo", ["--insecure-policy", "inspect", "--raw", "oci:\(dir)/out-layout:esgz"])
            #expect(inspected.contains(StargzAnnotation.tocDigest))
        }
    }
}

@Suite(.serialized) struct RangeReaderTests {
    @Test func coalescesSharesAndCountsRequests() async throws {
        let registry = try TestRegistry(auth: .none)
        defer { registry.stop() }
        let blob = TestImages.noise(2 << 20, seed: 5)
        let digest = digestString(blob)
        let reference = registry.reference("ranges/blob")
        try await RegistryClientTests.withClient { client in
            try await client.pushBlob(reference, digest: digest, bytes: blob)
            var options = RangeReader.Options()
            options.blockSize = 64 << 10
            options.tailSize = 64 << 10
            let reader = try await RangeReader.open(client: client, repository: reference, digest: digest, options: options)
            #expect(reader.size == Int64(blob.count))
            #expect(reader.statistics.requests == 1) // the speculative tail

            // Four missing adjacent blocks: one request.
            let first = try await offPool { try reader.read(at: 0, count: 256 << 10) }
            #expect(first == Array(blob[0 ..< 256 << 10]))
            #expect(reader.statistics.requests == 2)
            // Half cached: one request for the missing half only.
            let second = try await offPool { try reader.read(at: 128 << 10, count: 256 << 10) }
            #expect(second == Array(blob[(128 << 10) ..< (384 << 10)]))
            #expect(reader.statistics.requests == 3)
            #expect(reader.statistics.bytesFetched == Int64((64 + 256 + 128) << 10))

            // Eight concurrent readers of the same range: one request between them.
            let results = try await withThrowingTaskGroup(of: [UInt8].self) { group in
                for _ in 0 ..< 8 { group.addTask { try await offPool { try reader.read(at: 1 << 20, count: 300 << 10) } } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.allSatisfy { $0 == Array(blob[(1 << 20) ..< (1 << 20) + (300 << 10)]) })
            #expect(reader.statistics.requests == 4)
        }
    }

    /// A server that ignores Range (answers 200 with the whole blob) is detected, or used whole when allowed.
    @Test func detectsServerIgnoringRanges() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let blob = TestImages.noise(200_000, seed: 9)
        try Data(blob).write(to: URL(fileURLWithPath: dir.path + "/blob"))
        let script = #"""
            import http.server, sys
            data = open(sys.argv[1], "rb").read()
            class H(http.server.BaseHTTPRequestHandler):
                def reply(self, body):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if body: self.wfile.write(data)
                def do_GET(self): self.reply(True)
                def do_HEAD(self): self.reply(False)
                def log_message(self, *a): pass
            http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()
            """#
        try script.write(toFile: dir.path + "/server.py", atomically: true, encoding: .utf8)
        let port = freePort()
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = ["python3", dir.path + "/server.py", dir.path + "/blob", String(port)]
        try server.run()
        defer {
            kill(server.processIdentifier, SIGKILL)
            while server.isRunning { usleep(10_000) }
        }
        try waitUntilListening(port, process: server)
        let reference = ImageReference(registry: "127.0.0.1:\(port)", repository: "any/blob")
        try await RegistryClientTests.withClient { client in
            await #expect {
                _ = try await RangeReader.open(client: client, repository: reference, digest: digestString(blob))
            } throws: { error in
                if case .rangeNotSupported = error as? RegistryError { return true } else { return false }
            }
            var options = RangeReader.Options()
            options.fallBackToFullDownload = true
            let reader = try await RangeReader.open(client: client, repository: reference, digest: digestString(blob), options: options)
            let bytes = try await offPool { try reader.read(at: 1000, count: 5000) }
            #expect(bytes == Array(blob[1000 ..< 6000]))
        }
    }
}
