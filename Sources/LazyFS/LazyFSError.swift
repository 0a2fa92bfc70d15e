/// What can go wrong setting up or tearing down a lazy mount. Failures of single reads
/// are not errors of this kind: they become `EIO` for that read and a log line.
public enum LazyFSError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The layers or options cannot make a file system (e.g. overlay mode with two layers).
    case invalidConfiguration(String)
    /// A libfuse or system call failed while mounting or unmounting `mountpoint`.
    case mountFailed(mountpoint: String, operation: String, errno: Int32)

    public var description: String {
        switch self {
        case let .invalidConfiguration(reason):
            return "invalid lazy file system configuration: \(reason)"
        case let .mountFailed(mountpoint, operation, errno):
            return "\(operation) failed for mountpoint \(mountpoint): \(String(cString: strerror(errno))) (errno \(errno))"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
