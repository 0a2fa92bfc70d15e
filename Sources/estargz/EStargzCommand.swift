import ArgumentParser
import EStargzCommands

/// `estargz`: the local, format-only commands on `EStargzCore` alone, so `ls`, `verify`, `convert`,
/// `cat` and `extract` of local blobs start in a process without Foundation, the registry client,
/// FUSE or gRPC (Benchmarks/README.md, "Issue 6b"). Everything else runs in `estargz-remote`,
/// which this program executes in its own place with the same arguments.
@main
struct EStargzCommand: ParsableCommand {
    static let configuration = CommandConfiguration.estargz(subcommands: [
        Convert.self, Verify.self, Extract.self, List<HandOff>.self, Cat<HandOff>.self,
        ImageHandOff.self, MountHandOff.self, SnapshotterHandOff.self, PullHandOff.self, FuseManagerHandOff.self, StoreHandOff.self,
    ])

    static func main() {
        if HandOff.isNeeded(for: Array(CommandLine.arguments.dropFirst())) { HandOff.execute() }
        main(nil)
    }
}
