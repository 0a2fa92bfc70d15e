import EStargzCore
import LazyFS
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

func header(_ name: String, _ kind: TarHeader.Kind, mode: Int64 = 0o644, mtime: Int64 = 1_700_000_000) -> TarHeader {
    var h = TarHeader(name: name, kind: kind, size: 0, mode: mode)
    h.modificationTime = TarTimestamp(seconds: mtime)
    return h
}

/// Writes `tar` to DIR/NAME.tar and converts it to DIR/NAME.esgz; returns the blob's path.
@discardableResult
func convert(_ tar: [UInt8], in dir: TemporaryDirectory, name: String, chunkSize: Int = 64 << 10,
             prioritized: [String] = []) throws -> String {
    var options = LayerWriter.Options()
    options.chunkSize = chunkSize
    options.prioritizedFiles = prioritized
    try writeFile(dir.file(name + ".tar"), tar)
    _ = try LayerWriter.convert(inputPath: dir.file(name + ".tar"), outputPath: dir.file(name + ".esgz"), options: options)
    return dir.file(name + ".esgz")
}

/// `tar -x` as root keeps owners, modes, xattrs and devices: the reference tree.
func extract(_ tarPath: String, to directory: String) -> Int32 {
    shell("tar -x --numeric-owner --xattrs --xattrs-include='*' -p -f '\(tarPath)' -C '\(directory)'")
}

let repositoryRoot: String = {
    var path = #filePath
    for _ in 0 ..< 3 { path = String(path[..<path.lastIndex(of: "/")!]) }
    return path
}()

/// `compare_trees.py A B --mtime-round`; 0 when the trees are the same.
func compareTrees(_ a: String, _ b: String) -> Int32 {
    shell("python3 '\(repositoryRoot)/Tests/Interop/compare_trees.py' '\(a)' '\(b)' --mtime-round")
}

/// Mounts `fs` at `mountpoint`, runs `body`, and always unmounts, also when `body` throws.
func withMount<T>(_ fs: LazyFileSystem, at mountpoint: String, _ body: (LazyMount) throws -> T) throws -> T {
    let mount = try fs.mount(at: mountpoint)
    defer { mount.unmount() }
    return try body(mount)
}

/// Opens blobs as one merged (or overlay-layer) file system with a fresh cache.
func fileSystem(_ blobs: [String], mode: LazyFileSystem.Mode = .merged,
                configure: (inout LazyFileSystem.Options) -> Void = { _ in }) throws -> LazyFileSystem {
    var options = LazyFileSystem.Options()
    configure(&options)
    return try LazyFileSystem(sources: try blobs.map { try FileSource(path: $0) }, mode: mode, options: options)
}

/// `pread` of the whole range, or the errno it failed with.
/// `direct` bypasses the page cache (O_DIRECT, whose name Glibc hides), so every read reaches the file system.
func readRange(_ path: String, offset: Int, count: Int, direct: Bool = false) -> Result<[UInt8], Errno> {
    let fd = open(path, O_RDONLY | (direct ? oDirect : 0))
    guard fd >= 0 else { return .failure(Errno(errno)) }
    defer { close(fd) }
    var out = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
        if n < 0 { return .failure(Errno(errno)) }
        if n == 0 { break }
        done += n
    }
    return .success(Array(out[0 ..< done]))
}

struct Errno: Error, Equatable {
    let code: Int32
    init(_ code: Int32) { self.code = code }
}

/// Real mounts (and kernel overlayfs) need root and a FUSE device; elsewhere the suites are skipped, visibly.
let canMount = geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0

#if arch(x86_64)
let oDirect: Int32 = 0o40000
#else
let oDirect: Int32 = 0o200000  // arm64
#endif
