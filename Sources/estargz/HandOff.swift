import ArgumentParser
import EStargzCommands
#if canImport(Glibc)
import Glibc
#endif

/// Git-style hand-over to `estargz-remote`: `execv` of the sibling executable with this process's
/// own `argv`, so the PID, standard streams, signals and exit status are the user's `estargz`'s.
enum HandOff: RegistryReading {
    /// The executable that runs every command, next to this one (`swift build` and installs put
    /// them in one directory).
    static let remoteExecutableName = "estargz-remote"

    /// Whether `arguments` (without `argv[0]`) name a command only `estargz-remote` runs: a remote
    /// subcommand or its help, or the completion machinery, which must see every command.
    static func isNeeded(for arguments: [String]) -> Bool {
        let remote = Set(RemoteSubcommand.allCases.map(\.name))
        guard let first = arguments.first else { return false }
        if remote.contains(first) { return true }
        if first == "help", arguments.count > 1, remote.contains(arguments[1]) { return true }
        return arguments.contains {
            $0.hasPrefix("---completion") || $0.hasPrefix("--generate-completion-script") || $0 == "--experimental-dump-help"
        }
    }

    /// Replaces this process with `estargz-remote` and the same arguments; prints an error and
    /// exits 1 when it cannot be executed.
    static func execute() -> Never {
        let path = remoteExecutablePath()
        execv(path, CommandLine.unsafeArgv)
        printError("cannot run \(path): \(String(cString: strerror(errno)))")
        exit(1)
    }

    /// `estargz-remote` in the directory of `/proc/self/exe` (symlinks to `estargz` resolved).
    static func remoteExecutablePath() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return remoteExecutableName }
        let executable = String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = executable.lastIndex(of: "/") else { return remoteExecutableName }
        return executable[...slash] + remoteExecutableName
    }

    static func list(_ command: List<Self>) throws { execute() }

    static func cat(_ command: Cat<Self>) throws { execute() }
}

/// `image`, `mount`, `snapshotter`, `pull` and `fuse-manager` as `estargz --help` lists them; `EStargzCommand.main` hands
/// them over before parsing, and so does running one of these.
struct ImageHandOff: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: RemoteSubcommand.image.name,
                                                    abstract: RemoteSubcommand.image.abstract)
    @Argument(parsing: .captureForPassthrough) var arguments: [String] = []
    func run() throws { HandOff.execute() }
}

struct MountHandOff: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: RemoteSubcommand.mount.name,
                                                    abstract: RemoteSubcommand.mount.abstract)
    @Argument(parsing: .captureForPassthrough) var arguments: [String] = []
    func run() throws { HandOff.execute() }
}

struct StoreHandOff: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: RemoteSubcommand.store.name,
                                                    abstract: RemoteSubcommand.store.abstract)
    @Argument(parsing: .captureForPassthrough) var arguments: [String] = []
    func run() throws { HandOff.execute() }
}

struct SnapshotterHandOff: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: RemoteSubcommand.snapshotter.name,
                                                    abstract: RemoteSubcommand.snapshotter.abstract)
    @Argument(parsing: .captureForPassthrough) var arguments: [String] = []
    func run() throws { HandOff.execute() }
}

struct PullHandOff: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: RemoteSubcommand.pull.name,
                                                    abstract: RemoteSubcommand.pull.abstract)
    @Argument(parsing: .captureForPassthrough) var arguments: [String] = []
    func run() throws { HandOff.execute() }
}

struct FuseManagerHandOff: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: RemoteSubcommand.fuseManager.name,
                                                    abstract: RemoteSubcommand.fuseManager.abstract)
    @Argument(parsing: .captureForPassthrough) var arguments: [String] = []
    func run() throws { HandOff.execute() }
}
