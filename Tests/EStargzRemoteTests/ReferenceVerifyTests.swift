import EStargzCore
@testable import EStargzRemote
import Foundation
import TestSupport
import Testing

/// An image we convert and push must pass the Go reference's TOC verification
/// (`estargz-ref verify BLOB -toc-digest D`, Tests/Interop/refgo) with the annotated digest.
/// The time limit is a guard against a hang: building the reference with a cold Go cache on a loaded
/// 2-core machine took over a minute once.
@Suite(.serialized, .timeLimit(.minutes(4))) struct ReferenceVerifyTests {
    /// Builds Tests/Interop/refgo like InteropTests does (output under .build/interop/).
    static func referenceBinary() throws -> String? {
        let go = "/usr/lib/go-1.19/bin/go"
        let gopath = "/usr/share/gocode"
        guard FileManager.default.isExecutableFile(atPath: go),
              FileManager.default.fileExists(atPath: gopath + "/src/github.com/containerd/stargz-snapshotter/estargz/estargz.go") else { return nil }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let out = root + "/.build/interop"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let binary = out + "/estargz-ref-remote-\(getpid())"
        try run("/usr/bin/env", ["-C", root, "GO111MODULE=off", "GOPATH=" + gopath, "GOFLAGS=", "GOCACHE=" + out + "/gocache",
                                 go, "build", "-o", binary, "./Tests/Interop/refgo"])
        return binary
    }

    @Test func convertedImagePassesGoReferenceVerification() async throws {
        guard let reference = try Self.referenceBinary() else {
            Issue.record("Go 1.19 or the stargz-snapshotter sources are missing")
            return
        }
        defer { try? FileManager.default.removeItem(atPath: reference) }
        let registry = try TestRegistry(auth: .none)
        defer { registry.stop() }
        let dir = registry.directory.path
        let layer = try TestImages.gzipLayer(["etc/hello.txt": Array("hello, go\n".utf8),
                                              "usr/lib/big.bin": TestImages.noise(1 << 20, seed: 5)], in: dir, name: "src")
        try TestImages.layout(dir + "/src-layout", tag: "v1", layers: [layer])
        try await RegistryClientTests.withClient { client in
            var options = ImageConverter.Options()
            options.layer.chunkSize = 128 << 10
            let target = registry.reference("esgz/verify", tag: "v1")
            _ = try await ImageConverter.convert(source: .layout(directory: dir + "/src-layout", tag: "v1"), destination: .registry(target),
                                                 client: client, options: options)
            let image = try await client.resolveImage(target)
            #expect(image.manifest.layers.count == 1)
            for (index, descriptor) in image.manifest.layers.enumerated() {
                let tocDigest = try #require(descriptor.annotations?[StargzAnnotation.tocDigest])
                let blob = try await client.fetchBlob(target, digest: descriptor.digest)
                let path = "\(dir)/layer-\(index)"
                try Data(blob).write(to: URL(fileURLWithPath: path))
                try run(reference, ["verify", path, "-toc-digest", tocDigest])
                // A wrong digest is rejected: the check is real.
                await #expect(throws: (any Error).self) {
                    try run(reference, ["verify", path, "-toc-digest", "sha256:" + String(repeating: "0", count: 64)])
                }
            }
        }
    }
}
