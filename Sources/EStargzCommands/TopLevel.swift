import ArgumentParser

extension CommandConfiguration {
    /// The top-level `estargz` command, the same in `estargz` and `estargz-remote` so that either
    /// prints the same help and errors.
    public static func estargz(subcommands: [any ParsableCommand.Type]) -> CommandConfiguration {
        CommandConfiguration(
            commandName: "estargz",
            abstract: "Build, verify and read eStargz container image layers.",
            discussion: """
                eStargz layers are gzip-compressed tars whose files can be fetched and verified chunk by chunk, \
                so a container can start before its image is downloaded.
                """,
            subcommands: subcommands
        )
    }
}

/// The subcommands that need the registry client, FUSE or gRPC, so only `estargz-remote` runs
/// them; `estargz` lists them in its help with these abstracts and hands them over.
public enum RemoteSubcommand: String, CaseIterable, Sendable {
    case image, mount, snapshotter, pull, store
    case fuseManager = "fuse-manager"

    /// The command's name on the command line.
    public var name: String { rawValue }

    /// The one-line summary the top-level help shows.
    public var abstract: String {
        switch self {
        case .image: "Convert and inspect whole images in registries and OCI layouts."
        case .mount: "Mount eStargz layers through FUSE and read them lazily, verifying every chunk."
        case .snapshotter: "Serve a containerd snapshotter (proxy plugin) on a unix socket."
        case .pull: "Pull an image into containerd with its eStargz layers mounted lazily by the snapshotter."
        case .fuseManager: "Hold the snapshotter's lazy FUSE mounts in a process that outlives it."
        case .store: "Serve eStargz layers lazily to Podman and CRI-O (containers/storage's additional layer store)."
        }
    }
}
