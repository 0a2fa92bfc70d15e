import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Debian's `docker-registry` on 127.0.0.1 with temporary storage, and for token auth a
/// token issuer (a Python script signing JWTs with openssl) beside it.
public final class TestRegistry: @unchecked Sendable {
    /// How clients must authenticate.
    public enum Auth: Sendable { case none, basic, token }
    /// The one user of `.basic` and `.token` registries.
    public static let user = "tester"
    public static let password = "s3cret"

    public let port: Int
    /// Configuration, and storage unless `storage` was given.
    public let directory: TemporaryDirectory
    /// Where the registry keeps blobs and manifests (`docker/registry/v2/…` below it).
    public let storage: String
    private var processes: [Process] = []
    /// Whether the registry logs every request to ``accessLogPath``.
    private let logAccess: Bool

    /// `127.0.0.1:PORT`.
    public var host: String { "127.0.0.1:\(port)" }

    /// Whether Debian's `docker-registry` is installed.
    public static var available: Bool { access("/usr/bin/docker-registry", X_OK) == 0 }

    /// Where the registry logs every request when started with `logAccess` (combined log format).
    public var accessLogPath: String { directory.path + "/access.log" }

    /// Starts the registry (and for `.token` its token issuer) and waits until it listens.
    /// `storage` defaults to a directory inside ``directory``; with `logAccess` every request is
    /// logged to ``accessLogPath`` (see ``blobBytesServed()``).
    public init(auth: Auth = .none, storage: String? = nil, logAccess: Bool = false) throws {
        directory = TemporaryDirectory(prefix: "estargz-registry")
        self.logAccess = logAccess
        port = freePort()
        let dir = directory.path
        self.storage = storage ?? dir + "/data"
        var authYAML = ""
        switch auth {
        case .none:
            break
        case .basic:
            try run("/usr/bin/htpasswd", ["-Bbc", "\(dir)/htpasswd", Self.user, Self.password])
            authYAML = "auth:\n  htpasswd:\n    realm: test\n    path: \(dir)/htpasswd\n"
        case .token:
            let tokenPort = try startTokenIssuer()
            authYAML = """
                auth:
                  token:
                    realm: http://127.0.0.1:\(tokenPort)/token
                    service: test-registry
                    issuer: test-issuer
                    rootcertbundle: \(dir)/cert.pem

                """
        }
        let config = """
            version: 0.1
            log:
              level: error
              accesslog:
                disabled: \(!logAccess)
            storage:
              filesystem:
                rootdirectory: \(self.storage)
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:\(port)
            \(authYAML)
            """
        try config.write(toFile: "\(dir)/config.yml", atomically: true, encoding: .utf8)
        do { try startServer() } catch { stop(); throw error }
    }

    /// The `docker-registry` process itself (not the token issuer).
    private var server: Process?

    private func startServer() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/docker-registry")
        process.arguments = ["serve", "\(directory.path)/config.yml"]
        if logAccess, !FileManager.default.fileExists(atPath: accessLogPath) {
            FileManager.default.createFile(atPath: accessLogPath, contents: nil)
        }
        let output = FileHandle(forWritingAtPath: logAccess ? accessLogPath : "/dev/null")
        output?.seekToEndOfFile()  // a restarted registry appends to the log
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        processes.append(process)
        server = process
        try waitUntilListening(port, process: process)
    }

    /// An outage: kills the registry (its storage stays), so connections are refused until ``restart()``.
    public func kill() {
        guard let server else { return }
        Glibc.kill(server.processIdentifier, SIGKILL)
        server.waitUntilExit()
        processes.removeAll { $0 === server }
        self.server = nil
    }

    /// Starts the registry again on the same port with the same storage, after ``kill()``.
    public func restart() throws {
        guard server == nil else { return }
        try startServer()
    }

    /// A hung registry: stops the process (SIGSTOP), so connections open but nothing is answered.
    public func freeze() {
        if let server { Glibc.kill(server.processIdentifier, SIGSTOP) }
    }

    /// Lets a frozen registry answer again.
    public func thaw() {
        if let server { Glibc.kill(server.processIdentifier, SIGCONT) }
    }

    /// Bytes of blob bodies sent so far (`GET …/blobs/…` 2xx responses in the access log; needs `logAccess`),
    /// of one repository's blobs when `repository` is given.
    public func blobBytesServed(repository: String? = nil) -> Int64 {
        let prefix = repository.map { $0 + "/blobs/" } ?? ""
        guard let log = try? String(contentsOfFile: accessLogPath, encoding: .utf8) else { return 0 }
        // … "GET /v2/REPO/blobs/sha256:… HTTP/1.1" STATUS BYTES "referer" "agent"
        return log.split(separator: "\n").reduce(0) { total, line in
            guard let request = line.range(of: "\"GET /v2/"), let close = line[request.upperBound...].range(of: "\" "),
                  line[request.upperBound ..< close.lowerBound].contains("/blobs/"),
                  line[request.upperBound ..< close.lowerBound].hasPrefix(prefix) else { return total }
            let fields = line[close.upperBound...].split(separator: " ")
            // Only what was served (200, 206): not the bodies of 401 challenges and other errors.
            guard fields.count > 1, fields[0].hasPrefix("2") else { return total }
            return total + (Int64(fields[1]) ?? 0)
        }
    }

    /// Key and self-signed certificate for the issuer, then the issuer itself.
    private func startTokenIssuer() throws -> Int {
        let dir = directory.path
        try run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/key.pem",
                                     "-out", "\(dir)/cert.pem", "-days", "1", "-subj", "/CN=test-issuer"])
        try run("/usr/bin/openssl", ["x509", "-in", "\(dir)/cert.pem", "-outform", "DER", "-out", "\(dir)/cert.der"])
        try Self.tokenIssuerScript.write(toFile: "\(dir)/issuer.py", atomically: true, encoding: .utf8)
        let tokenPort = freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "\(dir)/issuer.py", "\(dir)/key.pem", "\(dir)/cert.der", String(tokenPort),
                             Self.user, Self.password, "\(dir)/token-requests"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        processes.append(process)
        try waitUntilListening(tokenPort, process: process)
        return tokenPort
    }

    /// How many tokens the issuer handed out.
    public var tokenRequests: Int {
        (try? String(contentsOfFile: directory.path + "/token-requests", encoding: .utf8))?.split(separator: "\n").count ?? 0
    }

    /// Stops the registry and the issuer and removes ``directory``; safe to call twice.
    public func stop() {
        thaw()
        terminate(processes)
        server = nil
        processes = []
        directory.remove()
    }

    deinit { stop() }

    /// Signs RS256 JWTs with an x5c header (the registry checks the chain against rootcertbundle).
    static let tokenIssuerScript = #"""
        import base64, http.server, json, subprocess, sys, time, urllib.parse, uuid
        key, cert_der, port, user, password, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
        cert = base64.b64encode(open(cert_der, "rb").read()).decode()
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                if self.headers.get("Authorization", "") != expected:
                    self.send_response(401); self.end_headers(); return
                access = []
                for scope in query.get("scope", []):
                    kind, rest = scope.split(":", 1)
                    name, actions = rest.rsplit(":", 1)
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
                now = int(time.time())
                header = {"alg": "RS256", "typ": "JWT", "x5c": [cert]}
                claims = {"iss": "test-issuer", "sub": user, "aud": query.get("service", [""])[0], "exp": now + 600,
                          "nbf": now - 60, "iat": now, "jti": str(uuid.uuid4()), "access": access}
                signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
                signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing.encode(),
                                           capture_output=True, check=True).stdout
                token = signing + "." + b64(signature)
                body = json.dumps({"token": token, "access_token": token, "expires_in": 600}).encode()
                with open(log, "a") as f: f.write(" ".join(query.get("scope", [])) + "\n")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args): pass
        http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
        """#
}
