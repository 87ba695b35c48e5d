// swift-tools-version:6.2
// Microbenchmarks of Rafka's hot path (ordo-one/benchmark), kept out of the main package so
// that its plain builds do not pay for the benchmark plugin. Run from this directory:
//   swift package benchmark                                   (time, throughput, allocations)
//   swift package benchmark thresholds check --metric mallocCountTotal   (what CI checks)
import PackageDescription

let package = Package(
    name: "rafka-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "rafka", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "Hotpath",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RafkaCore", package: "rafka"),
                .product(name: "RafkaStorage", package: "rafka"),
                .product(name: "KafkaProtocol", package: "rafka"),
                .product(name: "RafkaCompression", package: "rafka"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/Hotpath",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
