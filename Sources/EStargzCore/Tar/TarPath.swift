/// Entry-name rules shared by the layer writer, the TOC and the extractor.
///
/// Two different jobs, deliberately separate:
/// - ``clean(_:)`` normalizes a name the way the Go reference does for TOC entries; it
///   cannot fail, and silently drops ".." at the root (what `path.Clean("/" + name)` does).
/// - ``safeComponents(_:)`` is for creating files under a root directory; it refuses names
///   that *try* to climb out, instead of quietly rewriting them, so a hostile archive is noticed.
public enum TarPath {
    /// The reference's `cleanEntryName`: `path.Clean("/" + name)` without the leading "/".
    ///
    /// `"./a//b/../c/"` → `"a/c"`; `""`, `"/"` and `"."` → `""`; `"../x"` → `"x"`.
    public static func clean(_ name: String) -> String {
        // Most names (every name our writer and Go's emit, but for directories' trailing "/")
        // are clean already, or clean but for one trailing "/": return them without splitting.
        if let clean = cleanPrefixLength(name) {
            return clean == name.utf8.count ? name : String(name.utf8.prefix(clean))!
        }
        var stack: [Substring] = []
        for component in name.split(separator: "/", omittingEmptySubsequences: true) {
            switch component {
            case ".": continue
            case "..": if !stack.isEmpty { stack.removeLast() }
            default: stack.append(component)
            }
        }
        return stack.joined(separator: "/")
    }

    /// When `name` is already clean, or clean but for one trailing "/", the length of its clean
    /// form; nil when it needs the general path (leading "/", "//", "." or ".." components).
    private static func cleanPrefixLength(_ name: String) -> Int? {
        var name = name
        return name.withUTF8 { bytes -> Int? in
            let count = bytes.count
            guard count > 0 else { return 0 }
            var componentStart = 0
            var i = 0
            while i <= count {
                if i == count || bytes[i] == UInt8(ascii: "/") {
                    let length = i - componentStart
                    if length == 0 {
                        // Empty component: fine only as the one trailing "/" after a real component.
                        return (i == count && componentStart > 0 && bytes[i - 1] == UInt8(ascii: "/")
                                && i >= 2 && bytes[i - 2] != UInt8(ascii: "/")) ? count - 1 : nil
                    }
                    if bytes[componentStart] == UInt8(ascii: "."),
                       length == 1 || (length == 2 && bytes[componentStart + 1] == UInt8(ascii: ".")) {
                        return nil
                    }
                    componentStart = i + 1
                }
                i += 1
            }
            return count
        }
    }

    /// Components of `name` that are safe to create under a root directory.
    ///
    /// The rule, applied to the raw name (not to ``clean(_:)``'s output, which hides attacks):
    /// - A NUL byte anywhere → ``EStargzError/hostilePath(_:)``.
    /// - Leading "/" characters are dropped: an absolute name is taken relative to the root,
    ///   as GNU tar does, so `"/etc/passwd"` → `["etc", "passwd"]`.
    /// - Empty and "." components are dropped; ".." removes the previous component, and a
    ///   ".." with nothing left to remove (it would climb above the root) → `.hostilePath`.
    ///   So `"a/../b"` → `["b"]` but `"../x"` and `"a/../../x"` are refused.
    /// - The root itself (`""`, `"/"`, `"."`) is `[]`.
    ///
    /// Components are resolved lexically; the extractor must still refuse to follow
    /// symlinks already created under the root.
    public static func safeComponents(_ name: String) throws -> [String] {
        if name.utf8.contains(0) { throw EStargzError.hostilePath(name) }
        var stack: [String] = []
        for component in name.split(separator: "/", omittingEmptySubsequences: true) {
            switch component {
            case ".": continue
            case "..":
                guard !stack.isEmpty else { throw EStargzError.hostilePath(name) }
                stack.removeLast()
            default: stack.append(String(component))
            }
        }
        return stack
    }
}
