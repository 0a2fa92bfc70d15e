// Interop tests against the reference Go implementation
// (containerd/stargz-snapshotter `estargz` v0.12, Debian package
// golang-github-containerd-stargz-snapshotter-dev) and GNU tar.
//
// These run in CI as root with the Go toolchain installed. They FAIL (never
// skip) when Go, the reference sources or the `estargz` CLI are missing,
// unless ESTARGZ_SKIP_INTEROP=1 is set.
//
// Environment:
//   ESTARGZ_SKIP_INTEROP=1  disable the whole suite
//   ESTARGZ_BIN             path of the `estargz` CLI (default: next to the test
//                           bundle, then <package>/.build/debug/estargz)
//   ESTARGZ_GO              go binary (default /usr/lib/go-1.19/bin/go; a newer Go
//                           panics when estargz v0.12 writes its footer)
//
// Helpers live in Tests/Interop/: refgo/main.go (`estargz-ref`), gen_layer.py,
// tar_listing.py, compare_listings.py, compare_trees.py.
//
// ASSUMPTIONS about the `estargz` CLI (written separately):
//   * `estargz convert IN OUT [--level N] [--chunk-size BYTES]
//      [--prioritized-files FILE] [--json]`; with --json it prints ONE JSON object
//      on stdout with keys "tocDigest" ("sha256:<hex>"), "diffID",
//      "uncompressedSize", "compressedSize". FILE lists one path per line.
//      Like the reference Build it adds ".no.prefetch.landmark" (or
//      ".prefetch.landmark" after the prioritized files).
//   * `estargz verify BLOB [--toc-digest D]` exits 0 only if everything matches;
//      on a bad chunk its stderr names the entry (cleaned path).
//   * `estargz extract BLOB DIR [--toc-digest D]`; it may or may not create the
//      landmark file (the tree comparison ignores it).
//   * `estargz ls BLOB --json` prints one JSON object per line with at least
//      "name" (cleaned path, no leading "/") and "type" (TOC type: dir, reg,
//      symlink, hardlink, char, block, fifo). Implicit parent directories may be
//      absent; hardlinks may be typed "hardlink".
//   * `estargz cat BLOB PATH` writes the file's content to stdout (PATH may have a
//      leading "/"); non-zero exit on any error.

import Foundation
import Testing

// MARK: - Environment and process helpers

struct InteropError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

struct RunResult: Sendable {
    var status: Int32
    var stdout: Data
    var stderr: String
    var stdoutString: String { String(decoding: stdout, as: UTF8.self) }
}

/// Runs `exe args`, stdout/stderr captured through files (no pipe deadlocks).
@discardableResult
func run(_ exe: String, _ args: [String], cwd: String? = nil, env: [String: String] = [:]) throws -> RunResult {
    let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("estargz-run-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: tmp) }
    let outURL = tmp.appendingPathComponent("out"), errURL = tmp.appendingPathComponent("err")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    var e = ProcessInfo.processInfo.environment
    for (k, v) in env { e[k] = v }
    p.environment = e
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch {
        throw InteropError("cannot run \(exe): \(error)")
    }
    p.waitUntilExit()
    try out.close(); try err.close()
    return RunResult(status: p.terminationStatus,
                     stdout: try Data(contentsOf: outURL),
                     stderr: String(decoding: try Data(contentsOf: errURL), as: UTF8.self))
}

func describe(_ r: RunResult, _ what: String) -> String {
    let so = r.stdoutString
    return "\(what): exit \(r.status)\n--- stdout ---\n\(so.prefix(6000))\n--- stderr ---\n\(r.stderr.prefix(6000))"
}

/// Runs a command that must succeed.
@discardableResult
func must(_ exe: String, _ args: [String], _ what: String, cwd: String? = nil, env: [String: String] = [:]) throws -> RunResult {
    let r = try run(exe, args, cwd: cwd, env: env)
    if r.status != 0 { throw InteropError(describe(r, what)) }
    return r
}

struct Tools: Sendable {
    let packageRoot: String
    let interopDir: String
    let python: String
    let refBin: String
    let tar: String

    static let skip = ProcessInfo.processInfo.environment["ESTARGZ_SKIP_INTEROP"] == "1"
    static let shared: Result<Tools, InteropError> = Result { try Tools.make() }.mapError {
        ($0 as? InteropError) ?? InteropError("\($0)")
    }
    static func get() throws -> Tools { try shared.get() }

    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    private static func make() throws -> Tools {
        // Tests/InteropTests/InteropTests.swift -> package root
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
        let interop = root + "/Tests/Interop"
        guard let python = which("python3") else { throw InteropError("python3 not found in PATH") }
        guard let tar = which("tar") else { throw InteropError("tar not found in PATH") }
        let go = ProcessInfo.processInfo.environment["ESTARGZ_GO"] ?? "/usr/lib/go-1.19/bin/go"
        guard FileManager.default.isExecutableFile(atPath: go) else {
            throw InteropError("Go toolchain not found at \(go) (install golang-1.19-go, or set ESTARGZ_GO; "
                + "set ESTARGZ_SKIP_INTEROP=1 to disable the interop tests)")
        }
        let gopath = "/usr/share/gocode"
        guard FileManager.default.fileExists(
            atPath: gopath + "/src/github.com/containerd/stargz-snapshotter/estargz/estargz.go") else {
            throw InteropError("reference sources missing under \(gopath) "
                + "(install golang-github-containerd-stargz-snapshotter-dev)")
        }
        // Build once per test run; the output lives under .build/interop/.
        let outDir = root + "/.build/interop"
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        let ref = outDir + "/estargz-ref"
        let tmpRef = ref + ".\(ProcessInfo.processInfo.processIdentifier).tmp"
        try must(go, ["build", "-o", tmpRef, "./Tests/Interop/refgo"], "building estargz-ref with \(go)", cwd: root,
                 env: ["GO111MODULE": "off", "GOPATH": gopath, "GOFLAGS": "",
                       "GOCACHE": outDir + "/gocache"])
        // rename(2) is atomic, so concurrent test runs never see a half-written binary.
        guard rename(tmpRef, ref) == 0 else { throw InteropError("rename \(tmpRef) -> \(ref) failed: errno \(errno)") }
        return Tools(packageRoot: root, interopDir: interop, python: python, refBin: ref, tar: tar)
    }

    /// The `estargz` CLI: $ESTARGZ_BIN, else next to the test bundle, else .build/debug.
    func estargzBin() throws -> String {
        var candidates: [String] = []
        if let e = ProcessInfo.processInfo.environment["ESTARGZ_BIN"] { candidates.append(e) }
        let bundleDir = URL(fileURLWithPath: CommandLine.arguments.first ?? "").deletingLastPathComponent().path
        candidates.append(bundleDir + "/estargz")
        for b in Bundle.allBundles where b.bundlePath.hasSuffix(".xctest") {
            candidates.append(URL(fileURLWithPath: b.bundlePath).deletingLastPathComponent().path + "/estargz")
        }
        candidates.append(packageRoot + "/.build/debug/estargz")
        for c in candidates where FileManager.default.isExecutableFile(atPath: c) { return c }
        throw InteropError("estargz CLI binary not found (tried \(candidates)); build it with `swift build` "
            + "or set ESTARGZ_BIN (ESTARGZ_SKIP_INTEROP=1 disables these tests)")
    }

    func script(_ name: String) -> String { interopDir + "/" + name }

    @discardableResult
    func py(_ scriptName: String, _ args: [String], _ what: String) throws -> RunResult {
        try must(python, [script(scriptName)] + args, what)
    }
}

/// A scratch directory; callers `defer { s.remove() }` (explicit, since ARC may
/// release a class instance before the end of its scope).
struct Scratch {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("estargz-interop-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func sub(_ name: String) -> String { path + "/" + name }
    func mkdir(_ name: String) throws -> String {
        let p = sub(name)
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

func jsonObject(_ data: Data, _ what: String) throws -> [String: Any] {
    guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
        throw InteropError("\(what): expected one JSON object, got: \(String(decoding: data, as: UTF8.self).prefix(2000))")
    }
    return o
}

func jsonLines(_ data: Data, _ what: String) throws -> [[String: Any]] {
    try String(decoding: data, as: UTF8.self).split(separator: "\n").map { line in
        guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw InteropError("\(what): line is not a JSON object: \(line.prefix(500))")
        }
        return o
    }
}

func tocDigest(_ r: RunResult, _ what: String) throws -> String {
    let o = try jsonObject(r.stdout, what)
    guard let d = o["tocDigest"] as? String, d.hasPrefix("sha256:") else {
        throw InteropError("\(what): no \"tocDigest\" (sha256:...) in JSON output: \(r.stdoutString.prefix(2000))")
    }
    for k in ["diffID", "uncompressedSize", "compressedSize"] where o[k] == nil {
        throw InteropError("\(what): JSON output lacks \"\(k)\": \(r.stdoutString.prefix(2000))")
    }
    return d
}

// MARK: - Shared steps

struct Layer {
    let tar: String
    let chunkSize: Int
}

func genLayer(_ t: Tools, _ s: Scratch, name: String = "layer.tar", chunkSize: Int = 4 << 20,
              seed: Int = 1, gnu: Bool = false) throws -> Layer {
    let tar = s.sub(name)
    var args = [tar, "--seed", "\(seed)", "--chunk-size", "\(chunkSize)"]
    if gnu { args.append("--gnu") }
    try t.py("gen_layer.py", args, "gen_layer.py")
    return Layer(tar: tar, chunkSize: chunkSize)
}

/// Expected listing file from the tar (tar_listing.py).
func expectedListing(_ t: Tools, _ s: Scratch, _ tar: String, landmark: String = "no") throws -> String {
    let out = s.sub("expected-\(UUID().uuidString).jsonl")
    let r = try t.py("tar_listing.py", [tar, "--landmark", landmark], "tar_listing.py")
    try r.stdout.write(to: URL(fileURLWithPath: out))
    return out
}

func implicitDirs(_ t: Tools, _ tar: String) throws -> [String] {
    try t.py("tar_listing.py", [tar, "--implicit-dirs"], "tar_listing.py --implicit-dirs")
        .stdoutString.split(separator: "\n").map(String.init)
}

/// `estargz-ref dump` of the blob, compared with the expected listing.
func checkGoDump(_ t: Tools, _ s: Scratch, blob: String, digest: String?, expected: String, _ what: String) throws {
    var args = ["dump", blob]
    if let digest { args += ["-toc-digest", digest] }
    let dump = try must(t.refBin, args, "\(what): reference reader (estargz-ref dump) rejected the blob")
    let got = s.sub("dump-\(UUID().uuidString).jsonl")
    try dump.stdout.write(to: URL(fileURLWithPath: got))
    let cmp = try run(t.python, [t.script("compare_listings.py"), expected, got])
    if cmp.status != 0 {
        throw InteropError(describe(cmp, "\(what): reference reader's listing differs from the tar's (expected vs actual)"))
    }
}

/// diffID / uncompressedSize / compressedSize in a build summary must match the blob.
func checkSummary(_ t: Tools, _ blob: String, _ r: RunResult, _ what: String) throws {
    let summary = try jsonObject(r.stdout, what)
    let actual = try jsonObject(try t.py("blob_digest.py", [blob], "blob_digest.py").stdout, "blob_digest.py")
    #expect(summary["diffID"] as? String == actual["diffID"] as? String,
            "\(what): diffID \(summary["diffID"] ?? "nil") != sha256 of the decompressed blob \(actual["diffID"] ?? "nil")")
    for k in ["uncompressedSize", "compressedSize"] {
        let got = (summary[k] as? NSNumber)?.int64Value, want = (actual[k] as? NSNumber)?.int64Value
        #expect(got == want, "\(what): \(k) \(got.map(String.init) ?? "nil") != actual \(want.map(String.init) ?? "nil")")
    }
}

func goBuild(_ t: Tools, _ tar: String, _ blob: String, _ extra: [String] = []) throws -> String {
    let r = try must(t.refBin, ["build", tar, blob] + extra, "estargz-ref build")
    let d = try tocDigest(r, "estargz-ref build")
    try checkSummary(t, blob, r, "estargz-ref build")
    return d
}

func oursConvert(_ t: Tools, _ tar: String, _ blob: String, _ extra: [String] = []) throws -> String {
    let bin = try t.estargzBin()
    let r = try must(bin, ["convert", tar, blob, "--json"] + extra, "estargz convert (our CLI)")
    let d = try tocDigest(r, "estargz convert --json")
    try checkSummary(t, blob, r, "estargz convert --json")
    return d
}

/// GNU tar extraction: the reference tree. --delay-directory-restore makes
/// directory metadata independent of entry order.
func tarExtract(_ t: Tools, _ tar: String, _ dir: String) throws {
    guard getuid() == 0 else {
        throw InteropError("tree comparisons need root (device nodes, ownership, trusted.* xattrs); run as root "
            + "or set ESTARGZ_SKIP_INTEROP=1")
    }
    try must("/bin/sh", ["-c", "umask 022 && exec \"$0\" \"$@\"", t.tar, "-x", "--delay-directory-restore",
                         "--numeric-owner", "--xattrs", "--xattrs-include=*", "-p", "-f", tar, "-C", dir],
             "tar -x \(tar)")
}

func compareTrees(_ t: Tools, _ a: String, _ b: String, tar: String, _ what: String) throws {
    var args = [t.script("compare_trees.py"), a, b, "--mtime-round",
                "--ignore", ".no.prefetch.landmark", "--ignore", ".prefetch.landmark"]
    for d in try implicitDirs(t, tar) { args.append("--ignore-mtime=\(d)") }
    let r = try run(t.python, args)
    if r.status != 0 { throw InteropError(describe(r, "\(what): trees differ (\(a) vs \(b))")) }
}

/// Names in TOC order (`estargz-ref entries`, chunks left out).
func tocOrder(_ t: Tools, _ blob: String) throws -> [[String: Any]] {
    let r = try must(t.refBin, ["entries", blob], "estargz-ref entries")
    return try jsonLines(r.stdout, "estargz-ref entries")
}

let prioritized = ["etc/hostname", "data/size_513", "usr/lib/deep/er/est/leaf.txt", "data/multi_chunk"]

/// Prioritized files come before ".prefetch.landmark"; other files after.
func checkPrioritizedOrder(_ t: Tools, _ blob: String, _ what: String) throws {
    let ents = try tocOrder(t, blob).filter { ($0["type"] as? String) != "chunk" }
    let names = ents.compactMap { $0["name"] as? String }
    guard let lm = names.firstIndex(of: ".prefetch.landmark") else {
        throw InteropError("\(what): no .prefetch.landmark in the TOC; order: \(names.prefix(20))")
    }
    #expect(!names.contains(".no.prefetch.landmark"), "\(what): both landmarks present")
    for p in prioritized {
        guard let i = names.firstIndex(of: p) else { throw InteropError("\(what): \(p) not in TOC") }
        #expect(i < lm, "\(what): prioritized \(p) at TOC index \(i), after the landmark (\(lm))")
    }
    for p in ["data/size_512", "many/f00000", "dup/keep"] {
        guard let i = names.firstIndex(of: p) else { throw InteropError("\(what): \(p) not in TOC") }
        #expect(i > lm, "\(what): non-prioritized \(p) at TOC index \(i), before the landmark (\(lm))")
    }
}

struct Variant: Sendable, CustomTestStringConvertible {
    var label: String
    var chunkSize: Int? = nil
    var level: Int? = nil
    var prioritized = false
    var gnu = false
    var testDescription: String { label }
}

let variants: [Variant] = [
    Variant(label: "default"),
    Variant(label: "chunk-size 65536", chunkSize: 65536),
    Variant(label: "level 1", level: 1),
    Variant(label: "prioritized", chunkSize: 65536, prioritized: true),
    Variant(label: "gnu tar, chunk-size 65536", chunkSize: 65536, gnu: true),
]

func prioritizedFile(_ s: Scratch) throws -> String {
    let p = s.sub("prioritized.txt")
    try (prioritized.joined(separator: "\n") + "\n").write(toFile: p, atomically: true, encoding: .utf8)
    return p
}

// MARK: - Tests

@Suite("Interop with the Go reference (stargz-snapshotter estargz v0.12)",
       .enabled(if: !Tools.skip, "ESTARGZ_SKIP_INTEROP=1"))
struct InteropTests {

    // f. The reference's own round trip matches tar_listing.py (validates the
    //    listing script and the Go driver; needs no Swift code).
    @Test("f: Go build -> Go dump matches tar_listing.py", arguments: variants)
    func goRoundTripMatchesListing(_ v: Variant) throws {
        let t = try Tools.get()
        let s = try Scratch()
        defer { s.remove() }
        let layer = try genLayer(t, s, chunkSize: v.chunkSize ?? 4 << 20, seed: 3, gnu: v.gnu)
        var extra: [String] = []
        if let c = v.chunkSize { extra += ["-chunk-size", "\(c)"] }
        if let l = v.level { extra += ["-level", "\(l)"] }
        if v.prioritized { extra += ["-prioritized", try prioritizedFile(s)] }
        let blob = s.sub("go.blob")
        let digest = try goBuild(t, layer.tar, blob, extra)
        let expected = try expectedListing(t, s, layer.tar, landmark: v.prioritized ? "prefetch" : "no")
        try checkGoDump(t, s, blob: blob, digest: digest, expected: expected, "Go round trip [\(v.label)]")
        if v.prioritized { try checkPrioritizedOrder(t, blob, "Go round trip [\(v.label)]") }
        // Legacy 47-byte footer variant is still readable by the reference.
        let legacy = s.sub("go-legacy.blob")
        try must(t.refBin, ["legacy", blob, legacy], "estargz-ref legacy")
        let sizes = try [blob, legacy].map { try FileManager.default.attributesOfItem(atPath: $0)[.size] as! Int }
        #expect(sizes[0] - sizes[1] == 4, "legacy footer must be 47 bytes (51 - 4)")
        try checkGoDump(t, s, blob: legacy, digest: digest, expected: expected, "Go round trip, legacy footer [\(v.label)]")
    }

    // f2. Sanity check of the helpers themselves: tar -x twice compares equal.
    @Test("f: compare_trees.py accepts two tar -x extractions")
    func compareTreesSelfCheck() throws {
        let t = try Tools.get()
        let s = try Scratch()
        defer { s.remove() }
        let layer = try genLayer(t, s, chunkSize: 65536)
        let a = try s.mkdir("a"), b = try s.mkdir("b")
        try tarExtract(t, layer.tar, a)
        try tarExtract(t, layer.tar, b)
        try compareTrees(t, a, b, tar: layer.tar, "tar -x vs tar -x")
    }

    // a. ours -> Go.
    @Test("a: estargz convert -> Go reader (dump with our TOC digest)", arguments: variants)
    func oursToGo(_ v: Variant) throws {
        let t = try Tools.get()
        let s = try Scratch()
        defer { s.remove() }
        let layer = try genLayer(t, s, chunkSize: v.chunkSize ?? 4 << 20, seed: 5, gnu: v.gnu)
        var extra: [String] = []
        if let c = v.chunkSize { extra += ["--chunk-size", "\(c)"] }
        if let l = v.level { extra += ["--level", "\(l)"] }
        if v.prioritized { extra += ["--prioritized-files", try prioritizedFile(s)] }
        let blob = s.sub("ours.blob")
        let digest = try oursConvert(t, layer.tar, blob, extra)
        let expected = try expectedListing(t, s, layer.tar, landmark: v.prioritized ? "prefetch" : "no")
        try checkGoDump(t, s, blob: blob, digest: digest, expected: expected, "ours -> Go [\(v.label)]")
        if v.prioritized { try checkPrioritizedOrder(t, blob, "ours -> Go [\(v.label)]") }
        if let c = v.chunkSize {
            // Chunking honoured: data/multi_chunk is split into chunkSize pieces.
            let chunks = try tocOrder(t, blob).filter { ($0["name"] as? String) == "data/multi_chunk" }
            #expect(chunks.count == 4, "ours -> Go [\(v.label)]: data/multi_chunk (3*\(c)+12345 bytes) should have 4 chunks, has \(chunks.count)")
        }
    }

    // b. Go -> ours, for the eStargz footer and the legacy stargz footer.
    @Test("b: Go build -> estargz verify/extract/ls/cat", arguments: ["estargz", "legacy"])
    func goToOurs(_ footer: String) throws {
        let t = try Tools.get()
        let bin = try t.estargzBin()
        let s = try Scratch()
        defer { s.remove() }
        let layer = try genLayer(t, s, seed: 7)
        var blob = s.sub("go.blob")
        let digest = try goBuild(t, layer.tar, blob)
        if footer == "legacy" {
            let l = s.sub("go-legacy.blob")
            try must(t.refBin, ["legacy", blob, l], "estargz-ref legacy")
            blob = l
        }
        let what = "Go -> ours [\(footer) footer]"
        try must(bin, ["verify", blob, "--toc-digest", digest], "\(what): estargz verify --toc-digest")
        try must(bin, ["verify", blob], "\(what): estargz verify (no digest)")

        let ours = try s.mkdir("ours"), ref = try s.mkdir("ref")
        try must(bin, ["extract", blob, ours, "--toc-digest", digest], "\(what): estargz extract")
        try tarExtract(t, layer.tar, ref)
        try compareTrees(t, ref, ours, tar: layer.tar, "\(what): tar -x vs estargz extract")

        // ls --json names vs the Go dump.
        let dump = try jsonLines(try must(t.refBin, ["dump", blob, "-toc-digest", digest], "estargz-ref dump").stdout, "dump")
        let ls = try jsonLines(try must(bin, ["ls", blob, "--json"], "\(what): estargz ls --json").stdout, "estargz ls --json")
        try checkLsAgainstDump(ls: ls, dump: dump, implicit: Set(try implicitDirs(t, layer.tar)), what)

        // cat.
        for p in ["etc/hostname", "data/multi_chunk", "/data/multi_chunk", "data/size_0", "data/exact_chunk",
                  "data/chunk_plus_one", "links/hl_other_dir", "spaces and ünïcödé/日本語ファイル", "dup/file",
                  "dotslash/file"] {
            let r = try must(bin, ["cat", blob, p], "\(what): estargz cat \(p)")
            let clean = p.hasPrefix("/") ? String(p.dropFirst()) : p
            let want = try Data(contentsOf: URL(fileURLWithPath: ref + "/" + clean))
            #expect(r.stdout == want, "\(what): estargz cat \(p): \(r.stdout.count) bytes, want \(want.count) (content differs)")
        }
    }

    func checkLsAgainstDump(ls: [[String: Any]], dump: [[String: Any]], implicit: Set<String>, _ what: String) throws {
        var lsTypes: [String: String] = [:]
        for o in ls {
            guard let n = o["name"] as? String, let ty = o["type"] as? String else {
                throw InteropError("\(what): estargz ls --json line lacks \"name\"/\"type\": \(o)")
            }
            lsTypes[n.hasSuffix("/") ? String(n.dropLast()) : n] = ty
        }
        var dumpTypes: [String: String] = [:]
        for o in dump { dumpTypes[o["name"] as! String] = (o["type"] as! String) }
        let missing = Set(dumpTypes.keys).subtracting(implicit).subtracting(lsTypes.keys)
        let extra = Set(lsTypes.keys).subtracting(dumpTypes.keys)
        #expect(missing.isEmpty, "\(what): estargz ls lacks names the Go reader lists: \(missing.sorted().prefix(30))")
        #expect(extra.isEmpty, "\(what): estargz ls lists names the Go reader does not: \(extra.sorted().prefix(30))")
        for (n, ty) in lsTypes {
            if let g = dumpTypes[n], ty != "hardlink", ty != g {
                Issue.record("\(what): \(n): estargz ls type \(ty), Go reader type \(g)")
            }
        }
    }

    // c. ours -> tar -x equivalence.
    @Test("c: estargz extract of our blob equals tar -x of the source", arguments: [false, true])
    func oursExtractEqualsTar(_ gnu: Bool) throws {
        let t = try Tools.get()
        let bin = try t.estargzBin()
        let s = try Scratch()
        defer { s.remove() }
        let layer = try genLayer(t, s, chunkSize: 65536, seed: 9, gnu: gnu)
        let blob = s.sub("ours.blob")
        let digest = try oursConvert(t, layer.tar, blob, ["--chunk-size", "65536"])
        let ours = try s.mkdir("ours"), ref = try s.mkdir("ref")
        try must(bin, ["extract", blob, ours, "--toc-digest", digest], "estargz extract (our blob)")
        try tarExtract(t, layer.tar, ref)
        try compareTrees(t, ref, ours, tar: layer.tar, "ours -> tar -x [\(gnu ? "gnu" : "pax")]")
    }

    // d. Negative: corruption and wrong digests.
    @Test("d: flipped byte in a chunk / wrong TOC digest are detected")
    func corruption() throws {
        let t = try Tools.get()
        let bin = try t.estargzBin()
        let s = try Scratch()
        defer { s.remove() }
        let layer = try genLayer(t, s, chunkSize: 65536, seed: 11)
        let blob = s.sub("go.blob")
        let digest = try goBuild(t, layer.tar, blob, ["-chunk-size", "65536"])

        // Wrong TOC digest on an intact blob.
        let wrong = "sha256:" + String(repeating: "0", count: 64)
        let w = try run(bin, ["verify", blob, "--toc-digest", wrong])
        #expect(w.status != 0, "estargz verify --toc-digest <wrong> must fail\n\(describe(w, "verify"))")
        try must(bin, ["verify", blob, "--toc-digest", digest], "estargz verify of the intact blob")

        // Flip a byte in the middle of data/size_513's compressed chunk.
        let victim = "data/size_513"
        let ents = try tocOrder(t, blob)
        guard let e = ents.first(where: { ($0["name"] as? String) == victim && ($0["type"] as? String) == "reg" }),
              let off = e["offset"] as? Int, let next = e["nextOffset"] as? Int, next > off + 40 else {
            throw InteropError("no usable TOC entry for \(victim)")
        }
        var data = try Data(contentsOf: URL(fileURLWithPath: blob))
        let pos = off + (next - off) / 2
        data[pos] ^= 0x55
        let bad = s.sub("corrupt.blob")
        try data.write(to: URL(fileURLWithPath: bad))
        // The reference must reject it too (validates the corruption).
        let g = try run(t.refBin, ["dump", bad, "-toc-digest", digest])
        #expect(g.status != 0, "reference reader accepted the corrupted blob (test setup problem)")

        let v = try run(bin, ["verify", bad, "--toc-digest", digest])
        #expect(v.status != 0, "estargz verify accepted a blob with a flipped byte in \(victim)\n\(describe(v, "verify"))")
        #expect(v.stderr.contains(victim), "estargz verify's stderr should name \(victim)\n\(describe(v, "verify"))")
        let c = try run(bin, ["cat", bad, victim])
        #expect(c.status != 0, "estargz cat of the corrupted \(victim) must fail (got \(c.stdout.count) bytes)")
        let ok = try must(bin, ["cat", bad, "etc/hostname"], "estargz cat of an intact file in a corrupted blob")
        #expect(ok.stdoutString == "interop\n")
    }

    // e. Hostile archives: nothing may be written outside DIR.
    @Test("e: extract refuses to write outside DIR", arguments: ["dotdot", "abs-symlink", "tmp-symlink", "rel-symlink", "hardlink-escape"])
    func hostile(_ kind: String) throws {
        let t = try Tools.get()
        let bin = try t.estargzBin()
        let s = try Scratch()
        defer { s.remove() }
        let escape = try s.mkdir("escape")
        let victim = escape + "/victim.txt"
        try "precious\n".write(toFile: victim, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: victim)
        let tmpName = "estargz-interop-\(UUID().uuidString)"
        let tarPath = s.sub("hostile.tar")
        try t.py("gen_hostile.py", [tarPath, kind, escape, tmpName], "gen_hostile.py")
        defer { try? FileManager.default.removeItem(atPath: "/tmp/" + tmpName) }

        // The CLI must extract a benign archive, or "nothing was written" proves nothing.
        let benignTar = s.sub("benign.tar")
        try t.py("gen_hostile.py", [benignTar, "benign", escape, tmpName], "gen_hostile.py benign")
        let benignBlob = s.sub("benign.blob")
        _ = try goBuild(t, benignTar, benignBlob)
        let benignDir = try s.mkdir("benign-out")
        try must(bin, ["extract", benignBlob, benignDir], "[\(kind)] estargz extract of a benign archive")
        let okText = try? String(contentsOfFile: benignDir + "/ok.txt", encoding: .utf8)
        #expect(okText == "ok\n", "[\(kind)] estargz extract of a benign archive did not produce ok.txt")

        var blobs: [(String, String)] = []
        let goBlob = s.sub("go.blob")
        blobs.append(("Go-built", goBlob))
        _ = try goBuild(t, tarPath, goBlob)
        let oursBlob = s.sub("ours.blob")
        let conv = try run(bin, ["convert", tarPath, oursBlob, "--json"])
        if conv.status == 0 { blobs.append(("ours", oursBlob)) }  // refusing to convert is fine too

        for (label, blob) in blobs {
            let parent = try s.mkdir("x-\(label)/a/b")
            let dir = parent + "/out"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let before = try snapshot(s.path, excluding: dir)
            let r = try run(bin, ["extract", blob, dir])
            let after = try snapshot(s.path, excluding: dir)
            #expect(before == after, "[\(kind), \(label) blob] extract wrote outside DIR: \(after.subtracting(before).sorted())\n\(describe(r, "extract"))")
            let victimText = try? String(contentsOfFile: victim, encoding: .utf8)
            let victimLinks = (try? FileManager.default.attributesOfItem(atPath: victim)[.referenceCount] as? Int) ?? nil
            let victimMode = (try? FileManager.default.attributesOfItem(atPath: victim)[.posixPermissions] as? Int) ?? nil
            #expect(victimText == "precious\n" && victimLinks == 1 && victimMode == 0o644,
                    "[\(kind), \(label) blob] extract modified or hardlinked \(victim) outside DIR (links: \(victimLinks.map(String.init) ?? "?"), mode: \(victimMode.map { String($0, radix: 8) } ?? "?"))")
            #expect(!FileManager.default.fileExists(atPath: "/tmp/" + tmpName),
                    "[\(kind), \(label) blob] extract created /tmp/\(tmpName)")
            #expect(r.status != 0 || !r.stderr.isEmpty,
                    "[\(kind), \(label) blob] extract of a hostile archive neither failed nor reported an error")
        }
    }

    func snapshot(_ root: String, excluding: String) throws -> Set<String> {
        var out: Set<String> = []
        let fm = FileManager.default
        func walk(_ p: String) {
            if p == excluding { return }
            out.insert(p)
            var isDir: ObjCBool = false
            // Do not follow symlinks.
            if let a = try? fm.attributesOfItem(atPath: p), a[.type] as? FileAttributeType == .typeDirectory,
               fm.fileExists(atPath: p, isDirectory: &isDir), isDir.boolValue {
                for c in (try? fm.contentsOfDirectory(atPath: p)) ?? [] { walk(p + "/" + c) }
            }
        }
        walk(root)
        return out
    }
}
