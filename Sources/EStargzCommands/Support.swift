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

/// Opens a blob from a local file, verifying its TOC against `tocDigest` when given.
public func openLayer(_ path: String, tocDigest: String?) throws -> LayerReader {
    try runReportingErrors {
        var expected: SHA256Digest?
        if let tocDigest {
            guard let digest = SHA256Digest(parsing: tocDigest) else {
                throw EStargzError.invalidArgument("--toc-digest \(tocDigest) is not sha256:<64 hex digits>")
            }
            expected = digest
        }
        return try LayerReader(source: try FileSource(path: path), tocDigest: expected)
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
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { write(1, $0.baseAddress! + done, $0.count - done) }
        if n < 0 {
            if errno == EINTR { continue }
            throw EStargzError.io(operation: "write", path: "standard output", errno: errno)
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

/// Minimal JSON output for the CLI's machine-readable forms.
public enum JSONText {
    /// A string, an integer or an object with ordered keys.
    public enum Value {
        case string(String)
        case number(Int64)
        case object([(String, Value)])
    }

    /// `fields` as one JSON object, keys in the given order.
    public static func object(_ fields: [(String, Value)]) -> String {
        render(.object(fields))
    }

    /// One value as JSON text.
    public static func render(_ value: Value) -> String {
        switch value {
        case let .string(s): return quote(s)
        case let .number(n): return String(n)
        case let .object(fields):
            return "{" + fields.map { quote($0.0) + ":" + render($0.1) }.joined(separator: ",") + "}"
        }
    }

    /// `s` as a JSON string literal.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [alphabet[Int(v >> 18 & 63)], alphabet[Int(v >> 12 & 63)], alphabet[Int(v >> 6 & 63)], alphabet[Int(v & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest > 0 {
            let v = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
            out += [alphabet[Int(v >> 18 & 63)], alphabet[Int(v >> 12 & 63)]]
            out += rest == 2 ? [alphabet[Int(v >> 6 & 63)], UInt8(ascii: "=")] : [UInt8(ascii: "="), UInt8(ascii: "=")]
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The `ls --json` object for one entry.
enum EntryJSON {
    static func fields(path: String, entry: LayerEntry) -> [(String, JSONText.Value)] {
        var fields: [(String, JSONText.Value)] = [
            ("name", .string(path)),
            ("type", .string(entry.kind.rawValue)),
            ("size", .number(entry.size)),
            ("mode", .number(entry.mode)),
            ("uid", .number(Int64(entry.uid))),
            ("gid", .number(Int64(entry.gid))),
            ("modtime", .number(entry.modificationTime)),
            ("linkName", .string(entry.linkName)),
            ("devMajor", .number(Int64(entry.tocEntry.devMajor))),
            ("devMinor", .number(Int64(entry.tocEntry.devMinor))),
            ("xattrs", .object(entry.xattrs.sorted { $0.key < $1.key }.map { ($0.key, .string(Base64.encode($0.value))) })),
            ("numLink", .number(Int64(entry.linkCount))),
        ]
        if entry.kind == .regular { fields.append(("digest", .string(entry.tocEntry.digest))) }
        return fields
    }
}

/// `ls -l`-like line: type+permissions, uid/gid, size, mtime, path (-> target).
enum LongListing {
    static func line(path: String, entry: LayerEntry) -> String {
        let type: Character
        switch entry.kind {
        case .directory: type = "d"
        case .symlink: type = "l"
        case .characterDevice: type = "c"
        case .blockDevice: type = "b"
        case .fifo: type = "p"
        case .hardlink: type = "h"
        case .regular, .chunk: type = "-"
        }
        var permissions = ""
        let bits = Array("rwxrwxrwx")
        for i in 0 ..< 9 { permissions.append(entry.mode & (1 << (8 - i)) != 0 ? bits[i] : "-") }
        var line = "\(type)\(permissions) \(entry.uid)/\(entry.gid) \(entry.size) \(entry.tocEntry.modTime.isEmpty ? "-" : entry.tocEntry.modTime) \(path)"
        if entry.kind == .symlink { line += " -> \(entry.linkName)" }
        return line
    }
}
