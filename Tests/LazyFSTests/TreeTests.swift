import EStargzCore
import LazyFS
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A layer with one of everything a TOC can describe.
enum SampleLayer {
    static let big = testBytes(300_000, seed: 7)  // several 64 KiB chunks

    static func tar() throws -> [UInt8] {
        var b = TarBuilder()
        func add(_ h: TarHeader, _ content: [UInt8] = []) throws { try b.append(h, content: content) }
        try add(header("./", .directory, mode: 0o755, mtime: 1_600_000_000))
        try add(header("etc/", .directory, mode: 0o755, mtime: 1_600_000_100))
        try add(header("etc/passwd", .regular, mtime: 1_600_000_001), Array("root:x:0:0:root:/root:/bin/sh\n".utf8))
        var shadow = header("etc/shadow", .regular, mode: 0o640, mtime: 1_600_000_002)
        shadow.gid = 42
        try add(shadow, Array("root:*:19000::::::\n".utf8))
        try add(header("bin/", .directory, mode: 0o755, mtime: 1_600_000_200))
        var tool = header("bin/tool", .regular, mode: 0o4755, mtime: 1_600_000_003)
        tool.uid = 1000
        tool.gid = 1001
        try add(tool, testBytes(5000, seed: 3))
        var hard = header("bin/tool-hardlink", .hardlink, mode: 0o4755, mtime: 1_600_000_003)
        hard.linkName = "bin/tool"
        try add(hard)
        try add(header("usr/", .directory, mode: 0o755, mtime: 1_600_000_300))
        try add(header("usr/lib/", .directory, mode: 0o700, mtime: 1_600_000_301))
        try add(header("usr/lib/big.bin", .regular, mode: 0o600, mtime: 1_600_000_004), big)
        try add(header("usr/lib/empty", .regular, mtime: 1_600_000_005))
        // Kept inside the directory tar is extracting (GNU tar sets a directory's mtime when it leaves it).
        var hard2 = header("usr/lib/tool-again", .hardlink, mode: 0o4755, mtime: 1_600_000_003)
        hard2.linkName = "bin/tool"
        try add(hard2)
        var link = header("usr/lib/passwd-link", .symlink, mode: 0o777, mtime: 1_600_000_006)
        link.linkName = "../../etc/passwd"
        try add(link)
        try add(header("dev/", .directory, mode: 0o755, mtime: 1_600_000_400))
        var null = header("dev/null", .characterDevice, mode: 0o666, mtime: 1_600_000_007)
        null.devMajor = 1
        null.devMinor = 3
        try add(null)
        var disk = header("dev/sda", .blockDevice, mode: 0o660, mtime: 1_600_000_008)
        disk.devMajor = 8
        disk.devMinor = 0
        disk.gid = 6
        try add(disk)
        try add(header("dev/pipe", .fifo, mode: 0o600, mtime: 1_600_000_009))
        try add(header("tmp/", .directory, mode: 0o1777, mtime: 1_600_000_500))
        var attributed = header("xattr.txt", .regular, mtime: 1_600_000_010)
        attributed.xattrs = ["user.greeting": Array("hello".utf8), "trusted.secret": [0, 1, 2, 255], "user.empty": []]
        try add(attributed, Array("has xattrs\n".utf8))
        var attributedDirectory = header("xdir/", .directory, mode: 0o750, mtime: 1_600_000_600)
        attributedDirectory.xattrs = ["user.dir": Array("yes".utf8)]
        attributedDirectory.uid = 33
        attributedDirectory.gid = 33
        try add(attributedDirectory)
        try add(header("xdir/setgid", .regular, mode: 0o2755, mtime: 1_600_000_011), Array("g".utf8))
        return b.finish()
    }
}

@Suite(.serialized, .enabled(if: canMount, "needs root and /dev/fuse")) struct TreeTests {
    @Test func mountedTreeEqualsTarExtraction() throws {
        let dir = TemporaryDirectory()
        let blob = try convert(try SampleLayer.tar(), in: dir, name: "layer", prioritized: ["etc/passwd"])
        let extracted = dir.directory("extracted")
        #expect(extract(dir.file("layer.tar"), to: extracted) == 0)
        let mountpoint = dir.directory("mnt")
        try withMount(try fileSystem([blob]), at: mountpoint) { mount in
            #expect(compareTrees(extracted, mountpoint) == 0)
            // Root metadata and link counts, which the comparison leaves out.
            var info = stat()
            #expect(lstat(mountpoint, &info) == 0)
            #expect(info.st_mode & 0o7777 == 0o755)
            #expect(info.st_mtim.tv_sec == 1_600_000_000)
            #expect(lstat(mountpoint + "/bin/tool", &info) == 0)
            #expect(info.st_nlink == 3)
            var other = stat()
            #expect(lstat(mountpoint + "/usr/lib/tool-again", &other) == 0)
            #expect(other.st_ino == info.st_ino)
            #expect(lstat(mountpoint + "/usr", &info) == 0)
            #expect(info.st_nlink == 3)
            // Large reads: one read(2) of the whole big file comes back complete and right.
            let big = try readFile(mountpoint + "/usr/lib/big.bin")
            #expect(big == SampleLayer.big)
            #expect(mount.statistics.chunksVerified > 0)
            // Read-only: writing is refused.
            #expect(open(mountpoint + "/etc/passwd", O_WRONLY) == -1)
            #expect(mkdir(mountpoint + "/new", 0o755) == -1)
        }
    }

    @Test func inodeNumbersAreStableAcrossMounts() throws {
        let dir = TemporaryDirectory()
        let blob = try convert(try SampleLayer.tar(), in: dir, name: "layer")
        let mountpoint = dir.directory("mnt")
        func inodes() throws -> [UInt] {
            try withMount(try fileSystem([blob]), at: mountpoint) { _ in
                ["etc/passwd", "usr/lib/big.bin", "dev/null", "xdir"].map { path -> UInt in
                    var info = stat()
                    return lstat(mountpoint + "/" + path, &info) == 0 ? info.st_ino : 0
                }
            }
        }
        let first = try inodes()
        #expect(!first.contains(0))
        #expect(try inodes() == first)
    }

    /// A directory far larger than one readdir buffer lists completely, each name once, in both
    /// readdir and readdirplus (the kernel picks; `ls -f` and a stat-ing walk ask for each).
    @Test func largeDirectoryListsEveryEntryOnce() throws {
        var b = TarBuilder()
        try b.append(header("./", .directory, mode: 0o755))
        try b.append(header("many/", .directory, mode: 0o755))
        for index in 0 ..< 3000 {
            try b.append(header("many/entry-with-a-longish-name-\(index)", .regular), content: index % 100 == 0 ? [UInt8(index % 256)] : [])
        }
        let dir = TemporaryDirectory()
        let blob = try convert(b.finish(), in: dir, name: "layer")
        let extracted = dir.directory("extracted")
        #expect(extract(dir.file("layer.tar"), to: extracted) == 0)
        let mountpoint = dir.directory("mnt")
        try withMount(try fileSystem([blob]), at: mountpoint) { _ in
            #expect(shell("test $(ls -f '\(mountpoint)/many' | sort -u | wc -l) -eq 3002") == 0)
            #expect(compareTrees(extracted, mountpoint) == 0)
        }
    }

    /// A symlink stats as 0777 (`lrwxrwxrwx`) whatever its tar header mode, as `tar -x` and overlayfs show it,
    /// in both the merged and the overlay-layer trees.
    @Test func symlinksStatAs0777WhateverTheirHeaderMode() throws {
        var b = TarBuilder()
        try b.append(header("./", .directory, mode: 0o755))
        try b.append(header("target", .regular, mode: 0o600), content: Array("t".utf8))
        for (name, mode) in [("link-644", 0o644), ("link-0", 0), ("link-777", 0o777)] as [(String, Int64)] {
            var link = header(name, .symlink, mode: mode)
            link.linkName = "target"
            try b.append(link)
        }
        let dir = TemporaryDirectory()
        let blob = try convert(b.finish(), in: dir, name: "layer")
        let extracted = dir.directory("extracted")
        #expect(extract(dir.file("layer.tar"), to: extracted) == 0)
        for mode in [LazyFileSystem.Mode.merged, .overlayLayer] {
            let mountpoint = dir.directory("mnt-\(mode)")
            try withMount(try fileSystem([blob], mode: mode), at: mountpoint) { _ in
                for name in ["link-644", "link-0", "link-777"] {
                    var mounted = stat(), reference = stat()
                    #expect(lstat(mountpoint + "/" + name, &mounted) == 0)
                    #expect(lstat(extracted + "/" + name, &reference) == 0)
                    #expect(mounted.st_mode == S_IFLNK | 0o777, "\(name) in \(mode)")
                    #expect(mounted.st_mode == reference.st_mode, "\(name): the mount and tar -x agree")
                }
                var target = stat()
                #expect(lstat(mountpoint + "/target", &target) == 0)
                #expect(target.st_mode == S_IFREG | 0o600)
                #expect(shell("test \"$(stat -c %A '\(mountpoint)/link-644')\" = lrwxrwxrwx") == 0)
            }
        }
    }
}
