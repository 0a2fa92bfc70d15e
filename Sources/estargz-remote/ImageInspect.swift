import ArgumentParser
import EStargzCommands
import EStargzCore
import EStargzRemote
import Foundation

struct ImageInspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print an image's manifest: config, layers, sizes and eStargz annotations.",
        discussion: "Reads only the manifest (and index), never the layers."
    )

    @Argument(help: "The image: a registry reference or oci:DIR[:TAG].")
    var reference: String

    @OptionGroup var registry: RegistryOptions

    @Flag(help: "Print the manifest JSON as stored.")
    var raw = false

    func run() throws {
        let location = try runReportingRemoteErrors { try ImageLocation(parsing: reference) }
        let platform = try registry.parsedPlatform()
        let (manifest, bytes, digest): (ImageManifest, [UInt8], String)
        switch location {
        case let .registry(ref):
            let client = registry.makeClient()
            defer { try? client.syncShutdown() }
            let image = try runReportingRemoteErrors { try runBlocking { try await client.resolveImage(ref, platform: platform) } }
            (manifest, bytes, digest) = (image.manifest, image.manifestBytes, image.manifestDigest)
        case let .layout(directory, tag):
            (manifest, bytes, digest) = try runReportingRemoteErrors {
                let resolved = try OCILayout(directory: directory).resolve(tag: tag, platform: platform)
                return (resolved.manifest, resolved.bytes, resolved.digest)
            }
        }
        if raw {
            FileHandle.standardOutput.write(Data(bytes))
            print()
            return
        }
        print("manifest: \(digest) (\(manifest.mediaType ?? MediaType.ociManifest))")
        print("config:   \(manifest.config.digest) \(manifest.config.size) bytes")
        for (index, layer) in manifest.layers.enumerated() {
            print("layer \(index + 1): \(layer.digest) \(layer.size) bytes \(layer.mediaType)")
            for (key, value) in (layer.annotations ?? [:]).sorted(by: { $0.key < $1.key }) {
                print("  \(key)=\(value)")
            }
        }
    }
}
