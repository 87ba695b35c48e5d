import KafkaProtocol
import Logging
import NIOCore
import NIOPosix
import RafkaCore
import RafkaStorage
import Synchronization

/// One broker's state: event loops, the metadata service, and the partitions it hosts.
///
/// Lifecycle: `start` opens `metadata.db` and recovers every partition under `<data-dir>/logs`;
/// the listener then serves Kafka requests through `KafkaAPIs`; `shutdown` closes every
/// partition cleanly (flush, indexes, checkpoints) and then the metadata store.
public final class Broker: Sendable {
    public let config: BrokerConfig
    let group: MultiThreadedEventLoopGroup
    let threadPool: NIOThreadPool
    let cache: MetadataCache
    let metadata: MetadataService
    let replicas: ReplicaManager
    let logger: Logger
    private let maintenance: Mutex<[RepeatedTask]>

    private init(
        config: BrokerConfig, group: MultiThreadedEventLoopGroup, threadPool: NIOThreadPool, cache: MetadataCache,
        metadata: MetadataService, replicas: ReplicaManager, logger: Logger
    ) {
        self.config = config
        self.group = group
        self.threadPool = threadPool
        self.cache = cache
        self.metadata = metadata
        self.replicas = replicas
        self.logger = logger
        self.maintenance = Mutex([])
    }

    /// Opens the data directory and recovers every partition.
    public static func start(config: BrokerConfig, logger: Logger) async throws -> Broker {
        try config.validate()
        let threads = config.eventLoopThreads == 0 ? System.coreCount : config.eventLoopThreads
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        do {
            try FileSystem.createDirectory(config.dataDirectory + "/logs")
            try Self.removeDeletedDirectories(config.dataDirectory + "/logs", logger: logger)
            let store = try MetadataStore(path: config.dataDirectory + "/metadata.db")
            let replicas = ReplicaManager(
                logsDirectory: config.dataDirectory + "/logs", group: group, threadPool: threadPool, logger: logger)
            let cache = MetadataCache(MetadataImage(clusterID: ""))
            let metadata = try MetadataService(store: store, cache: cache, replicas: replicas, config: config, logger: logger)
            let started = ContinuousClock.now
            try await metadata.openAll()
            logger.info(
                "recovered partitions",
                metadata: [
                    "partitions": "\(replicas.partitionCount)", "clusterID": "\(cache.image.clusterID)",
                    "elapsed": "\(ContinuousClock.now - started)",
                ])
            let broker = Broker(
                config: config, group: group, threadPool: threadPool, cache: cache, metadata: metadata,
                replicas: replicas, logger: logger)
            let tasks = replicas.startMaintenance(retentionIntervalMilliseconds: config.retentionCheckIntervalMilliseconds)
            broker.maintenance.withLock { $0 = tasks }
            return broker
        } catch {
            try? await threadPool.shutdownGracefully()
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Directories of deleted partitions left by a crash mid-deletion.
    private static func removeDeletedDirectories(_ logs: String, logger: Logger) throws {
        for name in try FileSystem.list(logs) where name.hasSuffix("-delete") {
            logger.info("removing leftover deleted partition directory", metadata: ["directory": "\(name)"])
            try FileSystem.removeTree(logs + "/" + name)
        }
    }

    /// Closes every partition (flushing it) and the metadata store, then stops the loops.
    public func shutdown() async {
        for task in self.maintenance.withLock({ $0 }) { task.cancel() }
        await self.replicas.closeAll()
        await self.metadata.close()
        try? await self.threadPool.shutdownGracefully()
        try? await self.group.shutdownGracefully()
    }

    /// The endpoint this node advertises.
    var endpoint: (nodeID: Int32, host: String, port: Int32, rack: String?) {
        let advertised = self.config.advertised
        return (self.config.nodeID, advertised.host, Int32(advertised.port), self.config.rack)
    }
}
