/// A parsed image reference: `[host[:port]/]repository[:tag][@digest]`, with Docker Hub's
/// defaults (`docker.io`, `library/` for one-component names, tag `latest`).
///
/// ```swift
/// let ref = try ImageReference(parsing: "127.0.0.1:5000/app:1.0")
/// ref.registry   // "127.0.0.1:5000"
/// ref.repository // "app"
/// ```
public struct ImageReference: Sendable, Hashable, CustomStringConvertible {
    /// Registry host, with the port when one was given (`docker.io` for Docker Hub).
    public var registry: String
    /// Repository path inside the registry (`library/alpine`).
    public var repository: String
    /// The tag, when given; `latest` is assumed when neither tag nor digest is.
    public var tag: String?
    /// The digest (`sha256:…`), when given.
    public var digest: String?

    /// Parses `text`; throws ``RegistryError/invalidReference(_:)`` when it is malformed.
    public init(parsing text: String) throws(RegistryError) {
        var rest = Substring(text)
        guard !rest.isEmpty, !rest.contains(" ") else { throw .invalidReference(text) }
        if let at = rest.firstIndex(of: "@") {
            let digest = String(rest[rest.index(after: at)...])
            guard digest.hasPrefix("sha256:") || digest.hasPrefix("sha512:"), digest.count > 7 else {
                throw .invalidReference(text)
            }
            self.digest = digest
            rest = rest[..<at]
        }
        // A tag is a colon after the last slash (a colon before it belongs to host:port).
        let lastSlash = rest.lastIndex(of: "/")
        if let colon = rest.lastIndex(of: ":"), lastSlash.map({ colon > $0 }) ?? true {
            let tag = String(rest[rest.index(after: colon)...])
            guard !tag.isEmpty, tag.count <= 128 else { throw .invalidReference(text) }
            self.tag = tag
            rest = rest[..<colon]
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !components.isEmpty, components.allSatisfy({ !$0.isEmpty }) else { throw .invalidReference(text) }
        // The first component is a host when it looks like one (as docker/distribution decides).
        if components.count > 1, let first = components.first,
           first.contains(".") || first.contains(":") || first == "localhost" || first.lowercased() != first {
            registry = first
            components.removeFirst()
        } else {
            registry = "docker.io"
        }
        if registry == "docker.io" || registry == "index.docker.io" {
            registry = "docker.io"
            if components.count == 1 { components.insert("library", at: 0) }
        }
        repository = components.joined(separator: "/")
        guard repository.lowercased() == repository else { throw .invalidReference(text) }
        if tag == nil, digest == nil { tag = "latest" }
    }

    /// A reference with explicit parts.
    public init(registry: String, repository: String, tag: String? = nil, digest: String? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// What goes after `/manifests/`: the digest when there is one, else the tag.
    public var manifestReference: String { digest ?? tag ?? "latest" }

    /// The host to connect to (Docker Hub's API lives on `registry-1.docker.io`).
    public var endpointHost: String { registry == "docker.io" ? "registry-1.docker.io" : registry }

    /// Whether the registry is on the loopback network, where containerd uses plain HTTP.
    public var isLoopback: Bool {
        var host = registry
        if host.hasPrefix("[") {
            return host.hasPrefix("[::1]")
        }
        if let colon = host.lastIndex(of: ":") { host = String(host[..<colon]) }
        if host == "localhost" { return true }
        let octets = host.split(separator: ".")
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    public var description: String {
        var s = "\(registry)/\(repository)"
        if let tag { s += ":\(tag)" }
        if let digest { s += "@\(digest)" }
        return s
    }
}
