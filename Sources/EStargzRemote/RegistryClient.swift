import AsyncHTTPClient
import EStargzCore
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// A client of the OCI distribution API: manifests, blobs, range reads and pushes, with
/// anonymous, basic and bearer-token auth, retries with backoff, mirrors and redirects.
///
/// One client owns one `HTTPClient` (and its connection pool); call ``shutdown()`` when done.
///
/// ```swift
/// let client = RegistryClient()
/// defer { try? client.syncShutdown() }
/// let image = try await client.resolveImage(try ImageReference(parsing: "127.0.0.1:5000/app:1"))
/// ```
public final class RegistryClient: Sendable {
    /// How the client connects and retries.
    public struct Options: Sendable {
        /// Use plain HTTP for every registry (loopback registries always use it, as containerd does).
        public var plainHTTP = false
        /// Registries (`host[:port]`) reached over plain HTTP even when `plainHTTP` is off.
        public var plainHTTPHosts: Set<String> = []
        /// Mirror hosts tried in order before the registry itself, for pulls only.
        public var mirrors: [String] = []
        /// Credentials by registry host; Docker's config.json is consulted too.
        public var credentials = CredentialStore()
        /// Longest wait for a TCP connection to open.
        public var connectTimeout: TimeAmount = .seconds(10)
        /// Longest silence while waiting for the response's head or the next bytes of its body:
        /// a stalled server fails (and is retried) after this, however large the body.
        public var readTimeout: TimeAmount = .seconds(120)
        /// Timeout of one whole request (headers and body).
        public var requestTimeout: TimeAmount = .seconds(300)
        /// Retries after connection errors, timeouts, 5xx and 429 (so `maxRetries + 1` attempts).
        public var maxRetries = 3
        /// First backoff delay; doubled on each retry.
        public var initialBackoff: Duration = .milliseconds(200)
        /// The longest a `Retry-After` header of a 429 or 503 response makes the client wait
        /// before retrying; a longer one is cut to this.
        public var maximumRetryAfter: Duration = .seconds(60)
        /// The longest one call (a range read, a manifest fetch) may take until the response
        /// starts, retries and their backoff included; past it the call fails with
        /// ``RegistryError/timedOut(url:reason:)``. A lazily mounted layer turns that into `EIO`,
        /// so a registry outage fails reads within this bound instead of holding them.
        /// nil: bounded only by the per-request timeouts and `maxRetries`.
        public var operationTimeout: Duration?
        /// Blob uploads larger than this are sent in chunks of this size (PATCH); smaller ones in one PUT.
        public var uploadChunkSize = 16 << 20
        public init() {}

        /// Bounds every call by `timeout` (``operationTimeout``), and the connect and read
        /// timeouts of each request within it, so that a call fails within about `timeout`
        /// whether the registry refuses connections, stalls or answers 5xx.
        public mutating func applyFetchTimeout(_ timeout: Duration) {
            operationTimeout = timeout
            let components = timeout.components
            let amount = TimeAmount.nanoseconds(components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000)
            connectTimeout = min(connectTimeout, amount)
            readTimeout = min(readTimeout, amount)
        }
    }

    /// A resolved image: its manifest (after platform selection) and config.
    public struct Image: Sendable {
        /// Where it was resolved from.
        public var reference: ImageReference
        /// Digest of the manifest bytes.
        public var manifestDigest: String
        /// The manifest bytes as served.
        public var manifestBytes: [UInt8]
        public var manifest: ImageManifest
        /// The config blob as served.
        public var configBytes: [UInt8]
    }

    public let options: Options
    let http: HTTPClient
    /// Authorization header values by `host/repository`, learned from challenges.
    private let authorizations = Mutex<[String: String]>([:])

    /// Creates a client with its own connection pool on NIO's shared event loops.
    public init(options: Options = Options()) {
        self.options = options
        var configuration = HTTPClient.Configuration()
        // Redirects are followed by hand: the Range header must survive the hop to blob
        // storage while Authorization must not leave the registry's host.
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: options.connectTimeout, read: options.readTimeout)
        configuration.decompression = .disabled
        // Every lazily mounted layer shares this pool: each reader's reads (4 requests) and
        // read-ahead guesses (8) must find a connection instead of queueing behind other layers'.
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 32
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// Closes all connections. Call once, from outside an event loop.
    public func shutdown() async throws { try await http.shutdown() }

    /// Closes all connections, blocking; never call from an event loop or async context.
    public func syncShutdown() throws { try http.syncShutdown() }

    // MARK: Pull

    /// Fetches a manifest or index; returns its bytes, media type and digest.
    /// When the reference has a digest the bytes are verified against it.
    public func fetchManifest(_ reference: ImageReference, reference tagOrDigest: String? = nil) async throws(RegistryError)
        -> (bytes: [UInt8], mediaType: String, digest: String) {
        let which = tagOrDigest ?? reference.manifestReference
        let accept = [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerManifestList, MediaType.dockerManifest].joined(separator: ", ")
        let response = try await pull(reference, path: "manifests/\(which)", headers: ["Accept": accept], limit: 16 << 20)
        let digest = digestString(response.body)
        if which.hasPrefix("sha256:"), which != digest {
            throw .invalidResponse(url: response.url, reason: "manifest digest \(digest), expected \(which)")
        }
        let type = response.headers.first(name: "Content-Type").flatMap { $0.isEmpty || $0 == "application/json" ? nil : $0 }
            ?? CanonicalJSON.mediaType(of: response.body) ?? MediaType.ociManifest
        return (response.body, type.split(separator: ";").first.map(String.init) ?? type, digest)
    }

    /// Resolves a reference to one image manifest (choosing `platform` from an index) and its config.
    public func resolveImage(_ reference: ImageReference, platform: Platform = .current) async throws(RegistryError) -> Image {
        var (bytes, type, digest) = try await fetchManifest(reference)
        if MediaType.isIndex(type) {
            let index = try CanonicalJSON.decode(ImageIndex.self, from: bytes, what: reference.description)
            guard let chosen = index.manifest(for: platform) ?? (index.manifests.count == 1 ? index.manifests.first : nil) else {
                throw .platformNotFound(platform.description)
            }
            (bytes, type, digest) = try await fetchManifest(reference, reference: chosen.digest)
        }
        let manifest = try CanonicalJSON.decode(ImageManifest.self, from: bytes, what: reference.description)
        let config = try await fetchBlob(reference, digest: manifest.config.digest)
        return Image(reference: reference, manifestDigest: digest, manifestBytes: bytes, manifest: manifest, configBytes: config)
    }

    /// Fetches a whole (small) blob into memory and verifies its digest.
    public func fetchBlob(_ repository: ImageReference, digest: String, limit: Int = 256 << 20) async throws(RegistryError) -> [UInt8] {
        let response = try await pull(repository, path: "blobs/\(digest)", headers: [:], limit: limit)
        let actual = digestString(response.body)
        guard actual == digest else { throw .invalidResponse(url: response.url, reason: "blob digest \(actual), expected \(digest)") }
        return response.body
    }

    /// Streams a blob into the file at `path`, verifying its digest; returns its size.
    @discardableResult
    public func downloadBlob(_ repository: ImageReference, digest: String, to path: String) async throws(RegistryError) -> Int64 {
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw .local("cannot create \(path)")
        }
        defer { try? handle.close() }
        var hasher = SHA256Hasher()
        var size: Int64 = 0
        let url = try await send(repository, endpoints: pullEndpoints(repository), method: .GET, path: "blobs/\(digest)", headers: [:],
                                 body: nil, expect: [200], restartBody: {
            hasher = SHA256Hasher()
            size = 0
            return (try? handle.truncate(atOffset: 0)) != nil
        }) { buffer in
            buffer.withUnsafeReadableBytes { hasher.update($0) }
            try handle.write(contentsOf: Data(buffer.readableBytesView))
            size += Int64(buffer.readableBytes)
        }
        let actual = hasher.finalize().description
        guard actual == digest else { throw .invalidResponse(url: url, reason: "blob digest \(actual), expected \(digest)") }
        return size
    }

    /// The size of a blob (HEAD).
    public func blobSize(_ repository: ImageReference, digest: String) async throws(RegistryError) -> Int64 {
        let response = try await pull(repository, path: "blobs/\(digest)", headers: [:], limit: 0, method: .HEAD)
        guard let length = response.headers.first(name: "Content-Length").flatMap({ Int64($0) }) else {
            throw .invalidResponse(url: response.url, reason: "no Content-Length")
        }
        return length
    }

    /// Whether a blob exists in the repository (HEAD; 404 is false).
    public func blobExists(_ repository: ImageReference, digest: String) async throws(RegistryError) -> Bool {
        do {
            _ = try await send(repository, endpoints: [endpoint(for: repository.registry)], method: .HEAD, path: "blobs/\(digest)",
                               headers: [:], body: nil, expect: [200], limit: 0)
            return true
        } catch .notFound {
            return false
        }
    }

    /// Fetches `range` of a blob with one Range request. Throws ``RegistryError/rangeNotSupported(url:)``
    /// when the server answers 200 with the whole blob instead of 206.
    public func fetchRange(_ repository: ImageReference, digest: String, range: Range<Int64>) async throws(RegistryError) -> [UInt8] {
        guard !range.isEmpty else { return [] }
        let response = try await send(repository, endpoints: pullEndpoints(repository), method: .GET, path: "blobs/\(digest)",
                                      headers: ["Range": "bytes=\(range.lowerBound)-\(range.upperBound - 1)"], body: nil,
                                      expect: [200, 206], limit: Int(range.count), rangeRequest: true)
        guard response.body.count == range.count else {
            throw .invalidResponse(url: response.url, reason: "range \(range) returned \(response.body.count) bytes")
        }
        return response.body
    }

    /// Fetches the last `length` bytes of a blob (a suffix Range request) and learns the blob's
    /// size from `Content-Range` in the same round trip; a blob shorter than `length` comes whole.
    public func fetchSuffix(_ repository: ImageReference, digest: String, length: Int64) async throws(RegistryError)
        -> (bytes: [UInt8], blobSize: Int64) {
        let response = try await send(repository, endpoints: pullEndpoints(repository), method: .GET, path: "blobs/\(digest)",
                                      headers: ["Range": "bytes=-\(max(1, length))"], body: nil,
                                      expect: [206], limit: Int(max(1, length)), rangeRequest: true)
        // Content-Range: bytes FIRST-LAST/TOTAL
        let header = response.headers.first(name: "Content-Range") ?? ""
        guard let slash = header.lastIndex(of: "/"), let total = Int64(header[header.index(after: slash)...]),
              total >= Int64(response.body.count), response.body.count == Int(min(total, max(1, length))) else {
            throw .invalidResponse(url: response.url, reason: "suffix range answered with Content-Range \"\(header)\" and \(response.body.count) bytes")
        }
        return (response.body, total)
    }

    // MARK: Push

    /// Uploads a blob unless the repository has it: tries a cross-repository mount from
    /// `mountFrom` first, then a monolithic PUT (small blobs) or chunked PATCHes.
    public func pushBlob(_ repository: ImageReference, digest: String, bytes: [UInt8], mountFrom: String? = nil) async throws(RegistryError) {
        try await upload(repository, digest: digest, size: Int64(bytes.count), mountFrom: mountFrom) { range in
            Array(bytes[range])
        }
    }

    /// Monolithic PUT for small blobs, chunked PATCHes of `uploadChunkSize` for large ones, each chunk
    /// read only when it is sent.
    private func upload(_ repository: ImageReference, digest: String, size: Int64, mountFrom: String?,
                        read: (Range<Int>) throws -> [UInt8]) async throws(RegistryError) {
        func piece(_ range: Range<Int>) throws(RegistryError) -> [UInt8] {
            do { return try read(range) } catch { throw .local("reading blob \(digest): \(error)") }
        }
        let count = Int(size)
        if try await blobExists(repository, digest: digest) { return }
        let endpoint = endpoint(for: repository.registry)
        var query = ""
        if let mountFrom, mountFrom != repository.repository {
            query = "?mount=\(digest)&from=\(mountFrom)"
        }
        let start = try await send(repository, endpoints: [endpoint], method: .POST, path: "blobs/uploads/\(query)",
                                   headers: ["Content-Length": "0"], body: [], expect: [201, 202], limit: 1 << 16)
        if start.status == 201 { return } // mounted
        guard var location = start.headers.first(name: "Location") else {
            throw .invalidResponse(url: start.url, reason: "upload has no Location")
        }
        if count > options.uploadChunkSize {
            var offset = 0
            while offset < count {
                let end = min(count, offset + options.uploadChunkSize)
                let patch = try await send(repository, endpoints: [endpoint], method: .PATCH, path: "", absolute: resolve(location, against: endpoint),
                                           headers: ["Content-Type": "application/octet-stream", "Content-Range": "\(offset)-\(end - 1)",
                                                     "Content-Length": "\(end - offset)"],
                                           body: try piece(offset ..< end), expect: [202], limit: 1 << 16, retry: false)
                location = patch.headers.first(name: "Location") ?? location
                offset = end
            }
            _ = try await send(repository, endpoints: [endpoint], method: .PUT, path: "",
                               absolute: appendQuery(resolve(location, against: endpoint), "digest=\(digest)"),
                               headers: ["Content-Length": "0"], body: [], expect: [201], limit: 1 << 16, retry: false)
        } else {
            _ = try await send(repository, endpoints: [endpoint], method: .PUT, path: "",
                               absolute: appendQuery(resolve(location, against: endpoint), "digest=\(digest)"),
                               headers: ["Content-Type": "application/octet-stream", "Content-Length": "\(count)"],
                               body: try piece(0 ..< count), expect: [201], limit: 1 << 16, retry: false)
        }
    }

    /// Uploads the blob in the file at `path`. The file is read into memory whole (streaming uploads are not done yet).
    public func pushBlob(_ repository: ImageReference, digest: String, path: String, mountFrom: String? = nil) async throws(RegistryError) {
        // Read piece by piece: a layer of any size is pushed holding at most one upload chunk.
        let source: FileSource
        do { source = try FileSource(path: path) } catch { throw .local("cannot read \(path): \(error)") }
        try await upload(repository, digest: digest, size: source.size, mountFrom: mountFrom) { range in
            try source.read(at: Int64(range.lowerBound), count: range.count)
        }
    }

    /// Puts a manifest or index under `tagOrDigest` (the reference's tag by default); returns its digest.
    @discardableResult
    public func pushManifest(_ repository: ImageReference, bytes: [UInt8], mediaType: String, tagOrDigest: String? = nil) async throws(RegistryError) -> String {
        let which = tagOrDigest ?? repository.tag ?? digestString(bytes)
        _ = try await send(repository, endpoints: [endpoint(for: repository.registry)], method: .PUT, path: "manifests/\(which)",
                           headers: ["Content-Type": mediaType, "Content-Length": "\(bytes.count)"], body: bytes, expect: [201], limit: 1 << 16)
        return digestString(bytes)
    }

    // MARK: Transport

    struct Response {
        var status: Int
        var headers: HTTPHeaders
        var body: [UInt8]
        var url: String
    }

    /// The scheme and host of `registry`: plain HTTP on loopback or when asked for.
    func endpoint(for registry: String) -> String {
        let host = registry == "docker.io" ? "registry-1.docker.io" : registry
        let loopback = ImageReference(registry: registry, repository: "x").isLoopback
        return (options.plainHTTP || loopback || options.plainHTTPHosts.contains(registry) ? "http://" : "https://") + host
    }

    func pullEndpoints(_ reference: ImageReference) -> [String] {
        options.mirrors.map { endpoint(for: $0) } + [endpoint(for: reference.registry)]
    }

    private func pull(_ reference: ImageReference, path: String, headers: [String: String], limit: Int,
                      method: HTTPMethod = .GET) async throws(RegistryError) -> Response {
        try await send(reference, endpoints: pullEndpoints(reference), method: method, path: path, headers: headers, body: nil,
                       expect: [200], limit: limit)
    }

    /// One API call with everything around it: mirrors in order, auth challenges, retries, redirects.
    func send(_ reference: ImageReference, endpoints: [String], method: HTTPMethod, path: String, absolute: String? = nil,
              headers: [String: String], body: [UInt8]?, expect: Set<Int>, limit: Int, retry: Bool = true,
              rangeRequest: Bool = false) async throws(RegistryError) -> Response {
        var collected: [UInt8] = []
        var status = 0
        var responseHeaders = HTTPHeaders()
        let url = try await send(reference, endpoints: endpoints, method: method, path: path, absolute: absolute, headers: headers,
                                 body: body, expect: expect, retry: retry, rangeRequest: rangeRequest,
                                 onHead: { s, h in status = s; responseHeaders = h }, restartBody: { collected = []; return true }) { buffer in
            guard collected.count + buffer.readableBytes <= max(limit, 0) else {
                throw RegistryError.invalidResponse(url: path, reason: "response larger than \(limit) bytes")
            }
            collected += buffer.readableBytesView
        }
        return Response(status: status, headers: responseHeaders, body: collected, url: url)
    }

    /// The streaming form: `onBody` sees the body of the final, expected response.
    @discardableResult
    func send(_ reference: ImageReference, endpoints: [String], method: HTTPMethod, path: String, absolute: String? = nil,
              headers: [String: String], body: [UInt8]?, expect: Set<Int>, retry: Bool = true, rangeRequest: Bool = false,
              onHead: (Int, HTTPHeaders) -> Void = { _, _ in }, restartBody: () -> Bool = { false },
              onBody: (ByteBuffer) throws -> Void) async throws(RegistryError) -> String {
        var lastError = RegistryError.transport(url: path, reason: "no endpoint")
        let deadline = options.operationTimeout.map { ContinuousClock.now + $0 }
        for endpoint in endpoints {
            let url = absolute ?? "\(endpoint)/v2/\(reference.repository)/\(path)"
            do {
                return try await attempt(reference, endpointURL: endpoint, url: url, method: method, headers: headers, body: body,
                                         expect: expect, retry: retry, rangeRequest: rangeRequest, deadline: deadline,
                                         onHead: onHead, restartBody: restartBody, onBody: onBody)
            } catch {
                // Only pull falls through to the next mirror; auth and client errors of the last one are reported.
                if case .cancelled = error { throw error }
                lastError = error
            }
        }
        throw lastError
    }

    private func attempt(_ reference: ImageReference, endpointURL: String, url: String, method: HTTPMethod, headers: [String: String],
                         body: [UInt8]?, expect: Set<Int>, retry: Bool, rangeRequest: Bool, deadline: ContinuousClock.Instant?,
                         onHead: (Int, HTTPHeaders) -> Void, restartBody: () -> Bool,
                         onBody: (ByteBuffer) throws -> Void) async throws(RegistryError) -> String {
        let authKey = "\(hostOf(endpointURL))/\(reference.repository)"
        var attempts = 0
        var challenged = false
        /// Sleeps before the next attempt, or fails when that would pass the deadline.
        func retryAfterBackoff(_ last: @autoclosure () -> RegistryError, atLeast minimum: Duration? = nil) async throws(RegistryError) {
            attempts += 1
            if let deadline, ContinuousClock.now + backoffDelay(attempts, atLeast: minimum) >= deadline {
                throw Self.pastDeadline(last(), url: url, timeout: options.operationTimeout)
            }
            try await backoff(attempts, atLeast: minimum)
        }
        while true {
            if Task.isCancelled { throw .cancelled }
            if let deadline, ContinuousClock.now >= deadline {
                throw .timedOut(url: url, reason: "no response within the operation timeout (\(options.operationTimeout!))")
            }
            var request = HTTPClientRequest(url: url)
            request.method = method
            for (name, value) in headers { request.headers.replaceOrAdd(name: name, value: value) }
            request.headers.replaceOrAdd(name: "User-Agent", value: "swift-estargz")
            if let auth = authorizations.withLock({ $0[authKey] }) { request.headers.replaceOrAdd(name: "Authorization", value: auth) }
            if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
            let response: HTTPClientResponse
            var finalURL = url
            do {
                (response, finalURL) = try await executeFollowingRedirects(request, deadline: deadline)
            } catch let error as RegistryError {
                throw error
            } catch {
                if Task.isCancelled || error is CancellationError { throw .cancelled }
                if retry, attempts < options.maxRetries {
                    try await retryAfterBackoff(Self.failure(error, url: url))
                    continue
                }
                throw Self.failure(error, url: url)
            }
            let status = Int(response.status.code)
            if status == 401, !challenged {
                challenged = true
                let challenge = response.headers.first(name: "WWW-Authenticate") ?? ""
                _ = try? await response.body.collect(upTo: 1 << 20)
                if let auth = try await authorize(challenge: challenge, registry: reference.registry) {
                    authorizations.withLock { $0[authKey] = auth }
                    continue
                }
                throw .unauthorized(url: url, status: 401, detail: "no credentials for \(reference.registry)")
            }
            if retry, status == 429 || status >= 500, attempts < options.maxRetries {
                // 429 and 503 may say how long to wait (seconds or an HTTP-date); we wait at least
                // that long, bounded by `maximumRetryAfter`.
                let retryAfter = status == 429 || status == 503
                    ? Self.retryAfterDelay(response.headers.first(name: "Retry-After"), now: Date()) : nil
                _ = try? await response.body.collect(upTo: 1 << 20)
                try await retryAfterBackoff(.unexpectedStatus(url: url, status: status, body: ""),
                                            atLeast: retryAfter.map { min($0, options.maximumRetryAfter) })
                continue
            }
            if rangeRequest, status == 200 {
                // The server ignored the Range header: do not download the whole blob by accident.
                throw .rangeNotSupported(url: finalURL)
            }
            guard expect.contains(status) else {
                let text = (try? await response.body.collect(upTo: 1 << 16)).map { String(buffer: $0) } ?? ""
                switch status {
                case 401, 403: throw .unauthorized(url: url, status: status, detail: text)
                case 404: throw .notFound(url: url)
                default: throw .unexpectedStatus(url: url, status: status, body: text)
                }
            }
            onHead(status, response.headers)
            do {
                for try await buffer in response.body { try onBody(buffer) }
            } catch let error as RegistryError {
                throw error
            } catch {
                if Task.isCancelled { throw .cancelled }
                // A body cut short (connection closed before Content-Length bytes) is retried like a
                // failed connection when the caller can discard what it has seen (`restartBody`).
                if retry, attempts < options.maxRetries, restartBody() {
                    try await retryAfterBackoff(Self.failure(error, url: finalURL, during: "body"))
                    continue
                }
                throw Self.failure(error, url: finalURL, during: "body")
            }
            // A cancelled body stream may just end early: never hand it on as complete.
            if Task.isCancelled { throw .cancelled }
            return finalURL
        }
    }

    /// Follows up to five redirects, keeping every header except `Authorization` on a new host
    /// (blob storage signs its URLs; our registry token means nothing there).
    private func executeFollowingRedirects(_ first: HTTPClientRequest,
                                           deadline: ContinuousClock.Instant? = nil) async throws -> (HTTPClientResponse, String) {
        var request = first
        for _ in 0 ..< 6 {
            var timeout = options.requestTimeout
            if let deadline {
                let left = (deadline - ContinuousClock.now).components
                timeout = min(timeout, .nanoseconds(max(1, left.seconds * 1_000_000_000 + left.attoseconds / 1_000_000_000)))
            }
            let response = try await http.execute(request, timeout: timeout)
            guard [301, 302, 303, 307, 308].contains(Int(response.status.code)),
                  let location = response.headers.first(name: "Location") else {
                return (response, request.url)
            }
            _ = try? await response.body.collect(upTo: 1 << 20)
            let next = resolve(location, against: request.url)
            if hostOf(next) != hostOf(request.url) { request.headers.remove(name: "Authorization") }
            if response.status.code == 303 { request.method = .GET; request.body = nil }
            request.url = next
        }
        throw RegistryError.invalidResponse(url: first.url, reason: "too many redirects")
    }

    /// Sleeps before retry number `attempt`: `initialBackoff` doubled per retry, or `atLeast` when longer.
    private func backoff(_ attempt: Int, atLeast minimum: Duration? = nil) async throws(RegistryError) {
        do { try await Task.sleep(for: backoffDelay(attempt, atLeast: minimum)) } catch { throw .cancelled }
    }

    private func backoffDelay(_ attempt: Int, atLeast minimum: Duration?) -> Duration {
        max(options.initialBackoff * (1 << (attempt - 1)), minimum ?? .zero)
    }

    /// The error of a call whose next retry would pass the operation timeout: a timeout, saying
    /// what the last attempt met.
    static func pastDeadline(_ last: RegistryError, url: String, timeout: Duration?) -> RegistryError {
        .timedOut(url: url, reason: "gave up within the operation timeout (\(timeout.map { "\($0)" } ?? "none")); last attempt: \(last)")
    }

    /// The error reported when retries are exhausted: timeouts typed as such, anything else a
    /// transport failure.
    static func failure(_ error: any Error, url: String, during phase: String? = nil) -> RegistryError {
        let prefix = phase.map { "\($0): " } ?? ""
        if let error = error as? HTTPClientError {
            switch error {
            case .readTimeout: return .timedOut(url: url, reason: prefix + "no bytes within the read timeout")
            case .connectTimeout: return .timedOut(url: url, reason: prefix + "no connection within the connect timeout")
            case .deadlineExceeded: return .timedOut(url: url, reason: prefix + "the request timeout passed")
            default: break
            }
        }
        if case .connectTimeout = error as? ChannelError {
            return .timedOut(url: url, reason: prefix + "no connection within the connect timeout")
        }
        return .transport(url: url, reason: prefix + "\(error)")
    }

    /// The wait a `Retry-After` header asks for: delay-seconds, or an HTTP-date (IMF-fixdate,
    /// RFC 850 or asctime form) relative to `now`. Nil when absent or unreadable; never negative.
    static func retryAfterDelay(_ value: String?, now: Date) -> Duration? {
        guard let text = value?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        if text.allSatisfy(\.isASCII), let seconds = Int64(text) {
            return seconds >= 0 ? .seconds(seconds) : nil
        }
        for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = format
            if let date = formatter.date(from: text) {
                let millis = Int64((date.timeIntervalSince(now) * 1000).rounded(.up))
                return .milliseconds(max(0, millis))
            }
        }
        return nil
    }

    /// Answers a `WWW-Authenticate` challenge: basic with stored credentials, or a bearer token
    /// from the realm (with basic credentials when we have them, anonymous otherwise).
    private func authorize(challenge: String, registry: String) async throws(RegistryError) -> String? {
        let credential = options.credentials.credential(for: registry)
        let (scheme, params) = Self.parseChallenge(challenge)
        switch scheme.lowercased() {
        case "basic":
            return credential?.basicHeader
        case "bearer":
            guard let realm = params["realm"] else { throw .tokenFailed(realm: "?", reason: "challenge has no realm") }
            var components = URLComponents(string: realm)
            var items = components?.queryItems ?? []
            if let service = params["service"] { items.append(URLQueryItem(name: "service", value: service)) }
            if let scope = params["scope"] {
                for s in scope.split(separator: " ") { items.append(URLQueryItem(name: "scope", value: String(s))) }
            }
            components?.queryItems = items
            guard let url = components?.string else { throw .tokenFailed(realm: realm, reason: "bad realm URL") }
            var request = HTTPClientRequest(url: url)
            if let credential { request.headers.add(name: "Authorization", value: credential.basicHeader) }
            do {
                let response = try await http.execute(request, timeout: options.requestTimeout)
                let body = try await response.body.collect(upTo: 1 << 20)
                guard response.status == .ok else {
                    if response.status.code == 401 || response.status.code == 403 {
                        throw RegistryError.unauthorized(url: realm, status: Int(response.status.code), detail: String(buffer: body))
                    }
                    throw RegistryError.tokenFailed(realm: realm, reason: "HTTP \(response.status.code)")
                }
                struct Token: Decodable { var token: String?; var access_token: String? }
                let token = try JSONDecoder().decode(Token.self, from: Data(body.readableBytesView))
                guard let value = token.token ?? token.access_token else { throw RegistryError.tokenFailed(realm: realm, reason: "no token in reply") }
                return "Bearer " + value
            } catch let error as RegistryError {
                throw error
            } catch {
                throw .tokenFailed(realm: realm, reason: "\(error)")
            }
        default:
            return nil
        }
    }

    /// Splits `Bearer realm="…",service="…",scope="…"` into the scheme and its parameters.
    static func parseChallenge(_ header: String) -> (String, [String: String]) {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard let space = trimmed.firstIndex(of: " ") else { return (trimmed, [:]) }
        let scheme = String(trimmed[..<space])
        var params: [String: String] = [:]
        var rest = Substring(trimmed[trimmed.index(after: space)...])
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " || $0 == "," }
            guard let eq = rest.firstIndex(of: "=") else { break }
            let key = rest[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: eq)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                let end = rest.firstIndex(of: "\"") ?? rest.endIndex
                value = String(rest[..<end])
                rest = end < rest.endIndex ? rest[rest.index(after: end)...] : rest[end...]
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = String(rest[..<end])
                rest = rest[end...]
            }
            params[key] = value
        }
        return (scheme, params)
    }
}

/// `scheme://host[:port]` of a URL, for comparing origins.
func hostOf(_ url: String) -> String {
    guard let components = URLComponents(string: url) else { return url }
    return "\(components.scheme ?? "")://\(components.host ?? "")\(components.port.map { ":\($0)" } ?? "")"
}

/// Resolves a Location header (absolute, or relative to the request URL).
func resolve(_ location: String, against base: String) -> String {
    if location.hasPrefix("http://") || location.hasPrefix("https://") { return location }
    if location.hasPrefix("/") { return hostOf(base) + location }
    return URL(string: location, relativeTo: URL(string: base))?.absoluteString ?? location
}

func appendQuery(_ url: String, _ item: String) -> String {
    url + (url.contains("?") ? "&" : "?") + item
}
