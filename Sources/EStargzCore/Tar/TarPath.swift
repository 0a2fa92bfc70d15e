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
