import ArgumentParser
import Dispatch
import EStargzCommands
import EStargzCore
import EStargzRemote
import Foundation
import LazyFS
import Snapshotter

extension RegistryOptions {
    func makeCache() throws -> any ChunkCache {
        guard let cacheDir else { return MemoryChunkCache() }
        return try runReportingRemoteErrors { try DiskChunkCache(directory: cacheDir) }
    }

    func makeClient() -> RegistryClient {
        var options = RegistryClient.Options()
        options.plainHTTP = plainHTTP
        options.readTimeout = .seconds(Int64(readTimeout))
        options.connectTimeout = .seconds(Int64(connectTimeout))
        return RegistryClient(options: options)
    }

    func parsedPlatform() throws -> Platform {
        guard let platform else { return .current }
        return try runReportingRemoteErrors { try Platform(parsing: platform) }
    }
}

/// `--progress` / `--quiet` for commands that report steps on stderr.
struct ProgressOptions: ParsableArguments {
    @Flag(help: "Print a line per step on stderr even when it is not a terminal (by default only on a terminal).")
    var progress = false

    @Flag(help: "Print no progress lines (errors still go to stderr).")
    var quiet = false

    func validate() throws {
        if progress && quiet { throw ValidationError("--progress and --quiet exclude each other") }
    }

    /// Whether to print progress: asked for, or stderr is a terminal and not --quiet.
    var enabled: Bool { progress || (!quiet && isatty(STDERR_FILENO) == 1) }

    /// The reporter to hand to the library: one line each on stderr, or nothing.
    var reporter: @Sendable (String) -> Void {
        guard enabled else { return { _ in } }
        return { line in FileHandle.standardError.write(Data("\(line)\n".utf8)) }
    }
}

/// Runs async work from a synchronous command (the main thread is no cooperative-pool thread,
/// so blocking it is safe).
func runBlocking<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
    nonisolated(unsafe) var result: Result<T, any Error>?
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        do { result = .success(try await operation()) } catch { result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try result!.get()
}

/// Like `runReportingErrors`, for registry and mount errors too.
func runReportingRemoteErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as RegistryError {
        printError(error.description)
        throw ExitCode.failure
    } catch let error as EStargzError {
        printError(error.description)
        throw ExitCode.failure
    } catch let error as LazyFSError {
        printError(error.description)
        throw ExitCode.failure
    }
}

/// Opens a registry image (or layer blob) lazily; the caller shuts the client down.
func openRemoteImage(_ text: String, registry: RegistryOptions) throws -> (RemoteImage, RegistryClient) {
    let client = registry.makeClient()
    do {
        let platform = try registry.parsedPlatform()
        let cache = try registry.makeCache()
        let image = try runReportingRemoteErrors {
            let reference = try ImageReference(parsing: text)
            return try runBlocking {
                try await RemoteImage.open(client: client, reference: reference, platform: platform, cache: cache)
            }
        }
        return (image, client)
    } catch {
        try? client.syncShutdown()
        throw error
    }
}

/// The `--stats` report on stderr.
func printStatistics(_ image: RemoteImage) {
    let fetched = image.statistics
    let blobBytes = image.layers.reduce(Int64(0)) { $0 + $1.source.size }
    let verified = image.layers.reduce(into: (chunksVerified: Int64(0), cacheHits: Int64(0), verificationFailures: Int64(0))) { total, layer in
        let s = layer.reader.statistics
        total.chunksVerified += s.chunksVerified
        total.cacheHits += s.cacheHits
        total.verificationFailures += s.verificationFailures
    }
    let text = """
        layers: \(image.layers.count), blob bytes: \(blobBytes)
        fetched: \(fetched.bytesFetched) bytes in \(fetched.requests) requests
        block cache: \(fetched.cacheHits) hits, \(fetched.cacheMisses) misses, \(fetched.sharedWaits) shared
        chunks: \(verified.chunksVerified) verified, \(verified.cacheHits) cache hits, \(verified.verificationFailures) verification failures

        """
    FileHandle.standardError.write(Data(text.utf8))
}

/// SRC and DST of the image commands that read one image and write another.
struct ImageEndpoints: ParsableArguments {
    @Argument(help: "The source image: a registry reference or oci:DIR[:TAG].")
    var source: String

    @Argument(help: "The destination: a registry reference or oci:DIR[:TAG].")
    var destination: String

    /// Both parsed, or the error for the one that does not parse (reported the remote commands' way).
    func locations() throws -> (source: ImageLocation, destination: ImageLocation) {
        try runReportingRemoteErrors { (try ImageLocation(parsing: source), try ImageLocation(parsing: destination)) }
    }
}

/// What the commands that serve lazy layers (`snapshotter`, `fuse-manager`, `store`) share: the
/// config file, the chunk cache directory and plain HTTP, and the lazy-layer server they describe.
struct LazyLayerOptions: ParsableArguments {
    @Option(help: "A TOML config file: [registry] mirrors / plain_http_hosts / credentials, [fetch], [cache], [fuse_manager].")
    var config: String?

    @Option(help: "Directory of the verified-chunk cache shared by all layers (default: the config's, or ROOT/cache).")
    var cacheDirectory: String?

    @Flag(help: "Use plain HTTP for every registry (loopback registries always use it).")
    var plainHTTP = false

    /// The config file's settings (the defaults without one); a bad file is an error that names the line.
    func settings() throws -> SnapshotterConfig {
        do { return try config.map(SnapshotterConfig.init(contentsOf:)) ?? SnapshotterConfig() } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
    }

    /// The lazy-layer server these options and `settings` describe, its state under `root`.
    func makeRemoteLayers(_ settings: SnapshotterConfig, root: String) throws -> RemoteLayers {
        try settings.makeRemoteLayers(cacheDirectory: cacheDirectory, root: root, plainHTTP: plainHTTP)
    }

    /// The same options as command-line arguments, for a process started with them (the fuse manager).
    var arguments: [String] {
        (config.map { ["--config", $0] } ?? []) + (cacheDirectory.map { ["--cache-directory", $0] } ?? []) + (plainHTTP ? ["--plain-http"] : [])
    }
}
