// swift-tools-version: 6.1
import PackageDescription
import Foundation

// The one-way dependency chain: CStargzKernel ← EStargzCore ← (remote ← LazyFS) ← estargz CLI.
// A builder that only writes eStargz depends on `EStargzCore` and pulls in no networking or FUSE code.
var package = Package(
    name: "swift-estargz",
    products: [
        .library(name: "EStargzCore", targets: ["EStargzCore"]),
        .library(name: "EStargzRemote", targets: ["EStargzRemote"]),
        .executable(name: "estargz", targets: ["estargz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
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
        .executableTarget(
            name: "estargz",
            dependencies: [
                "EStargzCore",
                "EStargzRemote",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "EStargzCoreTests",
            dependencies: ["EStargzCore", "CStargzKernel", "CStargzSystem"]
        ),
        .testTarget(
            name: "EStargzRemoteTests",
            dependencies: [
                "EStargzRemote", "EStargzCore",
            ]
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
            swiftSettings: [.unsafeFlags(["-parse-as-library", "-sanitize=fuzzer,address"])],
            linkerSettings: [.unsafeFlags(["-sanitize=fuzzer,address"])]
        )
    )
}
