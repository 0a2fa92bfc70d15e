import EStargzCore

/// The process an image's container starts unless told otherwise: the `config` object of an image
/// config (`application/vnd.oci.image.config.v1+json`) — Entrypoint and Cmd, Env, WorkingDir, User.
///
/// ```swift
/// let image = try await client.resolveImage(reference)
/// let process = try ImageProcess(imageConfig: image.configBytes)
/// process.programPaths  // ["usr/local/bin/python3", "usr/bin/python3", …] for Cmd ["python3"]
/// ```
public struct ImageProcess: Sendable, Equatable, Decodable {
    public var entrypoint: [String]?
    public var cmd: [String]?
    public var env: [String]?
    public var workingDir: String?
    public var user: String?

    /// The `PATH` of containerd's default spec, for images whose config sets none.
    public static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    enum CodingKeys: String, CodingKey {
        case entrypoint = "Entrypoint", cmd = "Cmd", env = "Env", workingDir = "WorkingDir", user = "User"
    }

    public init(entrypoint: [String]? = nil, cmd: [String]? = nil, env: [String]? = nil, workingDir: String? = nil,
                user: String? = nil) {
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.env = env
        self.workingDir = workingDir
        self.user = user
    }

    /// Reads the process from an image config blob; a config without `config` gives the empty process.
    /// - Throws: ``RegistryError/invalidResponse(url:reason:)`` when the blob is not an image config.
    public init(imageConfig: [UInt8]) throws(RegistryError) {
        struct Document: Decodable { var config: ImageProcess? }
        self = try CanonicalJSON.decode(Document.self, from: imageConfig, what: "image config").config ?? ImageProcess()
    }

    /// Entrypoint followed by Cmd: the argv the runtime starts (argv[0] looked up in ``path``).
    public var arguments: [String] { (entrypoint ?? []) + (cmd ?? []) }

    /// The value of `PATH` in ``env``, or ``defaultPath``.
    public var path: String {
        env?.last { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) } ?? Self.defaultPath
    }

    /// Where the program the process starts may be, relative to the image's root, in the order a
    /// runtime looks (runc and crun search `PATH` for a name without a slash; a relative path with
    /// one is taken from ``workingDir``). Empty when the config names no program.
    public var programPaths: [String] {
        guard let program = arguments.first, !program.isEmpty else { return [] }
        // Relative to the root, as the kernel resolves it there ("" is the root itself).
        func relative(_ path: String) -> String? {
            let clean = TarPath.clean(path)
            return clean.isEmpty ? nil : clean
        }
        if program.contains("/") {
            let directory = workingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"
            return relative(program.hasPrefix("/") ? program : directory + "/" + program).map { [$0] } ?? []
        }
        var seen = Set<String>()
        return path.split(separator: ":").compactMap { directory in
            // An empty PATH element is the working directory, which runc does not search either.
            guard directory.hasPrefix("/"), let found = relative(directory + "/" + program) else { return nil }
            return seen.insert(found).inserted ? found : nil
        }
    }
}
