// swift-tools-version: 6.1
import PackageDescription
import Foundation

// The one-way dependency chain: CStargzKernel ← EStargzCore ← (remote ← LazyFS) ← estargz CLI.
// The CLI is two executables: `estargz` (EStargzCore only) hands what needs more to `estargz-remote`.
// A builder that only writes eStargz depends on `EStargzCore` and pulls in no networking or FUSE code.
var package = Package(
    name: "swift-estargz",
    products: [
        .library(name: "EStargzCore", targets: ["EStargzCore"]),
        .library(name: "EStargzRemote", targets: ["EStargzRemote"]),
        .library(name: "Snapshotter", targets: ["Snapshotter"]),
        .library(name: "LazyFS", targets: ["LazyFS"]),
        .executable(name: "estargz", targets: ["estargz"]),
        .executable(name: "estargz-remote", targets: ["estargz-remote"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        .target(
            name: "CStargzKernel",
            // -O3 even in debug builds: the kernel is the hot path and tests hash/inflate MiBs.
            cSettings: [.unsafeFlags(["-O3"])],
            // Backends chosen by measurement (Benchmarks/README.md): libdeflate (chunk inflate,
            // deflate), zlib (streaming and partial-member inflate), libzstd, libxxhash.
            // SHA-256 is the kernel's own SHA-NI code, so no libcrypto.
            linkerSettings: [
                .linkedLibrary("z"),
                .linkedLibrary("deflate"),
                .linkedLibrary("zstd"),
                .linkedLibrary("xxhash"),
            ]
        ),
        .target(name: "CStargzSystem"),
        .target(
            name: "EStargzCore",
            dependencies: ["CStargzKernel", "CStargzSystem"]
        ),
        // Registry client and range-fetching reader: the only networking in the package.
        .target(
            name: "EStargzRemote",
            dependencies: [
                "EStargzCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(
            name: "Snapshotter",
            dependencies: [
                "EStargzCore",
                "EStargzRemote",
                "LazyFS",
                "CFuse3",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // libfuse3's low-level API (system library: `apt-get install libfuse3-dev fuse3`).
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .target(
            name: "LazyFS",
            dependencies: ["EStargzCore", "CFuse3"]
        ),
        // The CLI's local, format-only commands (convert, verify, extract, ls, cat of local blobs),
        // their shared options and output helpers: EStargzCore and ArgumentParser only.
        .target(
            name: "EStargzCommands",
            dependencies: [
                "EStargzCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // `estargz`, the CLI users run: the local commands in a process with no Foundation, networking,
        // FUSE or gRPC loaded; every other command is handed to `estargz-remote` (execv, same argv).
        // The Swift runtime and ArgumentParser's FoundationEssentials are linked statically: 3 MB less
        // RSS and ~3 ms less start than loading their shared libraries (Benchmarks/README.md, issue 6b).
        // FoundationEssentials' C shims are not in the static-stdlib link line, so they are named here;
        // the link prints glibc's "mktemp is dangerous" warning for code of it that is never called.
        .executableTarget(
            name: "estargz",
            dependencies: [
                "EStargzCommands",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            linkerSettings: [.unsafeFlags(["-static-stdlib", "-Xlinker", "-l_FoundationCShims", "-Xlinker", "-l_FoundationCollections"])]
        ),
        // Every command, with the registry client, LazyFS and the snapshotter linked in.
        .executableTarget(
            name: "estargz-remote",
            dependencies: [
                "EStargzCommands",
                "EStargzCore",
                "EStargzRemote",
                "Snapshotter",
                "LazyFS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Test-only helpers shared by the test targets: temporary directories, files, processes,
        // free ports and a real `docker-registry` (plain, basic or token auth). Foundation only.
        .target(
            name: "TestSupport",
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "EStargzCoreTests",
            dependencies: ["EStargzCore", "CStargzKernel", "CStargzSystem", "TestSupport"]
        ),
        .testTarget(
            name: "EStargzRemoteTests",
            dependencies: [
                "EStargzRemote", "EStargzCore", "TestSupport",
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "SnapshotterTests",
            dependencies: [
                "Snapshotter", "EStargzCore", "EStargzRemote", "LazyFS", "TestSupport",
                // CRI/: a client of the Kubernetes CRI API (runtime.v1) generated from cri-api's
                // api.proto by scripts/generate-protos.sh, to drive containerd's CRI plugin as a kubelet does.
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "LazyFSTests",
            dependencies: ["LazyFS", "EStargzCore", "EStargzRemote", "TestSupport"]
        ),
        .testTarget(
            name: "InteropTests",
            dependencies: ["EStargzCore"]
        ),
    ]
)

// `make fuzz` sets ESTARGZ_FUZZ=1 to add the libFuzzer target; ordinary builds never see it,
// because an executable without `main` only links against libFuzzer's driver.
if ProcessInfo.processInfo.environment["ESTARGZ_FUZZ"] == "1" {
    package.targets.append(
        .executableTarget(
            name: "EStargzFuzz",
            dependencies: ["EStargzCore"],
            path: "Tests/Fuzz",
            exclude: ["corpus"],
            swiftSettings: [.unsafeFlags(["-parse-as-library", "-sanitize=fuzzer,address"])],
            linkerSettings: [.unsafeFlags(["-sanitize=fuzzer,address"])]
        )
    )
}
