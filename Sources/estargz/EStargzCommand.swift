import ArgumentParser
import EStargzCore

@main
struct EStargzCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "estargz",
        abstract: "Build, verify and read eStargz container image layers.",
        discussion: """
            eStargz layers are gzip-compressed tars whose files can be fetched and verified chunk by chunk, \
            so a container can start before its image is downloaded.
            """,
        subcommands: [Convert.self, Verify.self, Extract.self, List.self, Cat.self, Image.self, Mount.self, SnapshotterCommand.self]
    )
}
