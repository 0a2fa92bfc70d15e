import EStargzCore
@testable import EStargzRemote
import Foundation
import TestSupport
import Testing

/// `.build/debug`, where `swift build` puts both executables.
private let cliDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path + "/.build/debug"

/// The CLI is two executables: `estargz` runs the local commands with `EStargzCore` alone and
/// hands everything else to `estargz-remote` (execv, same argv). Users see one program.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: cliDirectory + "/estargz")
    && FileManager.default.isExecutableFile(atPath: cliDirectory + "/estargz-remote"), "needs the built CLI (swift build)"))
struct CLIHandOffTests {
    static let estargz = cliDirectory + "/estargz"
    static let remote = cliDirectory + "/estargz-remote"

    /// Help, handed over or not, is what `estargz-remote` (the whole command set) prints.
    @Test func helpIsTheSameFromBothExecutables() throws {
        for arguments in [["--help"], ["ls", "--help"], ["cat", "--help"], ["convert", "--help"], ["help", "image"],
                          ["image", "convert", "--help"], ["mount", "--help"], ["snapshotter", "--help"], ["pull", "--help"],
                          ["store", "--help"], ["fuse-manager", "--help"]] {
            #expect(try run(Self.estargz, arguments) == run(Self.remote, arguments), "\(arguments)")
        }
    }

    /// The point of the split: no Foundation (ICU, internationalization, networking) in `estargz`;
    /// ArgumentParser's FoundationEssentials is all it loads beyond the Swift runtime.
    @Test func localCommandsLoadNoFoundation() throws {
        let libraries = try run("/usr/bin/ldd", [Self.estargz])
        for library in ["libFoundation.so", "libFoundationInternationalization.so", "lib_FoundationICU.so", "libFoundationNetworking.so"] {
            #expect(!libraries.contains(library), "estargz links \(library)")
        }
        #expect(try run("/usr/bin/ldd", [Self.remote]).contains("libFoundation.so"))
    }

    /// `ls` and `cat` of a registry reference are handed to `estargz-remote` and print what it prints.
    @Test func registryReferencesAreHandedOver() async throws {
        let registry = try TestRegistry(auth: .none)
        defer { registry.stop() }
        let image = try RegistryClientTests.buildImage(in: registry.directory.path)
        let reference = registry.reference("cli/app", tag: "v1")
        try await RegistryClientTests.withClient { try await RegistryClientTests.push(image, with: $0, to: reference) }
        let text = "\(reference)"
        let outputs = try await offPool { () throws -> [String] in
            try [["ls", text], ["ls", "--long", text], ["cat", text, "etc/hello.txt"]]
                .flatMap { [try run(Self.estargz, $0), try run(Self.remote, $0)] }
        }
        #expect(outputs[0] == "bin\nbin/blob\netc\netc/hello.txt\n" && outputs[1] == outputs[0])
        #expect(outputs[2].hasSuffix("-rw-r--r-- 0/0 16 - etc/hello.txt\n") && outputs[3] == outputs[2])
        #expect(outputs[4] == "hello, registry\n" && outputs[5] == outputs[4])
    }

    /// Without `estargz-remote` beside it, a handed-over command fails with a clear error, and the
    /// local commands still work.
    @Test func missingRemoteExecutableIsAnError() throws {
        let dir = TemporaryDirectory()
        let lone = dir.file("estargz")
        try run("/bin/cp", [Self.estargz, lone])
        #expect(shell("'\(lone)' image --help 2>'\(dir.file("err"))'") == 1)
        let error = String(decoding: try readFile(dir.file("err")), as: UTF8.self)
        #expect(error == "estargz: error: cannot run \(dir.file("estargz-remote")): No such file or directory\n")
        #expect(try run(lone, ["--help"]) == run(Self.estargz, ["--help"]))
    }
}
