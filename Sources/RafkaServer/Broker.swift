import KafkaProtocol
import Logging
import NIOCore
import NIOPosix
import Prometheus
import RafkaCore
import RafkaStorage
import Synchronization

/// Where a broker's metadata comes from and where its metadata changes go.
enum BrokerControl: Sendable {
    /// Standalone: this process is the whole controller quorum (one voter).
    case local(quorum: RaftShell, metadata: MetadataService)
    /// A data node: the controllers are other processes, reached through the link.
    case remote(ControllerLink)
}

/// One broker's state: event loops, its metadata (local quorum or controller link), and the
/// partitions it hosts.
///
/// Lifecycle: `startStandalone` replays the local metadata log and recovers every partition;
/// `startDataNode` connects to the controllers; the listener then serves Kafka requests through
/// `KafkaAPIs` while `run()` drives the metadata loops; `shutdown` closes every partition
/// cleanly (flush, indexes, checkpoints) and then the metadata side.
public final class Broker: Sendable {
    public let config: BrokerConfig
    let group: MultiThreadedEventLoopGroup
    let threadPool: NIOThreadPool
    /// Starts segment writeback and drops written-back pages (it waits on the device), apart
    /// from `threadPool` so that fsyncs never queue behind it.
    let writebackPool: NIOThreadPool
    /// Records fetch responses hold in memory, read from the device or the hot cache's
    /// (`max-read-memory-bytes`).
    let readMemory: MemoryBudget
    /// Consumers' and replicas' incremental fetch sessions (KIP-227).
    let fetchSessions = FetchSessionCache()
    /// How long the event loops could not run (logged past 100 ms; metrics).
    let stalls: LoopStallWatch
    /// Where the node's Prometheus metrics are kept (`BrokerMetrics` serves them).
    let metricsRegistry = PrometheusCollectorRegistry()
    /// Client requests and connections, as they happen.
    let requestMetrics: RequestMetrics
    let cache: MetadataCache
    let control: BrokerControl
    let reconciler: MetadataReconciler
    let replicas: ReplicaManager
    /// A data node's Chord (nil in standalone).
    let chord: ChordShell?
    let logger: Logger
    private let maintenance: Mutex<[RepeatedTask]>
    /// `requestStop` (SIGTERM): `run` returns, after a data node's controlled leave.
    private let stopRequests: AsyncStream<Void>
    private let stopRequester: AsyncStream<Void>.Continuation

    private init(
        config: BrokerConfig, group: MultiThreadedEventLoopGroup, threadPool: NIOThreadPool, writebackPool: NIOThreadPool,
        cache: MetadataCache, control: BrokerControl, reconciler: MetadataReconciler, replicas: ReplicaManager, chord: ChordShell? = nil, logger: Logger
    ) {
        self.chord = chord
        self.config = config
        self.group = group
        self.threadPool = threadPool
        self.writebackPool = writebackPool
        self.readMemory = MemoryBudget(capacityBytes: config.readMemoryBytesMax)
        self.stalls = LoopStallWatch(logger: logger)
        self.stalls.watch(group)
        self.requestMetrics = RequestMetrics(registry: self.metricsRegistry)
        self.cache = cache
        self.control = control
        self.reconciler = reconciler
        self.replicas = replicas
        self.logger = logger
        self.maintenance = Mutex([])
        (self.stopRequests, self.stopRequester) = AsyncStream.makeStream()
    }

    /// Standalone leads every partition; a data node those the ring places on it.
    var isStandalone: Bool {
        if case .local = self.control { return true }
        return false
    }

    /// Event loops and the partition registry both modes share.
    private static func foundations(
        _ config: BrokerConfig, logger: Logger
    ) throws -> (MultiThreadedEventLoopGroup, NIOThreadPool, NIOThreadPool, ReplicaManager, MetadataCache) {
        try config.validate()
        let threads = config.eventLoopThreads == 0 ? System.coreCount : config.eventLoopThreads
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let writebackPool = NIOThreadPool(numberOfThreads: 1)
        writebackPool.start()
        try FileSystem.createDirectory(config.dataDirectory + "/logs")
        try Self.removeDeletedDirectories(config.dataDirectory + "/logs", logger: logger)
        let replicas = ReplicaManager(
            logsDirectory: config.dataDirectory + "/logs", group: group, threadPool: threadPool, writebackPool: writebackPool,
            hotCache: HotCache(bytesMax: config.hotCacheBytes, maxAgeMilliseconds: config.hotCacheMaxAgeMilliseconds),
            pageCacheTailBytes: config.pageCacheTailBytes, logger: logger)
        return (group, threadPool, writebackPool, replicas, MetadataCache(
            MetadataImage(clusterID: ""), uncleanByDefault: config.topicDefaults["unclean.leader.election.enable"] == "true"))
    }

    /// Standalone: the metadata quorum (this process, a single voter) replays its log, then
    /// every partition of the resulting image is recovered. `run()` must then run for the
    /// broker's lifetime.
    public static func start(config: BrokerConfig, logger: Logger) async throws -> Broker {
        let (group, threadPool, writebackPool, replicas, cache) = try Self.foundations(config, logger: logger)
        do {
            let reconciler = MetadataReconciler(
                replicas: replicas, cache: cache, topicDefaults: config.topicDefaults, mover: nil, logger: logger)
            let quorum = try RaftShell(
                id: NodeID(config.nodeID), directory: config.dataDirectory + "/metadata", initialVoters: [NodeID(config.nodeID)],
                transport: NoPeersTransport(), threadPool: threadPool,
                options: RaftShell.Options(snapshotEveryEntries: config.metadataSnapshotEveryEntries), logger: logger,
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
                config: config, group: group, threadPool: threadPool, writebackPool: writebackPool, cache: cache,
                control: .local(quorum: quorum, metadata: metadata), reconciler: reconciler, replicas: replicas, logger: logger)
        } catch {
            try? await threadPool.shutdownGracefully()
            try? await writebackPool.shutdownGracefully()
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// A data node: follows the metadata log from `config.controllers`, forwards metadata
    /// changes to their leader, and serves the partitions the ring places on it.
    public static func startDataNode(config: BrokerConfig, logger: Logger) async throws -> Broker {
        let (group, threadPool, writebackPool, replicas, cache) = try Self.foundations(config, logger: logger)
        let mover = PartitionMover(me: NodeID(config.nodeID), replicas: replicas, topicDefaults: config.topicDefaults, logger: logger)
        let reconciler = MetadataReconciler(
            replicas: replicas, cache: cache, topicDefaults: config.topicDefaults, mover: mover, logger: logger)
        let links = PeerLinks(endpoints: [:], group: group, logger: logger)
        let chord = ChordShell(me: NodeID(config.nodeID), links: links, logger: logger)
        let link = ControllerLink(
            controllers: config.controllers.map { Endpoint(host: $0.host, port: Int32($0.port)) }, config: config, group: group,
            logger: logger,
            onImage: {
                reconciler.submit($0)
                chord.submit($0)
            })
        await chord.reportSuspects { await link.report(suspects: $0) }
        await mover.reportCaughtUp { await link.reportCaughtUp() }
        do {
            try await link.catchUp()
            await reconciler.reconcile(to: await link.image)
        } catch {
            await link.close()
            try? await threadPool.shutdownGracefully()
            try? await writebackPool.shutdownGracefully()
            try? await group.shutdownGracefully()
            throw error
        }
        let offset = await link.image.offset
        logger.info("caught up with the controllers' metadata", metadata: ["metadataOffset": "\(offset)"])
        return Broker(
            config: config, group: group, threadPool: threadPool, writebackPool: writebackPool, cache: cache, control: .remote(link), reconciler: reconciler,
            replicas: replicas, chord: chord, logger: logger)
    }

    /// Runs the metadata loops (the quorum's clock, or the controller link) and the reconciler
    /// until cancelled. Standalone registers its own node with its quorum, as a data node does
    /// with the controllers, so that it has ring tokens and `ring describe` shows it.
    public func run() async throws {
        let tasks = self.replicas.startMaintenance(retentionIntervalMilliseconds: self.config.retentionCheckIntervalMilliseconds)
        self.maintenance.withLock { $0 = tasks }
        // Each task says whether it was one of the loops, whose end ends the broker.
        try await withThrowingTaskGroup(of: Bool.self) { group in
            switch self.control {
            case .local(let quorum, let metadata):
                group.addTask {
                    try await quorum.run()
                    return true
                }
                group.addTask {
                    let me = self.endpoint
                    do {
                        _ = try await metadata.registerNode(id: NodeID(me.nodeID), host: me.host, port: me.port, rack: me.rack)
                    } catch where Task.isCancelled {
                        // Stopped before the registration committed: the next start registers.
                    }
                    return false
                }
            case .remote(let link):
                group.addTask {
                    try await link.run()
                    return true
                }
                if let chord = self.chord {
                    group.addTask {
                        try await chord.run()
                        return true
                    }
                }
            }
            group.addTask {
                await self.reconciler.run()
                return true
            }
            group.addTask {
                for await _ in self.stopRequests { break }
                if !Task.isCancelled { await self.leaveRing() }
                return true
            }
            while let wasLoop = try await group.next(), !wasLoop {}
            group.cancelAll()
        }
    }

    /// Asks `run` to return: at once in standalone; a data node first leaves the ring.
    public func requestStop() {
        self.stopRequester.yield()
    }

    /// How long a controlled shutdown waits for the controllers to commit the leave.
    private static let leaveCommitTimeout = Duration.seconds(3)

    /// A data node's controlled shutdown: asks the controllers to take it out of the placement,
    /// then stays (serving the new leaders its copies) until every partition it served was
    /// taken over, or `controlled-shutdown-timeout-ms` passed.
    private func leaveRing() async {
        guard case .remote(let link) = self.control else { return }
        let me = NodeID(self.config.nodeID)
        guard self.cache.image.nodes.values.contains(where: { $0.id != me && !$0.fenced && $0.isPlaced }) else {
            return  // nobody to hand over to
        }
        let started = ContinuousClock.now
        let deadline = started + .milliseconds(self.config.controlledShutdownTimeoutMilliseconds)
        if let mover = self.reconciler.mover {
            // While this node still serves them, the nodes that will lead its partitions copy
            // them: the takeovers after the leave copy only what came since.
            let limit = TimeAmount.milliseconds(Int64(self.config.controlledShutdownTimeoutMilliseconds) / 2)
            let (asked, copied) = await mover.copyAheadOfLeaving(within: limit)
            self.logger.info(
                "the next nodes copied this node's partitions ahead of its leave",
                metadata: ["asked": "\(asked)", "copied": "\(copied)", "elapsed": "\(ContinuousClock.now - started)"])
        }
        // What it serves now, after the copies: a takeover may have ended meanwhile.
        let handing = Set(self.replicas.served)
        self.logger.info("leaving the ring: the next nodes take this node's partitions over", metadata: ["partitions": "\(handing.count)"])
        await link.requestLeave()
        while ContinuousClock.now < deadline && !Task.isCancelled {
            let left = handing.filter { self.replicas.anyShell(for: $0) != nil }
            if left.isEmpty {
                self.logger.info(
                    "handed every partition over", metadata: ["partitions": "\(handing.count)", "elapsed": "\(ContinuousClock.now - started)"])
                return
            }
            // A whole cluster stopping: nobody is left to take over, or the controllers are gone
            // and cannot take this node out of the placement.
            let image = self.cache.image
            let leaving = image.nodes[me]?.leaving ?? true
            if leaving && !image.nodes.values.contains(where: { $0.id != me && !$0.fenced && $0.isPlaced }) {
                self.logger.notice("no data node is left to take this node's partitions over; stopping")
                return
            }
            if !leaving && ContinuousClock.now - started > Self.leaveCommitTimeout {
                self.logger.notice("the controllers did not take this node out of the ring; stopping without handing over")
                return
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        let left = handing.filter { self.replicas.anyShell(for: $0) != nil }
        self.logger.warning(
            "controlled shutdown timed out: partitions not taken over wait for this node's return",
            metadata: ["partitions": "\(left.count)", "of": "\(handing.count)"])
    }

    /// Directories of deleted partitions left by a crash mid-deletion.
    private static func removeDeletedDirectories(_ logs: String, logger: Logger) throws {
        for name in try FileSystem.list(logs) where name.hasSuffix("-delete") {
            logger.info("removing leftover deleted partition directory", metadata: ["directory": "\(name)"])
            try FileSystem.removeTree(logs + "/" + name)
        }
    }

    /// Closes every partition (flushing it) and the metadata side, then stops the loops.
    public func shutdown() async {
        for task in self.maintenance.withLock({ $0 }) { task.cancel() }
        self.stalls.stop()
        await self.reconciler.stop()
        await self.reconciler.mover?.close()
        await self.chord?.close()
        await self.replicas.closeAll()
        switch self.control {
        case .local(let quorum, _): await quorum.close()
        case .remote(let link): await link.close()
        }
        try? await self.threadPool.shutdownGracefully()
        try? await self.writebackPool.shutdownGracefully()
        try? await self.group.shutdownGracefully()
    }

    /// The endpoint this node advertises.
    var endpoint: (nodeID: Int32, host: String, port: Int32, rack: String?) {
        let advertised = self.config.advertised
        return (self.config.nodeID, advertised.host, Int32(advertised.port), self.config.rack)
    }

    /// What Metadata and DescribeCluster report as the controller: where clients should send
    /// admin requests. Like a KRaft broker, a data node names itself (it forwards to the quorum
    /// leader, which clients cannot reach); standalone is its own controller.
    var controllerID: Int32? {
        get async { self.config.nodeID }
    }

    /// The brokers to list in Metadata and DescribeCluster: this node in standalone; on a data
    /// node, every registered data node that is not fenced.
    var brokers: [MetadataResponse.MetadataResponseBroker] {
        guard case .remote = self.control else {
            let me = self.endpoint
            return [.init(nodeId: me.nodeID, host: me.host, port: me.port, rack: me.rack)]
        }
        return self.cache.image.nodes.values.filter { !$0.fenced }.sorted { $0.id < $1.id }.map {
            .init(nodeId: $0.id.rawValue, host: $0.host, port: $0.port, rack: $0.rack)
        }
    }

    /// Makes sure topic `name` exists (auto-creation), and that this node's image shows it.
    func ensureTopic(_ name: String) async throws(BrokerError) -> TopicMetadata {
        switch self.control {
        case .local(_, let metadata):
            return try await metadata.ensureTopic(name: name)
        case .remote(let link):
            return try await link.ensureTopic(name, defaults: self.config, reconciler: self.reconciler)
        }
    }
}
