// swift-tools-version:6.0
import PackageDescription

// Layering, bottom to top:
//   CZeroMQ (libzmq via pkg-config) → ZeroMQ (thin wrapper)
//   ConveyorCore (pure: tasks, priority queue, scheduler; no I/O)
//   ConveyorProtocol (frame codec for proto/conveyor-protocol.md)
//   ConveyorJournal (the SQLite journal backend) / ConveyorJournalPostgres (PostgreSQL, leases)
//   ConveyorBroker / ConveyorWorker / ConveyorClient (ZeroMQ adapters)
//   ConveyorGateway (HTTP/WebSocket over ConveyorClient)
//   ConveyorOps (the CLI's supervision, .env configuration and terminal rendering; no Conveyor deps)
//   conveyor (the CLI)
let package = Package(
    name: "conveyor",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "conveyor", targets: ["conveyor"]),
        .library(name: "ConveyorWorker", targets: ["ConveyorWorker"]),
        .library(name: "ConveyorClient", targets: ["ConveyorClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        // Already in the graph through Hummingbird; used directly for token hashes (SHA-256).
        .package(url: "https://github.com/apple/swift-crypto", "3.0.0"..<"5.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.2.0"),
        // Already in the graph through Hummingbird; the gateway adds a handler after NIO's HTTP decoder.
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.0"),
        // Already in the graph through postgres-nio; TLS to a PostgreSQL journal on another host.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.25.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CZeroMQ",
            pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"]), .brew(["zeromq"])]
        ),
        .target(name: "ZeroMQ", dependencies: ["CZeroMQ"]),
        // CURVE keys and allowlists, the ZAP handler, socket profiles per role.
        .target(
            name: "ConveyorTransport",
            dependencies: ["ZeroMQ", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "ConveyorCore",
            dependencies: [
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ]
        ),
        .target(name: "ConveyorProtocol", dependencies: ["ConveyorCore"]),
        .target(
            name: "ConveyorJournal",
            dependencies: ["ConveyorCore", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .target(
            name: "ConveyorJournalPostgres",
            dependencies: [
                "ConveyorCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .target(
            name: "ConveyorBroker",
            dependencies: [
                "ZeroMQ", "ConveyorTransport", "ConveyorCore", "ConveyorProtocol", "ConveyorJournal",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        .target(
            name: "ConveyorWorker",
            dependencies: [
                "ZeroMQ", "ConveyorTransport", "ConveyorCore", "ConveyorProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .target(
            name: "ConveyorClient",
            dependencies: ["ZeroMQ", "ConveyorTransport", "ConveyorCore", "ConveyorProtocol"]
        ),
        .target(
            name: "ConveyorGateway",
            dependencies: [
                "ConveyorClient", "ConveyorCore", "ConveyorProtocol", "ZeroMQ", "ConveyorTransport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("Resources")]
        ),
        .target(name: "ConveyorOps", dependencies: ["ConveyorProtocol"]),
        .executableTarget(
            name: "conveyor",
            dependencies: [
                "ConveyorBroker", "ConveyorWorker", "ConveyorClient", "ConveyorGateway", "ConveyorCore",
                "ConveyorJournal", "ConveyorJournalPostgres",
                "ConveyorProtocol", "ConveyorOps", "ZeroMQ", "ConveyorTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        .testTarget(name: "ZeroMQTests", dependencies: ["ZeroMQ"]),
        .testTarget(name: "ConveyorTransportTests", dependencies: ["ConveyorTransport", "ZeroMQ"]),
        .testTarget(name: "ConveyorCoreTests", dependencies: ["ConveyorCore"]),
        .testTarget(name: "ConveyorOpsTests", dependencies: ["ConveyorOps"]),
        .testTarget(
            name: "ConveyorProtocolTests",
            dependencies: ["ConveyorProtocol", "ConveyorCore"]
        ),
        .testTarget(name: "ConveyorJournalTests", dependencies: ["ConveyorJournal", "ConveyorJournalPostgres", "ConveyorCore"]),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "ConveyorGateway", "ConveyorClient", "ConveyorProtocol", "ConveyorCore",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["ConveyorClient", "ConveyorProtocol", "ConveyorCore", "ZeroMQ", "ConveyorTransport"]
        ),
    ]
)
