#if canImport(Glibc)
import Glibc
#endif

/// Benchmark input: `count` bytes of what container layers hold, read at run time from the
/// machine's shared libraries (2/3) and documentation (1/3), repeated if the machine has too few.
public func layerLikeBytes(_ count: Int) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(count)
    for (directory, share) in [("/usr/lib/x86_64-linux-gnu", count * 2 / 3), ("/usr/share/doc", count)] {
        guard let dir = opendir(directory) else { continue }
        defer { closedir(dir) }
        while out.count < share, let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard !name.hasPrefix(".") else { continue }
            let path = directory + "/" + name
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_size > 0 else { continue }
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { continue }
            let want = min(Int(info.st_size), share - out.count)
            let old = out.count
            out += [UInt8](repeating: 0, count: want)
            let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + old, want) }
            out.removeLast(want - max(0, n))
            close(fd)
        }
    }
    if out.isEmpty { out = (0 ..< 4096).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 3) } }
    while out.count < count { out += out.prefix(count - out.count) }
    return Array(out.prefix(count))
}
