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
    let quorum: RaftShell
    let reconciler: MetadataReconciler
    let metadata: MetadataService
    let replicas: ReplicaManager
    let logger: Logger
    private let maintenance: Mutex<[RepeatedTask]>

    private init(
        config: BrokerConfig, group: MultiThreadedEventLoopGroup, threadPool: NIOThreadPool, cache: MetadataCache,
        quorum: RaftShell, reconciler: MetadataReconciler, metadata: MetadataService, replicas: ReplicaManager,
        logger: Logger
    ) {
        self.config = config
        self.group = group
        self.threadPool = threadPool
        self.cache = cache
        self.quorum = quorum
        self.reconciler = reconciler
        self.metadata = metadata
        self.replicas = replicas
        self.logger = logger
        self.maintenance = Mutex([])
    }

    /// Opens the data directory: the metadata quorum (a single voter in standalone) replays its
    /// log, then every partition of the resulting image is recovered. `run()` must then run for
    /// the broker's lifetime.
    public static func start(config: BrokerConfig, logger: Logger) async throws -> Broker {
        try config.validate()
        let threads = config.eventLoopThreads == 0 ? System.coreCount : config.eventLoopThreads
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        do {
            try FileSystem.createDirectory(config.dataDirectory + "/logs")
            try Self.removeDeletedDirectories(config.dataDirectory + "/logs", logger: logger)
            let replicas = ReplicaManager(
                logsDirectory: config.dataDirectory + "/logs", group: group, threadPool: threadPool, logger: logger)
            let cache = MetadataCache(MetadataImage(clusterID: ""))
            let reconciler = MetadataReconciler(
                replicas: replicas, cache: cache, topicDefaults: config.topicDefaults, logger: logger)
            let quorum = try RaftShell(
                id: NodeID(config.nodeID), directory: config.dataDirectory + "/metadata", initialVoters: [NodeID(config.nodeID)],
                transport: NoPeersTransport(), threadPool: threadPool, logger: logger,
                onApply: { reconciler.submit($0) })
            let metadata = MetadataService(quorum: quorum, reconciler: reconciler, config: config, logger: logger)
            let started = ContinuousClock.now
            let image = try await quorum.waitUntilCaughtUp()
            await reconciler.reconcile(to: image)
            logger.info(
                "recovered metadata and partitions",
                metadata: [
                    "partitions": "\(replicas.partitionCount)", "clusterID": "\(image.clusterID)",
                    "metadataOffset": "\(image.offset)", "elapsed": "\(ContinuousClock.now - started)",
                ])
            return Broker(
                config: config, group: group, threadPool: threadPool, cache: cache, quorum: quorum,
                reconciler: reconciler, metadata: metadata, replicas: replicas, logger: logger)
        } catch {
            try? await threadPool.shutdownGracefully()
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Runs the metadata quorum's clock and the reconciler until cancelled.
    public func run() async throws {
        let tasks = self.replicas.startMaintenance(retentionIntervalMilliseconds: self.config.retentionCheckIntervalMilliseconds)
        self.maintenance.withLock { $0 = tasks }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.quorum.run() }
            group.addTask { await self.reconciler.run() }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Directories of deleted partitions left by a crash mid-deletion.
    private static func removeDeletedDirectories(_ logs: String, logger: Logger) throws {
        for name in try FileSystem.list(logs) where name.hasSuffix("-delete") {
            logger.info("removing leftover deleted partition directory", metadata: ["directory": "\(name)"])
            try FileSystem.removeTree(logs + "/" + name)
        }
    }

    /// Closes every partition (flushing it) and the metadata log, then stops the loops.
    public func shutdown() async {
        for task in self.maintenance.withLock({ $0 }) { task.cancel() }
        await self.reconciler.stop()
        await self.replicas.closeAll()
        await self.quorum.close()
        try? await self.threadPool.shutdownGracefully()
        try? await self.group.shutdownGracefully()
    }

    /// The endpoint this node advertises.
    var endpoint: (nodeID: Int32, host: String, port: Int32, rack: String?) {
        let advertised = self.config.advertised
        return (self.config.nodeID, advertised.host, Int32(advertised.port), self.config.rack)
    }
}
