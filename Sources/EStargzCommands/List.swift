import ArgumentParser
import EStargzCore

/// `estargz ls`: a local blob here, a registry reference through `Registry`.
public struct List<Registry: RegistryReading>: ParsableCommand {
    public static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: "ls",
            abstract: "List the entries of an eStargz blob or image from its TOC.",
            discussion: """
                Paths are relative to the layer root, depth-first in name order. REF is a local blob, or a registry \
                reference read lazily (only footers and TOCs are fetched): an image, its layers merged in order with \
                whiteouts applied, or REPO@sha256:... of one layer blob.
                """
        )
    }

    @Argument(help: "A local eStargz blob or a registry reference.")
    public var blob: String

    @OptionGroup public var local: LocalTOCOptions

    @Flag(help: "One JSON object per line: name, type, size, mode, uid, gid, modtime, linkName, devMajor, devMinor, xattrs (base64), digest, numLink.")
    public var json = false

    @Flag(name: .shortAndLong, help: "Long listing: type and mode, owner, size, mtime, path.")
    public var long = false

    @OptionGroup public var registry: RegistryOptions

    @Flag(help: "Print what was fetched from the registry on standard error.")
    public var stats = false

    public init() {}

    public func run() throws {
        guard isLocalFile(blob) else {
            try local.checkForRegistry()
            return try Registry.list(self)
        }
        var out = StandardOutput()
        let layer = try local.open(blob)
        if json || long {
            layer.walk { path, entry in
                guard !path.isEmpty else { return true }
                write(path, entry, to: &out)
                return true
            }
        } else {
            // Paths straight from the reader's table into the output buffer.
            layer.walkPaths { path, _ in
                if !path.isEmpty { out.write(line: path) }
                return true
            }
        }
        out.flush()
    }

    /// One entry as `--json`, `--long` or the bare path asks.
    public func write(_ path: String, _ entry: LayerEntry, to out: inout StandardOutput) {
        if json {
            out.write(JSONText.object(EntryJSON.fields(path: path, entry: entry)))
        } else if long {
            out.write(LongListing.line(path: path, entry: entry))
        } else {
            out.write(path)
        }
    }
}
