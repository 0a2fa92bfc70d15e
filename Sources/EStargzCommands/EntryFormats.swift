import EStargzCore

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
