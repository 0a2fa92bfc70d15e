import ArgumentParser
import EStargzCommands
import EStargzRemote
import Foundation
import Snapshotter

struct Pull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: RemoteSubcommand.pull.name,
        abstract: RemoteSubcommand.pull.abstract,
        discussion: """
            Like `ctr-remote image rpull`: stores the image's manifest and config in containerd and \
            prepares a snapshot of every layer with the snapshotter, labelled so that `estargz \
            snapshotter` mounts eStargz layers lazily from the registry (nothing is downloaded for them). \
            A layer it does not mount (plain gzip) is downloaded into containerd's content store and \
            unpacked by containerd. Afterwards `ctr run --snapshotter estargz REF ID CMD` starts a container. \
            The image is named by its normalized reference (docker.io/library/… for Docker Hub names). \
            Progress goes to stderr, one line per step.
            """
    )

    @Argument(help: "The image: host[:port]/repo[:tag][@digest].")
    var reference: String

    @Option(help: "containerd's gRPC socket.")
    var address = "/run/containerd/containerd.sock"

    @Option(help: "The containerd namespace (k8s.io for the CRI plugin's images).")
    var namespace = "default"

    @Option(help: "The snapshotter to unpack for (the proxy plugin's name in containerd's config).")
    var snapshotter = "estargz"

    @Flag(help: "Use plain HTTP for the registry (loopback registries always use it).")
    var plainHTTP = false

    @Option(help: ArgumentHelp("The platform to choose from a multi-platform image (default: this machine's).", valueName: "os/arch[/variant]"))
    var platform: String?

    @Option(help: "The snapshotter's TOML config, for its [registry] mirrors, plain-HTTP hosts and credentials.")
    var config: String?

    @Flag(help: "Print no progress lines (errors still go to stderr).")
    var quiet = false

    func run() async throws {
        var options = ContainerdPull.Options()
        options.address = address
        options.namespace = namespace
        options.snapshotter = snapshotter
        let reference: ImageReference
        do {
            if let config { options.registry = try SnapshotterConfig(contentsOf: config).registryOptions }
            if let platform { options.platform = try Platform(parsing: platform) }
            reference = try ImageReference(parsing: self.reference)
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
        options.registry.plainHTTP = options.registry.plainHTTP || plainHTTP
        let quiet = self.quiet
        let started = ContinuousClock.now
        let progress: @Sendable (String) -> Void = { line in
            if !quiet { FileHandle.standardError.write(Data("\(line)\n".utf8)) }
        }
        do {
            let result = try await ContainerdPull.pull(reference, options: options, progress: progress)
            let elapsed = ContinuousClock.now - started
            progress("done: \(result.name) in \(String(format: "%.1f", Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))s")
        } catch let error as ContainerdPullError {
            printError(error.description)
            throw ExitCode.failure
        } catch let error as RegistryError {
            printError(error.description)
            throw ExitCode.failure
        }
    }
}
