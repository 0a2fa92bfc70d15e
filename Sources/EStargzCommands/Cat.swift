import ArgumentParser
import EStargzCore

/// `estargz cat`: a local blob here, a registry reference through `Registry`.
public struct Cat<Registry: RegistryReading>: ParsableCommand {
    public static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: "cat",
            abstract: "Write one file of an eStargz blob or image to standard output, verifying it.",
            discussion: """
                PATH is relative to the layer root; a leading '/' is optional. REF is a local blob, or a registry \
                reference read lazily: an image (its layers merged in order) or REPO@sha256:... of one layer blob.
                """
        )
    }

    @Argument(help: "A local eStargz blob or a registry reference.")
    public var blob: String

    @Argument(help: "The file inside the layer or image.")
    public var path: String

    @OptionGroup public var local: LocalTOCOptions

    @OptionGroup public var registry: RegistryOptions

    @Flag(help: "Print what was fetched from the registry on standard error.")
    public var stats = false

    public init() {}

    public func run() throws {
        guard isLocalFile(blob) else {
            try local.checkForRegistry()
            return try Registry.cat(self)
        }
        let layer = try local.open(blob)
        try runReportingErrors { try write(layer: layer) }
    }

    /// Writes `path` of `layer` to standard output chunk by chunk, each verified as it is read.
    /// Throws `EStargzError` (`notFound`, `wrongType`, read and verification errors).
    public func write(layer: LayerReader) throws {
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
