import ArgumentParser
import EStargzCore

struct Cat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write one file of an eStargz blob to standard output, verifying it.",
        discussion: "PATH is relative to the layer root; a leading '/' is optional."
    )

    @Argument(help: "The eStargz blob.")
    var blob: String

    @Argument(help: "The file inside the layer.")
    var path: String

    @Option(help: "The trusted TOC digest (sha256:...).")
    var tocDigest: String?

    func run() throws {
        let layer = try openLayer(blob, tocDigest: tocDigest)
        try runReportingErrors {
            guard let file = layer.entry(at: path) else { throw EStargzError.notFound(path) }
            guard file.kind == .regular else {
                throw EStargzError.wrongType(entry: file.path, expected: "reg", actual: file.kind.rawValue)
            }
            for chunk in layer.chunks(of: file) {
                let bytes = try layer.read(path: file.path, offset: chunk.fileOffset, count: Int(chunk.size))
                try writeToStandardOutput(bytes)
            }
        }
    }
}
