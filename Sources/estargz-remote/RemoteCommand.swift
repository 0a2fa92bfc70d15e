import ArgumentParser
import EStargzCommands

/// `estargz-remote`: every `estargz` command, with the registry, FUSE and gRPC linked in.
///
/// Users run `estargz`; it executes this program (same arguments) for `image`, `mount`,
/// `snapshotter`, `pull`, and `ls`/`cat` of a registry reference.
@main
struct RemoteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration.estargz(subcommands: [
        Convert.self, Verify.self, Extract.self, List<RegistryReader>.self, Cat<RegistryReader>.self,
        Image.self, Mount.self, SnapshotterCommand.self, Pull.self, FuseManagerCommand.self, StoreCommand.self,
    ])
}
