import EStargzRemote
import LazyFS
import Foundation

/// The snapshotter's configuration file, a small TOML document:
///
/// ```toml
/// [registry]
/// mirrors = ["mirror.internal:5000"]          # tried in order before the image's own registry
/// plain_http_hosts = ["registry.lan:5000"]     # loopback registries are always plain HTTP
/// [registry.credentials]
/// "registry.lan:5000" = "user:password"       # ~/.docker/config.json is read too
/// [fetch]
/// prefetch = true                              # the prioritized region, right after mounting a layer
/// background = false                           # then everything else, politely
/// block_kib = 4                                # registry read granularity (each miss fetches whole blocks)
/// tail_kib = 64                                # a layer's first read: footer and (small) TOC
/// read_ahead = true                            # guess what reads come next (startup files, program
///                                              # libraries, directories being read file by file)
/// read_ahead_directory_kib = 2048              # largest rest of a directory read ahead (0: none)
/// timeout_seconds = 30                         # a registry read (retries included) fails after this: EIO
/// [cache]
/// directory = "/var/lib/estargz-snapshotter/cache"
/// capacity_mib = 1024                         # verified chunks on disk
/// memory_mib = 128                             # verified chunks in memory, in front of the disk
/// [fuse_manager]
/// enable = false                               # serve lazy layers from `estargz fuse-manager`, which
///                                              # outlives snapshotter restarts (running containers keep reading)
/// address = "/run/estargz-snapshotter/fuse-manager.sock"   # default: ROOT/fuse-manager.sock
/// ```
///
/// Only what is shown is understood (tables, string / integer / boolean values and arrays of
/// strings); anything else is an error that names the line, so a typo never passes silently.
public struct SnapshotterConfig: Sendable, Equatable {
    public var mirrors: [String] = []
    public var plainHTTPHosts: [String] = []
    public var credentials: [String: String] = [:]
    public var prefetch = true
    public var backgroundFetch = false
    /// Granularity of registry range reads and of the in-memory block cache, in KiB.
    public var fetchBlockKiB = 4
    /// How much of a layer's end the first request reads, in KiB (a larger TOC costs one more request).
    public var tailKiB = 64
    /// LazyFS read-ahead (``LazyFS/LazyFileSystem/ReadAhead``) on or off.
    public var readAhead = true
    /// The most compressed bytes of a directory's rest read ahead at once, in KiB (0: no directory read-ahead).
    public var readAheadDirectoryKiB = 2048
    /// How long one registry read may take, retries included, before the file read that needs it
    /// fails with `EIO` (a registry outage must not hang readers), in seconds.
    public var fetchTimeoutSeconds = 30
    public var cacheDirectory: String?
    public var cacheCapacityMiB: Int = 1024
    /// Verified chunks kept in memory in front of the disk cache, shared by all layers, in MiB.
    public var memoryCacheMiB: Int = 128
    /// Serve lazily mounted layers from a fuse manager process that outlives the snapshotter.
    public var fuseManager = false
    /// The fuse manager's socket (nil: ROOT/fuse-manager.sock).
    public var fuseManagerAddress: String?

    public init() {}

    /// Reads and parses `path`.
    public init(contentsOf path: String) throws {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw SnapshotterError.invalidArgument("cannot read config \(path): \(error.localizedDescription)")
        }
        try self.init(parsing: text)
    }

    /// Parses the TOML text of a config file.
    public init(parsing text: String) throws {
        var table = ""
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = Self.stripComment(String(rawLine)).trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty else { continue }
            func fail(_ why: String) -> SnapshotterError { .invalidArgument("config line \(number + 1): \(why)") }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), !line.hasPrefix("[[") else { throw fail("bad table header \(line)") }
                table = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
                guard ["registry", "registry.credentials", "fetch", "cache", "fuse_manager"].contains(table) else { throw fail("unknown table [\(table)]") }
                continue
            }
            guard let equals = line.firstIndex(of: "=") else { throw fail("expected key = value") }
            var key = line[..<equals].trimmingCharacters(in: .whitespaces)
            if key.hasPrefix("\""), key.hasSuffix("\""), key.count >= 2 { key = String(key.dropFirst().dropLast()) }
            let value = try Value(parsing: line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces), fail: fail)
            switch (table, key, value) {
            case ("registry", "mirrors", .strings(let v)): mirrors = v
            case ("registry", "plain_http_hosts", .strings(let v)): plainHTTPHosts = v
            case ("registry.credentials", _, .string(let v)):
                guard v.contains(":") else { throw fail("credentials are \"user:password\"") }
                credentials[key] = v
            case ("fetch", "prefetch", .bool(let v)): prefetch = v
            case ("fetch", "background", .bool(let v)): backgroundFetch = v
            case ("fetch", "block_kib", .integer(let v)) where v >= 4 && v <= 16 * 1024: fetchBlockKiB = v
            case ("fetch", "tail_kib", .integer(let v)) where v >= 1 && v <= 64 * 1024: tailKiB = v
            case ("fetch", "timeout_seconds", .integer(let v)) where v >= 1 && v <= 3600: fetchTimeoutSeconds = v
            case ("fetch", "read_ahead", .bool(let v)): readAhead = v
            case ("fetch", "read_ahead_directory_kib", .integer(let v)) where v >= 0 && v <= 1024 * 1024: readAheadDirectoryKiB = v
            case ("cache", "directory", .string(let v)): cacheDirectory = v
            case ("cache", "capacity_mib", .integer(let v)) where v > 0: cacheCapacityMiB = v
            case ("cache", "memory_mib", .integer(let v)) where v > 0: memoryCacheMiB = v
            case ("fuse_manager", "enable", .bool(let v)): fuseManager = v
            case ("fuse_manager", "address", .string(let v)) where !v.isEmpty: fuseManagerAddress = v
            default: throw fail("unknown or mistyped setting \(key) in [\(table)]")
            }
        }
    }

    /// The lazy-layer server these settings describe, in this process.
    /// - Parameters:
    ///   - cacheDirectory: the chunk cache directory when given on the command line (it wins over `[cache] directory`).
    ///   - root: the snapshotter's root, whose `cache` directory is the default.
    ///   - plainHTTP: plain HTTP for every registry.
    public func makeRemoteLayers(cacheDirectory: String?, root: String, plainHTTP: Bool) throws -> RemoteLayers {
        var registry = registryOptions
        registry.plainHTTP = plainHTTP
        return try RemoteLayers(registry: registry, cacheDirectory: cacheDirectory ?? self.cacheDirectory ?? root + "/cache",
                                cacheCapacity: Int64(cacheCapacityMiB) << 20, memoryCacheCapacity: memoryCacheMiB << 20,
                                prefetch: prefetch, backgroundFetch: backgroundFetch,
                                fetchBlockSize: Int64(fetchBlockKiB) << 10, tailSize: Int64(tailKiB) << 10,
                                readAhead: readAheadPolicy)
    }

    /// The read-ahead these settings ask for.
    public var readAheadPolicy: LazyFileSystem.ReadAhead {
        guard readAhead else { return .off }
        var policy = LazyFileSystem.ReadAhead()
        policy.directories = readAheadDirectoryKiB > 0
        policy.directoryLimit = Int64(readAheadDirectoryKiB) << 10
        return policy
    }

    /// Registry client settings from this config.
    public var registryOptions: RegistryClient.Options {
        var options = RegistryClient.Options()
        options.mirrors = mirrors
        options.plainHTTPHosts = Set(plainHTTPHosts)
        var explicit: [String: RegistryCredential] = [:]
        for (host, pair) in credentials {
            let parts = pair.split(separator: ":", maxSplits: 1)
            explicit[host] = RegistryCredential(username: String(parts[0]), password: parts.count > 1 ? String(parts[1]) : "")
        }
        options.credentials = CredentialStore(explicit: explicit)
        options.applyFetchTimeout(.seconds(fetchTimeoutSeconds))
        return options
    }

    private enum Value {
        case string(String), strings([String]), bool(Bool), integer(Int)

        init(parsing text: String, fail: (String) -> SnapshotterError) throws {
            if text == "true" { self = .bool(true); return }
            if text == "false" { self = .bool(false); return }
            if let number = Int(text) { self = .integer(number); return }
            if let string = Self.quoted(text) { self = .string(string); return }
            if text.hasPrefix("["), text.hasSuffix("]") {
                let inner = text.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                var items: [String] = []
                for item in inner.split(separator: ",") {
                    let trimmed = item.trimmingCharacters(in: .whitespaces)
                    if trimmed.isEmpty { continue }
                    guard let string = Self.quoted(trimmed) else { throw fail("arrays hold quoted strings") }
                    items.append(string)
                }
                self = .strings(items)
                return
            }
            throw fail("cannot read value \(text)")
        }

        static func quoted(_ text: String) -> String? {
            guard text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") else { return nil }
            let body = text.dropFirst().dropLast()
            guard !body.contains("\"") else { return nil }
            return String(body)
        }
    }

    private static func stripComment(_ line: String) -> String {
        var inString = false
        for (index, character) in zip(line.indices, line) {
            if character == "\"" { inString.toggle() }
            if character == "#", !inString { return String(line[..<index]) }
        }
        return line
    }
}
