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
            #expect(result.index == nil)
            #expect(result.images.count == 1)
            let converted = result.images[0]
            #expect(converted.layers.count == 2)

            // Manifest and config as pushed: annotations, diffIDs, TOC digests.
            let image = try await client.resolveImage(registry.reference("esgz/app", tag: "v1"))
            #expect(image.manifestDigest == result.digest)
            #expect(converted.manifestDigest == result.digest)
            let config = try JSONSerialization.jsonObject(with: Data(image.configBytes)) as! [String: Any]
            let diffIDs = (config["rootfs"] as! [String: Any])["diff_ids"] as! [String]
            #expect(diffIDs == converted.layers.map { $0.conversion.diffID.description })
            #expect((config["config"] as? [String: Any])?["Env"] as? [String] == ["PATH=/bin"])
            for (index, layer) in image.manifest.layers.enumerated() {
                #expect(layer.mediaType == MediaType.ociLayerGzip)
                #expect(layer.annotations?[StargzAnnotation.tocDigest] == converted.layers[index].conversion.tocDigest.description)
                #expect(layer.annotations?[StargzAnnotation.uncompressedSize] == String(converted.layers[index].conversion.uncompressedSize))
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
            #expect(reader.statistics.requests == 1) // the speculative tail, which also told the size (no HEAD)
            #expect(reader.statistics.bytesFetched == Int64(128 << 10)) // the tail and one block more

            // Four missing adjacent blocks: one request.
            let first = try await offPool { try reader.read(at: 0, count: 256 << 10) }
            #expect(first == Array(blob[0 ..< 256 << 10]))
            #expect(reader.statistics.requests == 2)
            // Half cached: one request for the missing half only.
            let second = try await offPool { try reader.read(at: 128 << 10, count: 256 << 10) }
            #expect(second == Array(blob[(128 << 10) ..< (384 << 10)]))
            #expect(reader.statistics.requests == 3)
            #expect(reader.statistics.bytesFetched == Int64((128 + 256 + 128) << 10))

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

extension ImageConvertTests {
    /// A two-platform index (pushed with `skopeo copy --all`): converted whole it becomes an OCI
    /// index of two eStargz manifests (the layer both share converted once); with a platform, one manifest.
    @Test func multiPlatformIndexConvertsEveryPlatformOrTheOneAskedFor() async throws {
        let registry = try TestRegistry(auth: .none)
        defer { registry.stop() }
        let dir = registry.directory.path
        let shared = try TestImages.gzipLayer(["etc/base": Array("shared\n".utf8)], in: dir, name: "shared")
        let amd = try TestImages.gzipLayer(["etc/arch": Array("amd64\n".utf8)], in: dir, name: "amd")
        let arm = try TestImages.gzipLayer(["etc/arch": Array("arm64\n".utf8)], in: dir, name: "arm")
        let amd64 = Platform(os: "linux", architecture: "amd64"), arm64 = Platform(os: "linux", architecture: "arm64", variant: "v8")
        try TestImages.indexLayout(dir + "/multi", tag: "v1", images: [(amd64, [shared, amd]), (arm64, [shared, arm])])
        try run("/usr/bin/skopeo", ["--insecure-policy", "copy", "--all", "--dest-tls-verify=false",
                                    "oci:\(dir)/multi:v1", "docker://\(registry.host)/multi/src:v1"])
        let source = ImageLocation.registry(registry.reference("multi/src", tag: "v1"))

        try await RegistryClientTests.withClient { client in
            // No platform: every platform, and an OCI index referencing the new manifests.
            let all = registry.reference("multi/esgz", tag: "v1")
            let result = try await ImageConverter.convert(source: source, destination: .registry(all), client: client)
            #expect(result.images.map(\.platform) == [amd64, arm64])
            #expect(result.images[0].layers[0].descriptor.digest == result.images[1].layers[0].descriptor.digest)
            let (bytes, type, digest) = try await client.fetchManifest(all)
            #expect(type == MediaType.ociIndex)
            #expect(digest == result.digest)
            let index = try JSONDecoder().decode(ImageIndex.self, from: Data(bytes))
            #expect(index.manifests.map(\.platform) == [amd64, arm64])
            #expect(index.manifests.map(\.digest) == result.images.map(\.manifestDigest))
            for (platform, arch) in [(amd64, "amd64\n"), (Platform(os: "linux", architecture: "arm64"), "arm64\n")] {
                // Opening checks every layer's TOC against its annotation.
                let image = try await RemoteImage.open(client: client, reference: all, platform: platform)
                #expect(image.layers.count == 2)
                let text = try await offPool { () -> [UInt8] in
                    let (layer, entry) = image.lookup("etc/arch")!
                    return try layer.reader.read(path: entry.path)
                }
                #expect(String(decoding: text, as: UTF8.self) == arch)
            }

            // --platform: that one only, as a single manifest.
            var options = ImageConverter.Options()
            options.platform = Platform(os: "linux", architecture: "arm64")
            let one = registry.reference("multi/arm", tag: "v1")
            let single = try await ImageConverter.convert(source: source, destination: .registry(one), client: client, options: options)
            #expect(single.index == nil && single.images.count == 1)
            #expect(try await client.fetchManifest(one).mediaType == MediaType.ociManifest)
            let image = try await RemoteImage.open(client: client, reference: one)
            let text = try await offPool { try image.lookup("etc/arch")!.layer.reader.read(path: "etc/arch") }
            #expect(String(decoding: text, as: UTF8.self) == "arm64\n")

            // Layout to layout: the index is what index.json tags; skopeo reads it back whole.
            let fromLayout = try await ImageConverter.convert(source: .layout(directory: dir + "/multi", tag: "v1"),
                                                              destination: .layout(directory: dir + "/out", tag: "esgz"), client: client)
            let tagged = try OCILayout(directory: dir + "/out").descriptor(tag: "esgz")
            #expect(tagged.mediaType == MediaType.ociIndex && tagged.digest == fromLayout.digest)
            try run("/usr/bin/skopeo", ["--insecure-policy", "copy", "--all", "--dest-tls-verify=false",
                                        "oci:\(dir)/out:esgz", "docker://\(registry.host)/multi/from-layout:v1"])
            #expect(try await client.fetchManifest(registry.reference("multi/from-layout", tag: "v1")).digest == fromLayout.digest)
        }
    }
}

extension ImageConvertTests {
    static let estargz = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path + "/.build/debug/estargz"

    /// `estargz image convert` prints progress on stderr only when it is a terminal, or with
    /// --progress; --quiet silences a terminal; the digest is always on stdout.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: ImageConvertTests.estargz), "needs the built CLI"))
    func progressLinesOnlyOnATerminalOrWhenAsked() throws {
        let dir = TemporaryDirectory()
        let layer = try TestImages.gzipLayer(["etc/motd": Array("hi\n".utf8)], in: dir.path, name: "cli")
        try TestImages.layout(dir.file("src"), tag: "v1", layers: [layer])
        func convert(_ flags: String, tty: Bool = false) -> (status: Int32, out: String, err: String) {
            var command = "'\(Self.estargz)' image convert 'oci:\(dir.file("src")):v1' 'oci:\(dir.file("out")):t' \(flags)"
            // `script` runs the command on a pseudo-terminal (stdout and stderr both on it).
            if tty { command = "script -qec \"\(command)\" /dev/null" }
            let status = shell("\(command) >'\(dir.file("out.txt"))' 2>'\(dir.file("err.txt"))'")
            let read = { (name: String) in String(decoding: (try? readFile(dir.file(name))) ?? [], as: UTF8.self) }
            return (status, read("out.txt"), read("err.txt"))
        }
        let piped = convert("")
        #expect(piped.status == 0)
        #expect(piped.out.hasPrefix("sha256:"))
        #expect(piped.err.isEmpty, "progress on a pipe: \(piped.err)")
        let asked = convert("--progress")
        #expect(asked.status == 0 && asked.err.contains("layer 1/1") && asked.err.contains("converting"))
        #expect(asked.out == piped.out)
        #expect(convert("--progress --quiet").status != 0)
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/script") {
            #expect(convert("", tty: true).out.contains("converting"))
            let quiet = convert("--quiet", tty: true)
            #expect(quiet.status == 0 && !quiet.out.contains("converting") && quiet.out.contains("sha256:"))
        }
    }
}
