import ArgumentParser
import EStargzCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body`; a failure is printed as `estargz: error: …` on stderr and exits 1.
public func runReportingErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as EStargzError {
        printError(error.description)
        throw ExitCode.failure
    }
}

/// Writes `estargz: error: MESSAGE` to stderr, unbuffered.
public func printError(_ message: String) {
    var line = "estargz: error: \(message)\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// Whether a CLI argument names an existing local file or directory (else it is a registry
/// reference); symlinks are followed, as `FileManager.fileExists` does.
public func isLocalFile(_ path: String) -> Bool {
    var status = stat()
    return stat(path, &status) == 0
}

/// `--toc-digest` and `--external-toc` of the commands that read a local blob (`verify`, and `ls`
/// and `cat`, which also take a registry reference, whose TOC image is found without a flag).
public struct LocalTOCOptions: ParsableArguments {
    @Option(help: "The trusted TOC digest (sha256:...) of a local blob, e.g. from the layer's annotation.")
    public var tocDigest: String?

    @Option(help: ArgumentHelp("The TOC of a local blob built with an external TOC (a TOC image layer); needs --toc-digest. Registry images find theirs.",
                               valueName: "TOCFILE"))
    public var externalTOC: String?

    public init() {}

    /// Opens the local blob at `path` with these options.
    public func open(_ path: String) throws -> LayerReader {
        try openLayer(path, tocDigest: tocDigest, externalTOC: externalTOC)
    }

    /// Refuses what applies to local blobs only, for a registry reference.
    public func checkForRegistry() throws {
        guard externalTOC == nil else {
            throw ValidationError("--external-toc is for local blobs: a registry image finds its TOC image (TAG-esgztoc) itself")
        }
    }
}

/// Opens a blob from a local file, verifying its TOC against `tocDigest` when given.
/// `externalTOC`: the file holding the TOC of a blob built with an external TOC.
public func openLayer(_ path: String, tocDigest: String?, externalTOC: String? = nil) throws -> LayerReader {
    try runReportingErrors {
        var expected: SHA256Digest?
        if let tocDigest {
            guard let digest = SHA256Digest(parsing: tocDigest) else {
                throw EStargzError.invalidArgument("--toc-digest \(tocDigest) is not sha256:<64 hex digits>")
            }
            expected = digest
        }
        let toc = try externalTOC.map { file in
            let source = try FileSource(path: file)
            return try source.read(at: 0, count: Int(source.size))
        }
        return try LayerReader(source: try FileSource(path: path), tocDigest: expected, externalTOC: toc)
    }
}

/// The whole of a small local text file (e.g. `--prioritized-files`), as UTF-8.
public func readTextFile(_ path: String) throws -> String {
    try runReportingErrors {
        let source = try FileSource(path: path)
        let bytes = try source.read(at: 0, count: Int(source.size))
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Creates (or truncates) `path` for writing, mode 0644; throws `EStargzError.io`.
public func createOutput(_ path: String) throws -> Int32 {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw EStargzError.io(operation: "create", path: path, errno: errno) }
    return fd
}

/// Closes a descriptor from `createOutput`.
public func closeFile(_ fd: Int32) -> Int32 { close(fd) }

func renameFile(_ from: String, _ to: String) throws {
    guard rename(from, to) == 0 else { throw EStargzError.io(operation: "rename", path: to, errno: errno) }
}

/// Writes all of `bytes` to stdout, retrying short writes.
public func writeToStandardOutput(_ bytes: [UInt8]) throws {
    try writeAll(1, bytes, path: "standard output")
}

/// Writes all of `bytes` to `fd`, retrying short writes.
func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 {
            if errno == EINTR { continue }
            throw EStargzError.io(operation: "write", path: path, errno: errno)
        }
        done += n
    }
}

extension String {
    /// Without leading and trailing spaces, tabs and carriage returns.
    public func trimmingSpaces() -> String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" || c == "\r" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s.removeLast() }
        return String(s)
    }
}

/// Buffered line output to stdout.
public struct StandardOutput {
    private var buffer: [UInt8] = []

    public init() {}

    /// Appends `line` and a newline.
    public mutating func write(_ line: String) {
        buffer += line.utf8
        buffer.append(10)
        if buffer.count > 1 << 16 { flush() }
    }

    /// Appends the bytes of one line and a newline.
    public mutating func write(line bytes: UnsafeBufferPointer<UInt8>) {
        buffer.append(contentsOf: bytes)
        buffer.append(10)
        if buffer.count > 1 << 16 { flush() }
    }

    /// Writes what is buffered.
    public mutating func flush() {
        try? writeToStandardOutput(buffer)
        buffer.removeAll(keepingCapacity: true)
    }
}

/// A progress line on stderr, only when stderr is a terminal.
public final class Progress: Sendable {
    private let label: String
    private let enabled = isatty(2) == 1
    private let lastPercent = Mutex(-1)

    public init(label: String) { self.label = label }

    /// Called from any thread (verification runs on all cores).
    public func update(done: Int64, total: Int64) {
        guard enabled, total > 0 else { return }
        let percent = Int(done * 100 / total)
        guard lastPercent.withLock({ last in
            defer { last = percent }
            return last != percent
        }) else { return }
        var line = "\r\(label): \(percent)% (\(done >> 20) of \(total >> 20) MiB)"
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }

    /// Ends the line, if one was printed.
    public func finish() {
        guard enabled, lastPercent.withLock({ $0 }) >= 0 else { return }
        var line = "\n"
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}
