// swift-tools-version: 6.1
import PackageDescription
import Foundation

// The one-way dependency chain: CStargzKernel ← EStargzCore ← (remote ← LazyFS) ← estargz CLI.
// A builder that only writes eStargz depends on `EStargzCore` and pulls in no networking or FUSE code.
var package = Package(
    name: "swift-estargz",
    products: [
        .library(name: "EStargzCore", targets: ["EStargzCore"]),
        .library(name: "LazyFS", targets: ["LazyFS"]),
        .executable(name: "estargz", targets: ["estargz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
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
        // libfuse3's low-level API (system library: `apt-get install libfuse3-dev fuse3`).
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .target(
            name: "LazyFS",
            dependencies: ["EStargzCore", "CFuse3"]
        ),
        .executableTarget(
            name: "estargz",
            dependencies: [
                "EStargzCore",
                "LazyFS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "EStargzCoreTests",
            dependencies: ["EStargzCore", "CStargzKernel", "CStargzSystem"]
        ),
        .testTarget(
            name: "LazyFSTests",
            dependencies: ["LazyFS", "EStargzCore"]
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
