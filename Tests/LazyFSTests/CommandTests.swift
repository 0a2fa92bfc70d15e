import EStargzCore
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The `estargz` binary next to the test bundle (built by `swift build --build-tests`).
let estargzBinary = repositoryRoot + "/.build/debug/estargz"

/// Polls `condition` every 50 ms for up to `seconds`.
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    for _ in 0 ..< Int(seconds * 20) {
        if condition() { return true }
        usleep(50_000)
    }
    return condition()
}

@Suite(.serialized, .enabled(if: canMount && access(estargzBinary, X_OK) == 0, "needs root, /dev/fuse and the built CLI"))
struct CommandTests {
    /// `estargz mount A B MNT` merges two layers, serves until SIGTERM, then unmounts and writes its stats.
    @Test func mountCommandServesUntilSIGTERM() throws {
        let dir = TemporaryDirectory()
        let lower = try convert(try LayerStack.tar(LayerStack.layers[0], style: .oci), in: dir, name: "lower")
        let upper = try convert(try LayerStack.tar(LayerStack.layers[1], style: .oci), in: dir, name: "upper")
        let mountpoint = dir.directory("mnt")
        let mounted = { shell("grep -q ' \(mountpoint) fuse' /proc/mounts") == 0 }
        #expect(shell("'\(estargzBinary)' mount '\(lower)' '\(upper)' '\(mountpoint)' --stats '\(dir.file("stats.json"))' --record-access '\(dir.file("access"))' 2>'\(dir.file("stderr"))' & echo $! > '\(dir.file("pid"))'") == 0)
        let pid = String(decoding: try readFile(dir.file("pid")), as: UTF8.self).trimmingCharacters()
        defer { shell("kill -9 \(pid) 2>/dev/null; umount -l '\(mountpoint)' 2>/dev/null") }
        #expect(eventually { mounted() })
        #expect(readRange(mountpoint + "/a/f1", offset: 0, count: 100) == .success(Array("one, version two".utf8)))
        #expect(access(mountpoint + "/b/gone", F_OK) != 0)
        #expect(shell("kill -TERM \(pid)") == 0)
        #expect(eventually { !mounted() && access(dir.file("stats.json"), F_OK) == 0 })
        // The process exited (gone, or a zombie waiting for whoever adopted it to reap it).
        #expect(eventually { shell("test ! -e /proc/\(pid) || grep -q ') Z' /proc/\(pid)/stat") == 0 })
        let stats = String(decoding: try readFile(dir.file("stats.json")), as: UTF8.self)
        #expect(stats.contains("\"chunksVerified\":1,"))
        #expect(String(decoding: try readFile(dir.file("access")), as: UTF8.self) == "a/f1\n")
    }
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while let c = s.last, c == "\n" || c == " " { s.removeLast() }
        return String(s)
    }
}
