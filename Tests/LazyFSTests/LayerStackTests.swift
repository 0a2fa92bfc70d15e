import EStargzCore
import LazyFS
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Three layers exercising every stacking rule: changed files and directory metadata, a removed
/// file, a removed directory, a whited-out hardlink name, opaque directories (over a lower
/// directory and with none below), and file ↔ directory replacements.
enum LayerStack {
    enum Op {
        case directory(String, mode: Int64, mtime: Int64, opaque: Bool = false)
        case file(String, String, mode: Int64 = 0o644, mtime: Int64)
        case symlink(String, target: String, mtime: Int64)
        case hardlink(String, target: String)
        case whiteout(String, mtime: Int64)
    }

    /// How a layer's tar marks deletions: OCI `.wh.` files, or overlayfs char 0/0 devices and
    /// `trusted.overlay.opaque=y` (what overlayfs wants in an extracted lower directory).
    enum Style { case oci, overlay }

    static let layers: [[Op]] = [
        [
            .directory("a", mode: 0o755, mtime: 1_600_000_100),
            .file("a/f1", "one", mtime: 1_600_000_101),
            .file("a/f2", "two", mtime: 1_600_000_102),
            .directory("a/sub", mode: 0o755, mtime: 1_600_000_110),
            .file("a/sub/x", "x", mtime: 1_600_000_111),
            .directory("b", mode: 0o755, mtime: 1_600_000_200),
            .file("b/keep", "keep", mtime: 1_600_000_201),
            .file("b/gone", "gone", mtime: 1_600_000_202),
            .directory("c", mode: 0o755, mtime: 1_600_000_300),
            .file("c/old1", "old1", mtime: 1_600_000_301),
            .file("c/old2", "old2", mtime: 1_600_000_302),
            .directory("d", mode: 0o755, mtime: 1_600_000_400),
            .file("d/inside", "inside", mtime: 1_600_000_401),
            .file("top.txt", "v1", mtime: 1_600_000_500),
            .file("h1", "linked", mode: 0o600, mtime: 1_600_000_600),
            .hardlink("h2", target: "h1"),
            .symlink("link", target: "a/f1", mtime: 1_600_000_700),
        ],
        [
            .directory("a", mode: 0o750, mtime: 1_600_001_100),
            .file("a/f1", "one, version two", mode: 0o600, mtime: 1_600_001_101),
            .directory("b", mode: 0o755, mtime: 1_600_001_200),
            .whiteout("b/gone", mtime: 1_600_001_201),
            .directory("c", mode: 0o711, mtime: 1_600_001_300, opaque: true),
            .file("c/new", "new", mtime: 1_600_001_301),
            .directory("top.txt", mode: 0o755, mtime: 1_600_001_500),
            .file("top.txt/inner", "inner", mtime: 1_600_001_501),
            .whiteout("h2", mtime: 1_600_001_600),
            .directory("e", mode: 0o755, mtime: 1_600_001_700),
            .directory("e/deep", mode: 0o755, mtime: 1_600_001_710),
            .file("e/deep/file", "deep", mtime: 1_600_001_711),
        ],
        [
            .directory("a", mode: 0o750, mtime: 1_600_002_100),
            .whiteout("a/sub", mtime: 1_600_002_101),
            .directory("a/sub2", mode: 0o755, mtime: 1_600_002_110),
            .file("a/sub2/y", "y", mtime: 1_600_002_111),
            .file("d", "d is a file now", mtime: 1_600_002_400),
            .whiteout("link", mtime: 1_600_002_700),
            .symlink("link2", target: "top.txt/inner", mtime: 1_600_002_701),
            .directory("f", mode: 0o755, mtime: 1_600_002_800, opaque: true),
            .file("f/only", "only", mtime: 1_600_002_801),
        ],
    ]

    static func tar(_ ops: [Op], style: Style) throws -> [UInt8] {
        var b = TarBuilder()
        try b.append(header("./", .directory, mode: 0o755, mtime: 1_600_000_000))
        for op in ops {
            switch op {
            case let .directory(path, mode, mtime, opaque):
                var h = header(path + "/", .directory, mode: mode, mtime: mtime)
                if opaque && style == .overlay { h.xattrs = ["trusted.overlay.opaque": Array("y".utf8)] }
                try b.append(h)
                if opaque && style == .oci { try b.append(header(path + "/.wh..wh..opq", .regular, mtime: mtime)) }
            case let .file(path, content, mode, mtime):
                try b.append(header(path, .regular, mode: mode, mtime: mtime), content: Array(content.utf8))
            case let .symlink(path, target, mtime):
                var h = header(path, .symlink, mode: 0o777, mtime: mtime)
                h.linkName = target
                try b.append(h)
            case let .hardlink(path, target):
                var h = header(path, .hardlink, mode: 0o600, mtime: 1_600_000_600)
                h.linkName = target
                try b.append(h)
            case let .whiteout(path, mtime):
                if style == .oci {
                    let slash = path.lastIndex(of: "/")
                    let parent = slash.map { String(path[...$0]) } ?? ""
                    let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
                    try b.append(header(parent + ".wh." + name, .regular, mtime: mtime))
                } else {
                    try b.append(header(path, .characterDevice, mode: 0, mtime: mtime))
                }
            }
        }
        return b.finish()
    }
}

@Suite(.serialized, .enabled(if: canMount, "needs root and /dev/fuse")) struct LayerStackTests {
    /// For the first two and all three layers: the kernel's overlayfs over `tar -x` of the
    /// overlay-style tars is the reference; our merged mount of the OCI-style blobs, and overlayfs
    /// over our one-layer-per-mount overlay mode, must both equal it.
    @Test(arguments: [2, 3]) func stacksMatchOverlayfs(layerCount: Int) throws {
        let dir = TemporaryDirectory()
        var blobs: [String] = []
        var extracted: [String] = []
        for (index, ops) in LayerStack.layers.prefix(layerCount).enumerated() {
            blobs.append(try convert(try LayerStack.tar(ops, style: .oci), in: dir, name: "oci\(index)"))
            try writeFile(dir.file("ovl\(index).tar"), try LayerStack.tar(ops, style: .overlay))
            extracted.append(dir.directory("ext\(index)"))
            #expect(extract(dir.file("ovl\(index).tar"), to: extracted[index]) == 0)
        }
        let reference = dir.directory("reference")
        #expect(shell("mount -t overlay overlay -o lowerdir=\(extracted.reversed().joined(separator: ":")) '\(reference)'") == 0)
        defer { shell("umount '\(reference)'") }

        // (a) one merged mount
        let merged = dir.directory("merged")
        try withMount(try fileSystem(blobs), at: merged) { _ in
            #expect(compareTrees(reference, merged) == 0)
            #expect(access(merged + "/b/gone", F_OK) != 0)
            #expect(access(merged + "/c/old1", F_OK) != 0)
            #expect(access(merged + "/b/.wh.gone", F_OK) != 0)
            #expect(access(merged + "/c/.wh..wh..opq", F_OK) != 0)
            var info = stat()
            #expect(lstat(merged + "/h1", &info) == 0)
            #expect(info.st_nlink == 1)  // the other name is whited out
        }

        // (b) one mount per layer in overlay mode, stacked by the kernel
        var layerMounts: [LazyMount] = []
        defer { layerMounts.forEach { $0.unmount() } }
        var lowers: [String] = []
        for (index, blob) in blobs.enumerated() {
            lowers.append(dir.directory("layer\(index)"))
            layerMounts.append(try fileSystem([blob], mode: .overlayLayer).mount(at: lowers[index]))
        }
        // Whiteouts as overlayfs wants them.
        var info = stat()
        #expect(lstat(lowers[1] + "/b/gone", &info) == 0)
        #expect(info.st_mode & 0o170000 == 0o020000 && info.st_rdev == 0)
        #expect(shell("python3 -c \"import os,sys; sys.exit(os.getxattr('\(lowers[1])/c', 'trusted.overlay.opaque') != b'y')\"") == 0)

        let stacked = dir.directory("stacked")
        #expect(shell("mount -t overlay overlay -o lowerdir=\(lowers.reversed().joined(separator: ":")) '\(stacked)'") == 0)
        defer { shell("umount '\(stacked)'") }
        #expect(compareTrees(reference, stacked) == 0)
    }
}
