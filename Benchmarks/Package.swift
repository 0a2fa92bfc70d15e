// swift-tools-version: 6.1
// Micro benchmarks (ordo-one/benchmark), a package of their own so that the main package and its CI
// never build the benchmark dependency. Run from the repository root:
//
//     swift package --package-path Benchmarks benchmark
//
// `BenchKernel` is the C kernel compiled from the main package's own sources (a symlink to
// ../Sources/CStargzKernel), so the kernel benchmarks call its C API without the main package
// having to export the kernel as a product. The core benchmarks use EStargzCore's public API only.
import PackageDescription
import Foundation

// A path dependency's identity is its directory name (this checkout's root folder).
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let rootIdentity = root.lastPathComponent.lowercased()

let package = Package(
    name: "swift-estargz-benchmarks",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .target(
            name: "BenchKernel",
            path: "BenchKernel",
            cSettings: [.unsafeFlags(["-O3"])],
            linkerSettings: [
                .linkedLibrary("z"), .linkedLibrary("deflate"), .linkedLibrary("zstd"), .linkedLibrary("xxhash"),
            ]
        ),
        .target(name: "BenchData", path: "Shared"),
        .executableTarget(
            name: "KernelBenchmarks",
            dependencies: [.product(name: "Benchmark", package: "benchmark"), "BenchKernel", "BenchData"],
            path: "Benchmarks/KernelBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "CoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "EStargzCore", package: rootIdentity),
                "BenchData",
            ],
            path: "Benchmarks/CoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
