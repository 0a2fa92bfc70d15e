import ArgumentParser
import EStargzCommands

struct Image: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: RemoteSubcommand.image.name,
        abstract: RemoteSubcommand.image.abstract,
        discussion: "An image is a registry reference (host[:port]/repo[:tag][@digest]) or an OCI layout, oci:DIR[:TAG].",
        subcommands: [ImageConvert.self, ImageInspect.self, ImageOptimize.self]
    )
}
