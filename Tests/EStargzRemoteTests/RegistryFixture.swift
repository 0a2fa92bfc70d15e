import EStargzCore
@testable import EStargzRemote
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A temporary directory removed by `remove()`.
struct TemporaryDirectory {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "estargz-remote-test-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs a program to completion; throws with its stderr when it fails.
@discardableResult
func run(_ executable: String, _ arguments: [String], stdin: [UInt8]? = nil) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let input = Pipe()
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin)) }
    try? input.fileHandleForWriting.close()
    let output = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw RegistryError.local("\(executable) \(arguments.joined(separator: " ")) failed: \(String(decoding: errors, as: UTF8.self))")
    }
    return String(decoding: output, as: UTF8.self)
}

/// A free TCP port on 127.0.0.1 (bound to port 0 and released; a race is possible but rare).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func isListening(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

func waitUntilListening(_ port: Int, process: Process) throws {
    for _ in 0 ..< 200 {
        if isListening(port) { return }
        guard process.isRunning else { throw RegistryError.local("server on port \(port) exited") }
        usleep(25_000)
    }
    throw RegistryError.local("nothing listens on port \(port)")
}

/// Debian's `docker-registry` on 127.0.0.1 with temporary storage, and for token auth a
/// token issuer (a Python script signing JWTs with openssl) beside it.
final class TestRegistry: @unchecked Sendable {
    enum Auth { case none, basic, token }
    static let user = "tester"
    static let password = "s3cret"

    let port: Int
    let directory: TemporaryDirectory
    private var processes: [Process] = []

    var host: String { "127.0.0.1:\(port)" }

    init(auth: Auth) throws {
        directory = TemporaryDirectory()
        port = freePort()
        let dir = directory.path
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
                disabled: true
            storage:
              filesystem:
                rootdirectory: \(dir)/data
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:\(port)
            \(authYAML)
            """
        try config.write(toFile: "\(dir)/config.yml", atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/docker-registry")
        process.arguments = ["serve", "\(dir)/config.yml"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        processes.append(process)
        do { try waitUntilListening(port, process: process) } catch { stop(); throw error }
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
    var tokenRequests: Int {
        (try? String(contentsOfFile: directory.path + "/token-requests", encoding: .utf8))?.split(separator: "\n").count ?? 0
    }

    func reference(_ repository: String, tag: String = "latest") -> ImageReference {
        ImageReference(registry: host, repository: repository, tag: tag)
    }

    func stop() {
        // Signals and polling, not `waitUntilExit` (which can hang on a cooperative-pool thread).
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGTERM)
        }
        for process in processes {
            var waited = 0
            while process.isRunning, waited < 100 {
                usleep(20_000)
                waited += 1
            }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
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

/// Runs blocking work (sync reads through a RangeReader) on a Dispatch thread, not on the
/// cooperative pool the test runs on.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        // A thread of its own: blocked Dispatch workers are replaced only slowly.
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Test images: a directory tree made into a tar.gz layer, packed into an OCI layout.
enum TestImages {
    /// Writes `files` (path → contents) under a new directory and returns a gzip tar of it.
    static func gzipLayer(_ files: [String: [UInt8]], in directory: String, name: String) throws -> String {
        let root = "\(directory)/\(name)-root"
        for (path, bytes) in files {
            let full = "\(root)/\(path)"
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: full))
        }
        let output = "\(directory)/\(name).tar.gz"
        try run("/bin/tar", ["--sort=name", "--owner=0", "--group=0", "--mtime=@0", "-C", root, "-czf", output, "."])
        return output
    }

    /// Pseudo-random bytes that do not compress (so byte counts mean something).
    static func noise(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed | 1
        return (0 ..< count).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }

    /// An OCI layout at `layout` holding one image (`tag`) with the given layer blobs (tar.gz files).
    static func layout(_ layout: String, tag: String, layers: [String]) throws {
        let oci = try OCILayout(directory: layout, create: true)
        var descriptors: [Descriptor] = []
        var diffIDs: [String] = []
        for path in layers {
            let bytes = Array(FileManager.default.contents(atPath: path)!)
            let digest = try oci.writeBlob(bytes)
            descriptors.append(Descriptor(mediaType: MediaType.ociLayerGzip, digest: digest, size: Int64(bytes.count)))
            let tar = try run("/bin/sh", ["-c", "gzip -dc '\(path)' | sha256sum | cut -d' ' -f1"]).trimmingCharacters(in: .whitespacesAndNewlines)
            diffIDs.append("sha256:" + tar)
        }
        let config: [String: Any] = ["architecture": Platform.current.architecture, "os": "linux",
                                     "config": ["Env": ["PATH=/bin"]], "rootfs": ["type": "layers", "diff_ids": diffIDs]]
        let configBytes = Array(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]))
        let configDigest = try oci.writeBlob(configBytes)
        let manifest = ImageManifest(config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(configBytes.count)),
                                     layers: descriptors)
        try oci.addManifest(bytes: try CanonicalJSON.encode(manifest), mediaType: MediaType.ociManifest, tag: tag)
    }
}
