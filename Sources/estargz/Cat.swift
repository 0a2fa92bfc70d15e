import ArgumentParser
import EStargzCore
import EStargzRemote

struct Cat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write one file of an eStargz blob or image to standard output, verifying it.",
        discussion: """
            PATH is relative to the layer root; a leading '/' is optional. REF is a local blob, or a registry \
            reference read lazily: an image (its layers merged in order) or REPO@sha256:... of one layer blob.
            """
    )

    @Argument(help: "A local eStargz blob or a registry reference.")
    var blob: String

    @Argument(help: "The file inside the layer or image.")
    var path: String

    @Option(help: "The trusted TOC digest (sha256:...) of a local blob.")
    var tocDigest: String?

    @OptionGroup var registry: RegistryOptions

    @Flag(help: "Print what was fetched from the registry on standard error.")
    var stats = false

    func run() throws {
        if isLocalFile(blob) {
            let layer = try openLayer(blob, tocDigest: tocDigest)
            try write(layer: layer)
            return
        }
        let (image, client) = try openRemoteImage(blob, registry: registry)
        defer { try? client.syncShutdown() }
        guard let (layer, _) = image.lookup(path) else {
            printError(EStargzError.notFound(path).description)
            throw ExitCode.failure
        }
        try write(layer: layer.reader)
        if stats { printStatistics(image) }
    }

    private func write(layer: LayerReader) throws {
        try runReportingRemoteErrors {
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
