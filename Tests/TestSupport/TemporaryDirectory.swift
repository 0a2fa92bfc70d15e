#if canImport(Glibc)
import Glibc
#endif

/// A temporary directory under /tmp, removed by ``remove()`` or when the last reference goes —
/// after lazily unmounting anything a failed test left mounted below it, so `rm -rf` never
/// descends into a mount.
public final class TemporaryDirectory: Sendable {
    /// The directory's absolute path.
    public let path: String

    /// Creates `/tmp/PREFIX-XXXXXX`.
    public init(prefix: String = "estargz-test") {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    deinit { remove() }

    /// The path of `name` inside the directory (nothing is created).
    public func file(_ name: String) -> String { path + "/" + name }

    /// Creates and returns the subdirectory `name`.
    public func directory(_ name: String) -> String {
        mkdir(file(name), 0o755)
        return file(name)
    }

    /// Unmounts whatever is mounted below the directory and removes it; safe to call twice.
    public func remove() {
        _ = system("grep -o ' \(path)[^ ]*' /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null; rm -rf '\(path)'")
    }
}
