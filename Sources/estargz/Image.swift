import ArgumentParser

struct Image: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert and inspect whole images in registries and OCI layouts.",
        discussion: "An image is a registry reference (host[:port]/repo[:tag][@digest]) or an OCI layout, oci:DIR[:TAG].",
        subcommands: [ImageConvert.self, ImageInspect.self, ImageOptimize.self]
    )
}
