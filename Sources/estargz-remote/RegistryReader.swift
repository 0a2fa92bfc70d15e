import ArgumentParser
import EStargzCommands
import EStargzCore
import EStargzRemote

/// `ls` and `cat` of a registry reference: the image (or layer blob) opened lazily, only
/// footers, TOCs and the chunks read fetched.
enum RegistryReader: RegistryReading {
    static func list(_ command: List<Self>) throws {
        var out = StandardOutput()
        let (image, client) = try openRemoteImage(command.blob, registry: command.registry)
        defer { try? client.syncShutdown() }
        for item in image.mergedEntries() { command.write(item.path, item.entry, to: &out) }
        if command.stats { printStatistics(image) }
        out.flush()
    }

    static func cat(_ command: Cat<Self>) throws {
        let (image, client) = try openRemoteImage(command.blob, registry: command.registry)
        defer { try? client.syncShutdown() }
        guard let (layer, _) = image.lookup(command.path) else {
            printError(EStargzError.notFound(command.path).description)
            throw ExitCode.failure
        }
        try runReportingRemoteErrors { try command.write(layer: layer.reader) }
        if command.stats { printStatistics(image) }
    }
}
