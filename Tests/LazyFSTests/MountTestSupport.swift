import EStargzCore
import LazyFS
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A temporary directory removed (after unmounting anything left below it) when dropped.
final class TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/lazyfs-test-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    deinit {
        // A failed test must not leave a mount behind that `rm -rf` would descend into.
        _ = system("grep -o ' \(path)[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null; rm -rf '\(path)'")
    }

    func file(_ name: String) -> String { path + "/" + name }

    /// Creates and returns the subdirectory `name`.
    func directory(_ name: String) -> String {
        mkdir(file(name), 0o755)
        return file(name)
    }
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw EStargzError.io(operation: "create", path: path, errno: errno) }
    defer { close(fd) }
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        guard n > 0 else { throw EStargzError.io(operation: "write", path: path, errno: errno) }
        done += n
    }
}

func readFile(_ path: String) throws -> [UInt8] {
    let source = try FileSource(path: path)
    return try source.read(at: 0, count: Int(source.size))
}

/// Deterministic pseudo-random bytes, half of them compressible text.
func testBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var out = [UInt8](repeating: 0, count: count)
    for i in 0 ..< count {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        out[i] = (i / 4096) % 2 == 0 ? UInt8(truncatingIfNeeded: state) : UInt8(ascii: "a") + UInt8(state % 26)
    }
    return out
}

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

/// Runs a shell command; returns its exit status.
@discardableResult
func shell(_ command: String) -> Int32 {
    let status = system(command)
    return status == -1 ? -1 : (status >> 8) & 0xff
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
