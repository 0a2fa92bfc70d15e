/// Why a snapshot operation failed, in the categories containerd maps to gRPC codes.
public enum SnapshotterError: Error, Sendable, Equatable, CustomStringConvertible {
    case notFound(String)
    case alreadyExists(String)
    case failedPrecondition(String)
    case invalidArgument(String)
    case `internal`(String)

    public var description: String {
        switch self {
        case let .notFound(what): return "snapshot \(what): not found"
        case let .alreadyExists(what): return "snapshot \(what): already exists"
        case let .failedPrecondition(why): return "failed precondition: \(why)"
        case let .invalidArgument(why): return "invalid argument: \(why)"
        case let .internal(why): return "internal error: \(why)"
        }
    }
}
