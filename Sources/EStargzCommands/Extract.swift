import ArgumentParser
import EStargzCore

/// `estargz extract`: a local blob unpacked into a directory.
public struct Extract: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Unpack an eStargz blob into a directory, verifying every chunk.",
        discussion: """
            Like `tar -x --numeric-owner --xattrs -p` as root: modes, owners, mtimes, symlinks, hardlinks, \
            devices, fifos and xattrs. Refuses any path that would escape DIR.
            """
    )

    @Argument(help: "The eStargz blob.")
    var blob: String

    @Argument(help: "The directory to unpack into (created if missing).")
    var directory: String

    @Option(help: "The trusted TOC digest (sha256:...).")
    var tocDigest: String?

    public init() {}

    public func run() throws {
        let layer = try openLayer(blob, tocDigest: tocDigest)
        let total = layer.totalChunkBytes
        let progress = Progress(label: "extract")
        try runReportingErrors {
            try layer.extract(to: directory) { progress.update(done: $0, total: total) }
        }
        progress.finish()
    }
}
