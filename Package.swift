// swift-tools-version:6.2
// Rafka: a Kafka-compatible broker. The module map and the rules behind it are in docs/architecture.md.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .treatAllWarnings(as: .error),
]

let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")

let package = Package(
    name: "rafka",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "rafka", targets: ["rafka"]),
        .executable(name: "rafka-admin", targets: ["rafka-admin"]),
        .executable(name: "rafka-bench", targets: ["rafka-bench"]),
        .library(name: "RafkaClient", targets: ["RafkaClient"]),
        // For benchmarks/ (the microbenchmark package) and embedders.
        .library(name: "RafkaCore", targets: ["RafkaCore"]),
        .library(name: "KafkaProtocol", targets: ["KafkaProtocol"]),
        .library(name: "RafkaCompression", targets: ["RafkaCompression"]),
        .library(name: "RafkaStorage", targets: ["RafkaStorage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        // C libraries from Debian; each is imported by exactly one Swift target.
        .systemLibrary(name: "CLZ4", path: "Sources/CLZ4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CSnappy", path: "Sources/CSnappy", providers: [.apt(["libsnappy-dev"])]),
        .systemLibrary(name: "CSQLite3", path: "Sources/CSQLite3", providers: [.apt(["libsqlite3-dev"])]),

        .target(name: "RafkaCore", dependencies: [nioCore], swiftSettings: strict),
        // Pure state machines: RafkaCore only (tools/tidy checks they import nothing else).
        .target(name: "RaftCore", dependencies: ["RafkaCore"], swiftSettings: strict),
        .target(name: "ChordCore", dependencies: ["RafkaCore"], swiftSettings: strict),
        // Simulated clock, network and disk for the pure cores' deterministic tests.
        .target(name: "RafkaTestKit", dependencies: ["RafkaCore", "RaftCore", "ChordCore"], swiftSettings: strict),
        // CRC-32C with the CPU instruction: the only hand-written C (no Debian library has it).
        .target(name: "CCRC32C", path: "Sources/CCRC32C"),
        .target(name: "KafkaProtocol", dependencies: ["RafkaCore", "CCRC32C", nioCore], swiftSettings: strict),
        .target(
            name: "RafkaCompression",
            dependencies: ["CLZ4", "CZstd", "CZlib", "CSnappy", nioCore],
            swiftSettings: strict
        ),
        .target(
            name: "RafkaStorage",
            dependencies: [
                "RafkaCore", "ChordCore", "KafkaProtocol", "RaftCore", "RafkaCompression", "CSQLite3", nioCore, nioPosix,
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HashTreeCollections", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "RafkaServer",
            dependencies: [
                "RafkaCore", "ChordCore", "KafkaProtocol", "RaftCore", "RafkaCompression", "RafkaStorage", "RafkaClient", nioCore, nioPosix,
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"), logging,
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HashTreeCollections", package: "swift-collections"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "RafkaClient",
            dependencies: ["KafkaProtocol", "RafkaCompression", "ChordCore", "RafkaCore", nioCore, nioPosix],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "rafka",
            dependencies: [
                "RafkaServer", logging,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "rafka-admin",
            dependencies: [
                "RafkaClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // Load generation and measurement against any Kafka-compatible broker.
        .target(
            name: "RafkaBench",
            dependencies: [
                "RafkaClient", "KafkaProtocol", "RafkaCompression", "RafkaCore", nioCore, nioPosix,
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "rafka-bench",
            dependencies: ["RafkaBench", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),

        .testTarget(
            name: "KafkaProtocolTests",
            dependencies: ["KafkaProtocol", nioCore, .product(name: "NIOTestUtils", package: "swift-nio")],
            exclude: ["Golden"],
            swiftSettings: strict
        ),
        .testTarget(name: "RaftCoreTests", dependencies: ["RaftCore", "RafkaCore", "RafkaTestKit"], swiftSettings: strict),
        .testTarget(name: "ChordCoreTests", dependencies: ["ChordCore", "RafkaCore", "RafkaTestKit"], swiftSettings: strict),
        .testTarget(name: "RafkaCompressionTests", dependencies: ["RafkaCompression", nioCore], swiftSettings: strict),
        .testTarget(
            name: "RafkaStorageTests",
            dependencies: ["RafkaStorage", "ChordCore", "KafkaProtocol", "RafkaCompression", "RaftCore", "RafkaCore", nioCore, .product(name: "HashTreeCollections", package: "swift-collections")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RafkaBenchTests",
            dependencies: ["RafkaBench", "RafkaClient", "KafkaProtocol", "RafkaCompression", nioCore],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RafkaServerTests",
            dependencies: [
                "RafkaServer", "RafkaClient", "KafkaProtocol", "RafkaStorage", "ChordCore", "RafkaCore", nioCore, nioPosix,
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
    ]
)
