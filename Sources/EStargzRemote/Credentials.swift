import Foundation

/// A user name and password (or identity token) for one registry.
public struct RegistryCredential: Sendable, Hashable {
    public var username: String
    public var password: String
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// The value of an `Authorization: Basic …` header.
    var basicHeader: String { "Basic " + Data("\(username):\(password)".utf8).base64EncodedString() }
}

/// Where credentials come from: explicit ones first, then Docker's `config.json`
/// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, the `auths` map with base64 `auth`).
public struct CredentialStore: Sendable {
    /// Credentials by registry host (`host[:port]`).
    public var explicit: [String: RegistryCredential]
    private var fromConfig: [String: RegistryCredential]

    /// Loads Docker's config file when `loadDockerConfig` (a missing or unreadable file means no credentials).
    public init(explicit: [String: RegistryCredential] = [:], loadDockerConfig: Bool = true, dockerConfigPath: String? = nil) {
        self.explicit = explicit
        self.fromConfig = [:]
        guard loadDockerConfig else { return }
        let env = ProcessInfo.processInfo.environment
        let path = dockerConfigPath ?? (env["DOCKER_CONFIG"].map { $0 + "/config.json" }
            ?? (env["HOME"] ?? NSHomeDirectory()) + "/.docker/config.json")
        if let data = FileManager.default.contents(atPath: path) {
            fromConfig = Self.parseDockerConfig(Array(data))
        }
    }

    /// The `auths` entries of a Docker `config.json`, keyed by host.
    static func parseDockerConfig(_ bytes: [UInt8]) -> [String: RegistryCredential] {
        guard let root = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
              let auths = root["auths"] as? [String: Any] else { return [:] }
        var result: [String: RegistryCredential] = [:]
        for (key, value) in auths {
            guard let entry = value as? [String: Any] else { continue }
            var credential: RegistryCredential?
            if let auth = entry["auth"] as? String, let decoded = Data(base64Encoded: auth),
               let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":") {
                credential = RegistryCredential(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
            } else if let user = entry["username"] as? String, let password = entry["password"] as? String {
                credential = RegistryCredential(username: user, password: password)
            }
            guard let credential else { continue }
            result[normalizeHost(key)] = credential
        }
        return result
    }

    /// Keys may be URLs (`https://index.docker.io/v1/`); Docker Hub has several names.
    static func normalizeHost(_ key: String) -> String {
        var host = key
        for prefix in ["https://", "http://"] where host.hasPrefix(prefix) { host.removeFirst(prefix.count) }
        if let slash = host.firstIndex(of: "/") { host = String(host[..<slash]) }
        if ["index.docker.io", "registry-1.docker.io", "docker.io"].contains(host) { return "docker.io" }
        return host
    }

    /// The credential for `registry`, or nil for anonymous access.
    public func credential(for registry: String) -> RegistryCredential? {
        let host = Self.normalizeHost(registry)
        return explicit[host] ?? fromConfig[host]
    }
}
