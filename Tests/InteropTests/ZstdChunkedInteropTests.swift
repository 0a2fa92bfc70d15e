// zstd:chunked interop with the Go reference (`estargz/zstdchunked`, v0.12): the reference reads
// and chunk-verifies our blobs; we read, verify and extract its blobs identically to `tar -x`.
// Helpers (Tools, Scratch, genLayer, ...) are in InteropTests.swift.

import Foundation
import Testing

struct ZstdVariant: Sendable, CustomTestStringConvertible {
    var label: String
    var chunkSize: Int? = nil
    var level: Int? = nil
    var prioritized = false
    var gnu = false
    var testDescription: String { label }
}

let zstdVariants: [ZstdVariant] = [
    ZstdVariant(label: "default"),
    ZstdVariant(label: "chunk-size 65536, level 19", chunkSize: 65536, level: 19),
    ZstdVariant(label: "prioritized, gnu tar", chunkSize: 65536, prioritized: true, gnu: true),
]

/// Checks that the zstd:chunked annotations in a convert/build summary describe the blob: the
/// position names the TOC frame (offset:compressed:uncompressed:1) and the checksum is its SHA-256.
func checkZstdAnnotations(_ t: Tools, _ blob: String, _ r: RunResult, _ what: String) throws {
    let summary = try jsonObject(r.stdout, what)
    guard let annotations = summary["annotations"] as? [String: String],
          let position = annotations["io.containers.zstd-chunked.manifest-position"],
          let checksum = annotations["io.containers.zstd-chunked.manifest-checksum"] else {
        throw InteropError("\(what): no zstd:chunked annotations in \(r.stdoutString.prefix(2000))")
    }
    let parts = position.split(separator: ":").compactMap { Int($0) }
    guard parts.count == 4, parts[3] == 1 else { throw InteropError("\(what): bad manifest-position \(position)") }
    let data = try Data(contentsOf: URL(fileURLWithPath: blob))
    #expect(parts[0] + parts[1] + 48 == data.count, "\(what): TOC frame plus footer must end the blob (\(position), \(data.count) bytes)")
    let frame = data[parts[0] ..< parts[0] + parts[1]]
    let digest = try must("/bin/sh", ["-c", "tail -c +\(parts[0] + 1) \"$0\" | head -c \(parts[1]) | sha256sum", blob], "sha256sum")
    #expect("sha256:" + digest.stdoutString.prefix(64) == checksum, "\(what): manifest-checksum is not the SHA-256 of the TOC frame")
    #expect(Array(frame.prefix(4)) == [0x28, 0xb5, 0x2f, 0xfd], "\(what): the TOC position does not point at a zstd frame")
}

@Suite("zstd:chunked interop with the Go reference", .enabled(if: !Tools.skip, "ESTARGZ_SKIP_INTEROP=1"))
struct ZstdChunkedInteropTests {
    // Ours -> Go: the reference lists our blob like the tar, verifies every chunk and reads files.
    @Test("zstd a: estargz convert --zstdchunked -> Go reader (dump, chunk verify, cat)", arguments: zstdVariants)
    func oursToGo(_ v: ZstdVariant) throws {
        let t = try Tools.get()
        let bin = try t.estargzBin()
        let s = try Scratch()
        defer { s.remove() }
        let layer = try genLayer(t, s, chunkSize: v.chunkSize ?? 4 << 20, seed: 21, gnu: v.gnu)
        var extra = ["--zstdchunked"]
        if let c = v.chunkSize { extra += ["--chunk-size", "\(c)"] }
        if let l = v.level { extra += ["--zstd-level", "\(l)"] }
        if v.prioritized { extra += ["--prioritized-files", try prioritizedFile(s)] }
        let blob = s.sub("ours.zst")
        let r = try must(bin, ["convert", layer.tar, blob, "--json"] + extra, "estargz convert --zstdchunked")
        let digest = try tocDigest(r, "estargz convert --zstdchunked --json")
        try checkSummary(t, blob, r, "estargz convert --zstdchunked --json")
        try checkZstdAnnotations(t, blob, r, "ours [\(v.label)]")
        #expect(try jsonObject(r.stdout, "convert")["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar+zstd")

        let expected = try expectedListing(t, s, layer.tar, landmark: v.prioritized ? "prefetch" : "no")
        try checkGoDump(t, s, blob: blob, digest: digest, expected: expected, "ours zstd:chunked -> Go [\(v.label)]")
        let verified = try must(t.refBin, ["verify", blob, "-toc-digest", digest], "Go chunk-verifies our zstd:chunked blob [\(v.label)]")
        #expect(verified.stdoutString.hasPrefix("OK:"))
        if v.prioritized { try checkPrioritizedOrder(t, blob, "ours zstd:chunked -> Go [\(v.label)]") }
        let ref = try s.mkdir("ref")
        try tarExtract(t, layer.tar, ref)
        for p in ["etc/hostname", "data/multi_chunk", "data/exact_chunk", "data/chunk_plus_one", "spaces and ünïcödé/日本語ファイル"] {
            let got = try must(t.refBin, ["cat", blob, p, "-toc-digest", digest], "Go cat \(p) of our zstd:chunked blob")
            #expect(got.stdout == (try Data(contentsOf: URL(fileURLWithPath: ref + "/" + p))), "Go cat \(p) [\(v.label)]")
        }
        if let c = v.chunkSize {
            let chunks = try tocOrder(t, blob).filter { ($0["name"] as? String) == "data/multi_chunk" }
            #expect(chunks.count == 4, "data/multi_chunk (3*\(c)+12345 bytes) should have 4 chunks, has \(chunks.count)")
        }
    }

    // Go -> ours: verify, extract (== tar -x), ls (== the Go dump) and cat, with no format flag.
    @Test("zstd b: Go build -compression zstdchunked -> estargz verify/extract/ls/cat", arguments: [4 << 20, 65536])
    func goToOurs(_ chunkSize: Int) throws {
        let t = try Tools.get()
        let bin = try t.estargzBin()
        let s = try Scratch()
        defer { s.remove() }
        let layer = try genLayer(t, s, chunkSize: chunkSize, seed: 23)
        let blob = s.sub("go.zst")
        let r = try must(t.refBin, ["build", layer.tar, blob, "-compression", "zstdchunked", "-chunk-size", "\(chunkSize)"],
                         "estargz-ref build -compression zstdchunked")
        let digest = try tocDigest(r, "estargz-ref build")
        try checkSummary(t, blob, r, "estargz-ref build -compression zstdchunked")
        try checkZstdAnnotations(t, blob, r, "Go-built")
        let what = "Go zstd:chunked -> ours [chunk \(chunkSize)]"
        try must(bin, ["verify", blob, "--toc-digest", digest], "\(what): estargz verify --toc-digest")
        let wrong = try run(bin, ["verify", blob, "--toc-digest", "sha256:" + String(repeating: "1", count: 64)])
        #expect(wrong.status != 0, "\(what): a wrong TOC digest was accepted")

        let ours = try s.mkdir("ours"), ref = try s.mkdir("ref")
        try must(bin, ["extract", blob, ours, "--toc-digest", digest], "\(what): estargz extract")
        try tarExtract(t, layer.tar, ref)
        try compareTrees(t, ref, ours, tar: layer.tar, "\(what): tar -x vs estargz extract")

        let dump = try jsonLines(try must(t.refBin, ["dump", blob, "-toc-digest", digest], "estargz-ref dump").stdout, "dump")
        let ls = try jsonLines(try must(bin, ["ls", blob, "--json"], "\(what): estargz ls --json").stdout, "estargz ls --json")
        try InteropTests().checkLsAgainstDump(ls: ls, dump: dump, implicit: Set(try implicitDirs(t, layer.tar)), what)
        for p in ["etc/hostname", "data/multi_chunk", "/data/size_0", "links/hl_other_dir", "dup/file"] {
            let got = try must(bin, ["cat", blob, p], "\(what): estargz cat \(p)")
            let clean = p.hasPrefix("/") ? String(p.dropFirst()) : p
            #expect(got.stdout == (try Data(contentsOf: URL(fileURLWithPath: ref + "/" + clean))), "\(what): cat \(p)")
        }
    }

    // A flipped byte in a chunk frame of a Go-built blob: verify and cat fail and name the file.
    @Test("zstd c: a damaged chunk frame is detected")
    func corruption() throws {
        let t = try Tools.get()
        let bin = try t.estargzBin()
        let s = try Scratch()
        defer { s.remove() }
        let layer = try genLayer(t, s, chunkSize: 65536, seed: 25)
        let blob = s.sub("go.zst")
        let digest = try tocDigest(try must(t.refBin, ["build", layer.tar, blob, "-compression", "zstdchunked", "-chunk-size", "65536"],
                                            "estargz-ref build"), "estargz-ref build")
        let victim = "data/size_513"
        guard let e = try tocOrder(t, blob).first(where: { ($0["name"] as? String) == victim && ($0["type"] as? String) == "reg" }),
              let off = e["offset"] as? Int, let next = e["nextOffset"] as? Int, next > off + 40 else {
            throw InteropError("no usable TOC entry for \(victim)")
        }
        var data = try Data(contentsOf: URL(fileURLWithPath: blob))
        data[off + (next - off) / 2] ^= 0x55
        let bad = s.sub("corrupt.zst")
        try data.write(to: URL(fileURLWithPath: bad))
        let v = try run(bin, ["verify", bad, "--toc-digest", digest])
        #expect(v.status != 0 && v.stderr.contains(victim), "\(describe(v, "verify of a damaged zstd:chunked blob"))")
        let c = try run(bin, ["cat", bad, victim])
        #expect(c.status != 0, "cat of the damaged \(victim) must fail (got \(c.stdout.count) bytes)")
        #expect(try must(bin, ["cat", bad, "etc/hostname"], "cat of an intact file").stdoutString == "interop\n")
    }
}
