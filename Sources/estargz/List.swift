import ArgumentParser
import EStargzCore

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List the entries of an eStargz blob from its TOC.",
        discussion: "Paths are relative to the layer root, depth-first in name order."
    )

    @Argument(help: "The eStargz blob.")
    var blob: String

    @Option(help: "The trusted TOC digest (sha256:...).")
    var tocDigest: String?

    @Flag(help: "One JSON object per line: name, type, size, mode, uid, gid, modtime, linkName, devMajor, devMinor, xattrs (base64), digest, numLink.")
    var json = false

    @Flag(name: .shortAndLong, help: "Long listing: type and mode, owner, size, mtime, path.")
    var long = false

    func run() throws {
        let layer = try openLayer(blob, tocDigest: tocDigest)
        var out = StandardOutput()
        layer.walk { path, entry in
            guard !path.isEmpty else { return true }
            if json {
                out.write(JSONText.object(EntryJSON.fields(path: path, entry: entry)))
            } else if long {
                out.write(LongListing.line(path: path, entry: entry))
            } else {
                out.write(path)
            }
            return true
        }
        out.flush()
    }
}
