import ArgumentParser
import EStargzCore

/// `estargz verify`: every chunk of a local blob against its TOC.
public struct Verify: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Read and verify every chunk of an eStargz blob.",
        discussion: "Exits 0 only if the TOC (against --toc-digest when given) and every chunk digest match."
    )

    @Argument(help: "The eStargz blob.")
    var blob: String

    @OptionGroup var local: LocalTOCOptions

    public init() {}

    public func run() throws {
        let layer = try local.open(blob)
        let total = layer.totalChunkBytes
        let progress = Progress(label: "verify")
        try runReportingErrors {
            try layer.verifyAllChunks { progress.update(done: $0, total: total) }
        }
        progress.finish()
        print("OK: TOC \(layer.tocDigest), \(layer.tocEntryCount) entries, \(total) bytes verified")
    }
}
