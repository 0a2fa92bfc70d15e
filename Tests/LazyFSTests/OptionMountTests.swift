import EStargzCore
import EStargzRemote
import LazyFS
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `estargz mount`, `ls` and `cat` of images converted with the newer eStargz options: shared
/// members (`--estargz-min-chunk-size`) and an external TOC (`--estargz-external-toc`,
/// `--estargz-keep-diff-id`), found in the `-esgztoc` image with no flag. Real FUSE, real registry.
@Suite(.serialized, .enabled(if: canMount && access(estargzBinary, X_OK) == 0 && TestRegistry.available,
                             "needs root, /dev/fuse, the built CLI and docker-registry"))
struct OptionMountTests {
    @Test(.timeLimit(.minutes(1))) func mountsExternalTOCImageWithSharedMembers() throws {
        let dir = TemporaryDirectory()
        let registry = try TestRegistry()
        defer { registry.stop() }
        var tar = TarBuilder()
        try tar.append(header("./", .directory, mode: 0o755))
        var files: [String: [UInt8]] = [:]
        for i in 0 ..< 50 {
            let content = Array(String(repeating: "module \(i): some python source\n", count: 10 + i).utf8)
            files["lib/m\(i).py"] = content
            try tar.append(header("lib/m\(i).py", .regular), content: content)
        }
        let noise = noiseBytes(2 << 20, seed: 7)
        files["bin/tool"] = noise
        try tar.append(header("bin/tool", .regular, mode: 0o755), content: noise)
        try writeFile(dir.file("layer.tar"), tar.finish())
        #expect(shell("gzip -n -1 -c '\(dir.file("layer.tar"))' > '\(dir.file("layer.tar.gz"))'") == 0)
        try writeOCILayout(dir.file("oci"), tag: "v1", gzipLayers: [dir.file("layer.tar.gz")])
        let reference = "\(registry.host)/test/ext:v1"
        #expect(shell("'\(estargzBinary)' image convert 'oci:\(dir.file("oci")):v1' '\(reference)' --plain-http --chunk-size 262144 "
            + "--estargz-min-chunk-size 30000 --estargz-external-toc --estargz-keep-diff-id >'\(dir.file("convert.log"))' 2>&1") == 0)
        // --estargz-keep-diff-id alone is refused.
        #expect(shell("'\(estargzBinary)' image convert 'oci:\(dir.file("oci")):v1' '\(reference)x' --plain-http --estargz-keep-diff-id 2>/dev/null") != 0)

        // ls and cat by reference, no flag for the TOC image.
        let listing = dir.file("ls.txt")
        #expect(shell("'\(estargzBinary)' ls '\(reference)' --plain-http > '\(listing)' 2>'\(dir.file("ls.err"))'") == 0)
        let listed = String(decoding: try readFile(listing), as: UTF8.self)
        #expect(listed.contains("lib/m49.py") && listed.contains("bin/tool"))
        #expect(shell("'\(estargzBinary)' cat '\(reference)' lib/m7.py --plain-http > '\(dir.file("m7"))' 2>/dev/null") == 0)
        #expect(try readFile(dir.file("m7")) == files["lib/m7.py"])

        let mountpoint = dir.directory("mnt")
        let mount = try CLIMount("'\(reference)' '\(mountpoint)' --plain-http --stats '\(dir.file("stats.json"))'",
                                 mountpoint: mountpoint, log: dir.file("stderr"))
        #expect(eventually(20) { mount.mounted })
        for (path, content) in files.sorted(by: { $0.key < $1.key }) {
            #expect(readAll(mountpoint + "/" + path) == content, "\(path)")
        }
        #expect(mount.terminate())
        #expect(eventually { !mount.mounted && RegistryMountTests.statsWritten(dir.file("stats.json")) })
        let stats = String(decoding: try readFile(dir.file("stats.json")), as: UTF8.self)
        #expect(RegistryMountTests.number("verificationFailures", in: stats) == 0)

        // A TOC image that does not match the layer's toc.digest: mount refuses, naming the mismatch.
        #expect(shell("'\(estargzBinary)' image convert 'oci:\(dir.file("oci")):v1' '\(registry.host)/test/other:v1' --plain-http "
            + "--chunk-size 65536 --estargz-external-toc >/dev/null 2>&1") == 0)
        // Retag other's TOC image as ext's (same registry; the blobs are mounted across by the copy).
        #expect(shell("skopeo --insecure-policy copy --src-tls-verify=false --dest-tls-verify=false "
            + "'docker://\(registry.host)/test/other:v1-esgztoc' 'docker://\(registry.host)/test/ext:v1-esgztoc' >/dev/null 2>&1") == 0)
        let failed = dir.directory("mnt2")
        let status = shell("timeout 30 '\(estargzBinary)' mount '\(reference)' '\(failed)' --plain-http 2>'\(dir.file("bad.err"))'")
        #expect(status != 0)
        let message = String(decoding: try readFile(dir.file("bad.err")), as: UTF8.self)
        #expect(message.contains("no TOC for layer") || message.contains("TOC digest mismatch"), "\(message)")
        #expect(shell("grep -q ' \(failed) fuse' /proc/mounts") != 0)
    }

    /// A local blob with an external TOC: `ls`, `cat` and `verify` take the TOC file with its digest;
    /// without the file they refuse, and a registry image is told it needs no such flag.
    @Test func localBlobWithExternalTOCListsCatsAndVerifies() throws {
        let dir = TemporaryDirectory()
        var tar = TarBuilder()
        try tar.append(header("./", .directory, mode: 0o755))
        let content = Array(String(repeating: "external table of contents\n", count: 400).utf8)
        try tar.append(header("etc/motd", .regular), content: content)
        try writeFile(dir.file("layer.tar"), tar.finish())
        let blob = dir.file("layer.esgz"), toc = dir.file("layer.toc")
        let converted = try TestSupport.run(estargzBinary, ["convert", dir.file("layer.tar"), blob, "--estargz-external-toc", toc, "--json"])
        let digest = try #require(converted.split(separator: "\"").drop { $0 != "tocDigest" }.dropFirst(2).first.map(String.init))
        #expect(digest.hasPrefix("sha256:"))
        #expect(try TestSupport.run(estargzBinary, ["ls", blob, "--toc-digest", digest, "--external-toc", toc]).contains("etc/motd"))
        #expect(try TestSupport.run(estargzBinary, ["cat", blob, "etc/motd", "--toc-digest", digest, "--external-toc", toc])
                == String(decoding: content, as: UTF8.self))
        #expect(try TestSupport.run(estargzBinary, ["verify", blob, "--toc-digest", digest, "--external-toc", toc]).hasPrefix("OK"))
        #expect(shell("'\(estargzBinary)' ls '\(blob)' --toc-digest \(digest) >/dev/null 2>&1") != 0)
        #expect(shell("'\(estargzBinary)' cat 127.0.0.1:1/x:y etc/motd --external-toc '\(toc)' 2>'\(dir.file("err"))'") != 0)
        #expect(String(decoding: try readFile(dir.file("err")), as: UTF8.self).contains("--external-toc is for local blobs"))
    }

    /// A TOC (trusted by digest) whose `innerOffset` points past the end of its shared member: that
    /// file's reads are EIO through the FUSE mount, and the files around it read fine.
    @Test func innerOffsetOutsideItsMemberIsEIO() throws {
        let dir = TemporaryDirectory()
        var tar = TarBuilder()
        try tar.append(header("./", .directory, mode: 0o755))
        var files: [String: [UInt8]] = [:]
        for i in 0 ..< 20 {
            let content = Array(String(repeating: "row \(i)\n", count: 30 + i).utf8)
            files["f\(i)"] = content
            try tar.append(header("f\(i)", .regular), content: content)
        }
        try writeFile(dir.file("layer.tar"), tar.finish())
        var options = LayerWriter.Options()
        options.minimumChunkSize = 64 << 10
        options.externalTOC = true
        let result = try LayerWriter.convert(inputPath: dir.file("layer.tar"), outputPath: dir.file("layer.esgz"), options: options)
        // Unpack the external TOC, push one entry's innerOffset out of its member, pack it again.
        try writeFile(dir.file("toc.tar.gz"), try #require(result.externalTOC))
        #expect(shell("tar -xzf '\(dir.file("toc.tar.gz"))' -C '\(dir.directory("toc"))'") == 0)
        var toc = try TOCJSON.decode(try readFile(dir.file("toc/stargz.index.json")))
        let victim = try #require(toc.entries.firstIndex { $0.name == "f10" })
        #expect(toc.entries[victim].innerOffset > 0, "f10 shares a member")
        toc.entries[victim].innerOffset += 1 << 20
        let json = TOCJSON.encode(toc)
        var forged = TarBuilder()
        try forged.append(header("stargz.index.json", .regular), content: json)
        try writeFile(dir.file("forged.tar"), forged.finish())
        #expect(shell("gzip -n -c '\(dir.file("forged.tar"))' > '\(dir.file("forged.tar.gz"))'") == 0)
        let layer = try LayerReader(source: try FileSource(path: dir.file("layer.esgz")), tocDigest: SHA256Digest.of(json),
                                    externalTOC: try readFile(dir.file("forged.tar.gz")))
        let mountpoint = dir.directory("mnt")
        try withMount(try LazyFileSystem(layers: [layer]), at: mountpoint) { _ in
            #expect(readRange(mountpoint + "/f10", offset: 0, count: 100) == .failure(Errno(EIO)))
            #expect(readRange(mountpoint + "/f10", offset: 0, count: 100) == .failure(Errno(EIO)), "nothing unverified was cached")
            for name in ["f9", "f11", "f0", "f19"] {
                let content = files[name]!
                #expect(readRange(mountpoint + "/" + name, offset: 0, count: content.count + 1) == .success(content), "\(name)")
            }
        }
    }
}
