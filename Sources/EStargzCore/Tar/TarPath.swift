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
        // Most names are clean already but for a leading "./" (tar -C dir .), leading "/" or one
        // trailing "/" (directories): cut those off without splitting the name into components.
        if let clean = cleanSpan(name) {
            return clean == 0 ..< name.utf8.count ? name : String(name.utf8[name.utf8.index(name.utf8.startIndex, offsetBy: clean.lowerBound) ..< name.utf8.index(name.utf8.startIndex, offsetBy: clean.upperBound)])!
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

    /// The byte range of `name` that is its clean form, when the name is clean but for leading
    /// "/" and "./" and one trailing "/"; nil when it needs the general path ("//", "." or ".."
    /// components inside).
    private static func cleanSpan(_ name: String) -> Range<Int>? {
        var name = name
        return name.withUTF8 { bytes -> Range<Int>? in
            let count = bytes.count
            var start = 0
            // Leading empty and "." components.
            while start < count {
                if bytes[start] == UInt8(ascii: "/") {
                    start += 1
                } else if bytes[start] == UInt8(ascii: "."), start + 1 == count || bytes[start + 1] == UInt8(ascii: "/") {
                    start += 1
                } else {
                    break
                }
            }
            guard start < count else { return 0 ..< 0 }
            var componentStart = start
            var i = start
            while i <= count {
                if i == count || bytes[i] == UInt8(ascii: "/") {
                    let length = i - componentStart
                    if length == 0 {
                        // Empty component: fine only as the one trailing "/" after a real component.
                        return (i == count && bytes[i - 1] == UInt8(ascii: "/") && bytes[i - 2] != UInt8(ascii: "/"))
                            ? start ..< count - 1 : nil
                    }
                    if bytes[componentStart] == UInt8(ascii: "."),
                       length == 1 || (length == 2 && bytes[componentStart + 1] == UInt8(ascii: ".")) {
                        return nil
                    }
                    componentStart = i + 1
                }
                i += 1
            }
            return start ..< count
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
