/// What went wrong talking to a registry, with enough context to act on.
public enum RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The text is not `[host[:port]/]repository[:tag][@digest]`.
    case invalidReference(String)
    /// The registry refused our credentials (or we had none): HTTP 401/403.
    case unauthorized(url: String, status: Int, detail: String)
    /// The manifest or blob does not exist (HTTP 404).
    case notFound(url: String)
    /// Any other unexpected HTTP status.
    case unexpectedStatus(url: String, status: Int, body: String)
    /// The server answered a range request with the whole blob (200 instead of 206).
    case rangeNotSupported(url: String)
    /// The response was not what the protocol promises (bad JSON, wrong length, digest mismatch).
    case invalidResponse(url: String, reason: String)
    /// The connection failed after all retries.
    case transport(url: String, reason: String)
    /// The server did not answer within the connect, read or request timeout, after all retries.
    case timedOut(url: String, reason: String)
    /// The token service did not give a usable token.
    case tokenFailed(realm: String, reason: String)
    /// No manifest in the index matches the platform.
    case platformNotFound(String)
    /// The operation was cancelled.
    case cancelled
    /// A local file (OCI layout, cache, docker config) could not be used.
    case local(String)

    public var description: String {
        switch self {
        case let .invalidReference(text): "invalid image reference \"\(text)\""
        case let .unauthorized(url, status, detail): "unauthorized (HTTP \(status)) for \(url)\(detail.isEmpty ? "" : ": \(detail)")"
        case let .notFound(url): "not found: \(url)"
        case let .unexpectedStatus(url, status, body): "HTTP \(status) from \(url)\(body.isEmpty ? "" : ": \(body.prefix(300))")"
        case let .rangeNotSupported(url): "the server ignored a Range request (200 instead of 206) for \(url)"
        case let .invalidResponse(url, reason): "invalid response from \(url): \(reason)"
        case let .transport(url, reason): "cannot reach \(url): \(reason)"
        case let .timedOut(url, reason): "timed out talking to \(url): \(reason)"
        case let .tokenFailed(realm, reason): "token request to \(realm) failed: \(reason)"
        case let .platformNotFound(platform): "no manifest for platform \(platform) in the index"
        case .cancelled: "cancelled"
        case let .local(reason): reason
        }
    }
}
