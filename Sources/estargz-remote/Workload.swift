import ArgumentParser
import EStargzCommands
import EStargzRemote
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The process `image optimize` runs on the image's tree, as a runtime would start the image's
/// container: Entrypoint + Cmd, Env, WorkingDir and User from the image's config, each overridable
/// as with `ctr-remote image optimize`.
struct Workload {
    /// The process's argv (argv[0] looked up in the image's PATH).
    var arguments: [String]
    /// `K=V` pairs: all the process's environment.
    var environment: [String]
    /// Absolute, inside the image.
    var workingDirectory: String
    /// `user[:group]`, names or numbers (resolved in the image's etc/passwd and etc/group); empty is root.
    var user: String
    /// Read-only bind mounts: a host path at an absolute path inside the image.
    var mounts: [(source: String, destination: String)]
    /// The host's network namespace (and its /etc/hosts and /etc/resolv.conf) instead of a new, empty one.
    var hostNetwork: Bool

    /// The `PATH` of containerd's default spec, for images whose config sets none.
    static let defaultPath = "PATH=" + ImageProcess.defaultPath

    /// The image's own process with the overrides applied.
    /// - Parameters:
    ///   - command: `-- COMMAND ARGS...`: the whole argv, replacing Entrypoint and Cmd.
    ///   - entrypoint, args: JSON arrays replacing Entrypoint and Cmd respectively.
    ///   - env: `K=V`, added to the image's Env or replacing the same K.
    static func make(imageConfig: [UInt8], command: [String], entrypoint: String?, args: String?, env: [String],
                     cwd: String?, user: String?, mounts: [String], hostNetwork: Bool) throws -> Workload {
        let fields: ImageProcess
        do {
            fields = try ImageProcess(imageConfig: imageConfig)
        } catch {
            throw ValidationError("the image's config is not valid JSON: \(error)")
        }
        func jsonArray(_ text: String, _ option: String) throws -> [String] {
            guard let value = try? JSONDecoder().decode([String].self, from: Data(text.utf8)) else {
                throw ValidationError("--\(option) takes a JSON array of strings, e.g. '[\"/bin/sh\", \"-c\"]', got \(text)")
            }
            return value
        }
        var arguments = command
        if arguments.isEmpty {
            let entry = try entrypoint.map { try jsonArray($0, "entrypoint") } ?? fields.entrypoint ?? []
            let rest = try args.map { try jsonArray($0, "args") } ?? fields.cmd ?? []
            arguments = entry + rest
        }
        guard !arguments.isEmpty else {
            throw ValidationError("the image's config has no Entrypoint or Cmd: give --entrypoint/--args or the workload after --")
        }
        var environment = (fields.env ?? []).filter { $0.contains("=") }
        if !environment.contains(where: { $0.hasPrefix("PATH=") }) { environment.insert(defaultPath, at: 0) }
        for pair in env {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw ValidationError("--env takes KEY=VALUE, got \(pair)")
            }
            let key = pair[...equals]
            environment.removeAll { $0.hasPrefix(key) }
            environment.append(pair)
        }
        let workingDirectory = cwd ?? fields.workingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"
        guard workingDirectory.hasPrefix("/") else { throw ValidationError("the working directory must be absolute, got \(workingDirectory)") }
        let binds = try mounts.map { spec -> (source: String, destination: String) in
            guard let colon = spec.firstIndex(of: ":") else { throw ValidationError("--mount takes SRC:DST, got \(spec)") }
            let source = String(spec[..<colon]), destination = String(spec[spec.index(after: colon)...])
            guard destination.hasPrefix("/"), !destination.split(separator: "/").contains("..") else {
                throw ValidationError("--mount: DST must be an absolute path inside the image without '..', got \(destination)")
            }
            guard FileManager.default.fileExists(atPath: source) else { throw ValidationError("--mount: \(source) does not exist") }
            return (URL(fileURLWithPath: source).standardizedFileURL.path, destination)
        }
        return Workload(arguments: arguments, environment: environment, workingDirectory: workingDirectory,
                        user: user ?? fields.user ?? "", mounts: binds, hostNetwork: hostNetwork)
    }

    /// `user[:group]` as numbers, looked up in the tree's etc/passwd and etc/group as runc does:
    /// a numeric user not in etc/passwd has gid 0; a name that is not there is an error.
    static func resolve(user spec: String, root: String) throws -> (uid: UInt32, gid: UInt32) {
        if spec.isEmpty { return (0, 0) }
        func table(_ name: String) -> [[Substring]] {
            let text = (try? String(contentsOfFile: root + "/etc/" + name, encoding: .utf8)) ?? ""
            return text.split(separator: "\n").map { $0.split(separator: ":", omittingEmptySubsequences: false) }.filter { $0.count >= 4 }
        }
        let parts = spec.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        let users = table("passwd")
        let uid: UInt32, primaryGID: UInt32
        if let number = UInt32(parts[0]) {
            uid = number
            primaryGID = users.first { UInt32($0[2]) == number }.flatMap { UInt32($0[3]) } ?? 0
        } else if let entry = users.first(where: { $0[0] == parts[0] }), let number = UInt32(entry[2]), let group = UInt32(entry[3]) {
            (uid, primaryGID) = (number, group)
        } else {
            throw ValidationError("user \(parts[0]) of the workload is not in the image's etc/passwd")
        }
        guard parts.count == 2 else { return (uid, primaryGID) }
        if let number = UInt32(parts[1]) { return (uid, number) }
        guard let entry = table("group").first(where: { $0[0] == parts[1] }), let gid = UInt32(entry[2]) else {
            throw ValidationError("group \(parts[1]) of the workload is not in the image's etc/group")
        }
        return (uid, gid)
    }

    /// The process that runs the workload chrooted into `root`: `unshare` gives it its own mount
    /// namespace (the mounts vanish with it), its own PID namespace (whatever it started dies with it) and, unless ``hostNetwork``, a new network namespace
    /// (only a loopback device, up: no network); /proc, /dev, /sys, /tmp and the bind mounts are set
    /// up inside, then `env -i` (the workload's environment only) and `unshare --root --wd --setuid
    /// --setgid` enter the tree as the workload's user. ``stop(_:)`` ends it all.
    func process(root: String) throws -> Process {
        let (uid, gid) = try Self.resolve(user: user, root: root)
        try FileManager.default.createDirectory(atPath: root + workingDirectory, withIntermediateDirectories: true)
        var binds = mounts
        if hostNetwork {
            for file in ["/etc/hosts", "/etc/resolv.conf"] where FileManager.default.fileExists(atPath: file) {
                binds.append((file, file))
            }
        }
        var script = #"set -e; mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; mount -t sysfs sysfs "$R/sys"; mount -t tmpfs tmpfs "$R/tmp""#
        for (source, destination) in binds {
            let target = #""$R"\#(Self.quote(destination))"#
            var isDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory)
            script += isDirectory.boolValue
                ? "; mkdir -p \(target)"
                : #"; mkdir -p "$(dirname \#(target))"; rm -f \#(target); touch \#(target)"#
            script += "; mount --bind -o ro \(Self.quote(source)) \(target)"
        }
        // A runtime brings the loopback device of a new network namespace up (runc does): local servers work.
        if !hostNetwork { script += "; if command -v ip >/dev/null; then ip link set lo up; fi" }
        script += #"; exec "$@""#
        let enter = ["/usr/bin/env", "-i"] + environment
            + ["/usr/bin/unshare", "--root=" + root, "--wd=" + workingDirectory, "--setuid", String(uid), "--setgid", String(gid), "--"]
            + arguments
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["--mount", "--pid", "--fork", "--kill-child"] + (hostNetwork ? [] : ["--net"])
            + ["--", "/bin/sh", "-c", script, "sh"] + enter
        process.environment = ["R": root, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
        return process
    }

    /// Stops a workload started from ``process(root:)``: SIGKILL to the first process of its PID
    /// namespace (the kernel then kills everything in it), then SIGTERM to `unshare`. Killing
    /// `unshare` alone is not enough: its `--kill-child` death signal is cleared when the workload's
    /// credentials change (`--setuid`/`--setgid`).
    static func stop(_ process: Process) {
        let pid = process.processIdentifier
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        for child in children.split(separator: " ").compactMap({ pid_t($0) }) { kill(child, SIGKILL) }
        process.terminate()
    }

    /// One shell word.
    static func quote(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: #"'\''"#) + "'" }
}
