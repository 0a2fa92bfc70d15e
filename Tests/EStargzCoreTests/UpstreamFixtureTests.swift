import Foundation
import TestSupport
import Testing
@testable import EStargzCore

/// Layers written by upstream containerd/stargz-snapshotter's `estargz` v0.14.3 (Debian's v0.12
/// predates these options) with `WithMinChunkSize`, the `externaltoc` compression and
/// `AppendTarLossLess`; see Tests/Interop/upstream-fixtures/README.md for how they were made.
/// `files.txt` is what upstream's reader read from them (every chunk checked against its digest).
@Suite struct UpstreamFixtureTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().path
        + "/Interop/upstream-fixtures/"

    static func tocDigest(_ name: String) throws -> SHA256Digest {
        let text = String(decoding: try readFile(directory + "toc-digests.txt"), as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return try #require(SHA256Digest(parsing: String(line.split(separator: " ")[1])))
        }
        throw EStargzError.notFound(name)
    }

    /// "NAME SIZE DIGEST" for every regular file, sorted, as upstream's reader printed it.
    static func expectedFiles() throws -> [String] {
        String(decoding: try readFile(directory + "files.txt"), as: UTF8.self).split(separator: "\n").map(String.init)
    }

    static func listing(_ layer: LayerReader) throws -> [String] {
        var lines: [String] = []
        try layer.walk { path, entry in
            if entry.kind == .regular, !Landmark.isLandmark(path) {
                lines.append("\(path) \(entry.size) \(SHA256Digest.of(try layer.read(path: path)))")
            }
            return true
        }
        return lines.sorted()
    }

    @Test(arguments: ["minchunk.esgz", "external.esgz", "lossless.esgz"])
    func weReadUpstreamLayersAsUpstreamDoes(_ name: String) throws {
        let blob = try readFile(Self.directory + name)
        let toc = name == "minchunk.esgz" ? nil : try readFile(Self.directory + name.replacingOccurrences(of: ".esgz", with: ".toc"))
        let layer = try LayerReader(source: MemorySource(blob), tocDigest: try Self.tocDigest(name), externalTOC: toc)
        #expect(layer.footerFormat == (toc == nil ? .estargz : .externalTOC))
        #expect(try Self.listing(layer) == (try Self.expectedFiles()))
        try layer.verifyAllChunks()
        #expect(layer.table.chunks.contains { $0.innerOffset > 0 }, "upstream shared members")
    }

    /// The lossless layer gunzips to the source tar; our keep-diff-id build of that tar gives a
    /// blob with the same uncompressed bytes and the same files.
    @Test func ourKeepDiffIDBuildOfUpstreamsSourceMatches() throws {
        let dir = TemporaryDirectory()
        let blob = try readFile(Self.directory + "lossless.esgz")
        try writeFile(dir.file("upstream.gz"), blob)
        _ = try run("/bin/sh", ["-c", "gunzip -c < '\(dir.file("upstream.gz"))' > '\(dir.file("source.tar"))'"])
        var options = LayerWriter.Options()
        options.externalTOC = true
        options.keepDiffID = true
        options.minimumChunkSize = 16384
        let result = try LayerWriter.convert(inputPath: dir.file("source.tar"), outputPath: dir.file("ours.esgz"), options: options)
        #expect(result.diffID == SHA256Digest.of(try readFile(dir.file("source.tar"))))
        let layer = try LayerReader(source: FileSource(path: dir.file("ours.esgz")), tocDigest: result.tocDigest,
                                    externalTOC: try #require(result.externalTOC))
        #expect(try Self.listing(layer) == (try Self.expectedFiles()))
    }

    /// Upstream reads ours: only where the upstream tool was built (`ESTARGZ_UPSTREAM_BIN`, see
    /// the fixtures' README; Debian has no upstream with these options, so CI skips this).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["ESTARGZ_UPSTREAM_BIN"] != nil, "needs ESTARGZ_UPSTREAM_BIN"))
    func upstreamReadsOurLayers() throws {
        let tool = ProcessInfo.processInfo.environment["ESTARGZ_UPSTREAM_BIN"]!
        let dir = TemporaryDirectory()
        let blob = try readFile(Self.directory + "lossless.esgz")
        try writeFile(dir.file("upstream.gz"), blob)
        _ = try run("/bin/sh", ["-c", "gunzip -c < '\(dir.file("upstream.gz"))' > '\(dir.file("source.tar"))'"])
        let expected = try Self.expectedFiles()
        for (name, external, keep) in [("min", false, false), ("ext", true, false), ("keep", true, true)] {
            var options = LayerWriter.Options()
            options.chunkSize = keep ? 4 << 20 : 8192
            options.minimumChunkSize = 16384
            options.externalTOC = external
            options.keepDiffID = keep
            let result = try LayerWriter.convert(inputPath: dir.file("source.tar"), outputPath: dir.file(name), options: options)
            var arguments = ["verify", dir.file(name), "-toc-digest", result.tocDigest.description]
            if let toc = result.externalTOC {
                try writeFile(dir.file(name + ".toc"), toc)
                arguments += ["-toc", dir.file(name + ".toc")]
            }
            let lines = try run(tool, arguments).split(separator: "\n").map(String.init).filter { !$0.contains("landmark") }
            #expect(lines == expected, "\(name)")
        }
    }
}
