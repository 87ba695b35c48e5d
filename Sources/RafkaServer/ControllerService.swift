import HashTreeCollections
import Foundation
import KafkaProtocol
import Logging
import NIOCore
import NIOPosix
import RafkaCore
import RafkaStorage
import RaftCore
import ServiceLifecycle
import Synchronization

/// One member of the controller quorum: the Raft shell over its metadata log, the transport to
/// the other voters, and the quorum-management APIs served on the controller listener.
final class ControllerService: Sendable {
    let config: BrokerConfig
    let quorum: RaftShell
    let metadata: MetadataService
    let links: PeerLinks
    let logger: Logger
    /// The initial voters' controller listeners, from `--voters`.
    let staticEndpoints: [NodeID: Endpoint]
    /// What the leader last heard from each data node (only meaningful while leading).
    private let liveness = Mutex<[NodeID: Liveness]>([:])

    struct Liveness {
        var heardAt: ContinuousClock.Instant
        /// The metadata offset the node reported applying (-1 before its first heartbeat).
        var appliedOffset: Int64
        /// Wall-clock milliseconds of `heardAt`, as DescribeQuorum reports it.
        var heardAtEpochMs: Int64

        static func now(appliedOffset: Int64) -> Liveness {
            Liveness(heardAt: .now, appliedOffset: appliedOffset, heardAtEpochMs: Int64(Date().timeIntervalSince1970 * 1000))
        }
    }

    init(config: BrokerConfig, group: any EventLoopGroup, threadPool: NIOThreadPool, logger: Logger) throws {
        self.config = config
        self.logger = logger
        let endpoints = Dictionary(
            uniqueKeysWithValues: config.voters.map { (NodeID($0.id), Endpoint(host: $0.endpoint.host, port: Int32($0.endpoint.port))) })
        self.staticEndpoints = endpoints
        let links = PeerLinks(endpoints: endpoints.filter { $0.key != NodeID(config.nodeID) }, group: group, logger: logger)
        self.links = links
        let me = NodeID(config.nodeID)
        self.quorum = try RaftShell(
            id: me, directory: config.dataDirectory + "/metadata", initialVoters: config.voters.map { NodeID($0.id) },
            transport: RaftPeerTransport(links: links), threadPool: threadPool, options: RaftShell.Options(snapshotEveryEntries: config.metadataSnapshotEveryEntries), logger: logger,
            onApply: { image in
                links.update(endpoints: image.controllerEndpoints.filter { $0.key != me })
            })
        self.metadata = MetadataService(quorum: self.quorum, reconciler: nil, config: config, logger: logger)
    }

    /// Topic and configuration APIs, answered from the applied image and proposed through the
    /// quorum (a follower answers NOT_CONTROLLER for changes; clients go to the leader).
    var admin: AdminAPIs {
        let quorum = self.quorum
        return AdminAPIs(metadata: self.metadata, config: self.config, logger: self.logger) { await quorum.image }
    }

    /// Every controller's listener: the static ones, then any registered since.
    func endpoints(_ image: MetadataImage) -> [NodeID: Endpoint] {
        self.staticEndpoints.merging(image.controllerEndpoints) { _, registered in registered }
    }

    // MARK: Quorum APIs

    func describeQuorum() async -> DescribeQuorumResponse {
        let status = await self.quorum.status()
        let image = await self.quorum.image
        let observers = status.leader == self.quorum.id ? self.liveness.withLock { $0 } : [:]
        return QuorumDescription.response(
            status: status, me: self.quorum.id, image: image, endpoints: self.endpoints(image),
            observers: observers.mapValues { (appliedOffset: $0.appliedOffset, heardAtEpochMs: $0.heardAtEpochMs) })
    }

    /// DescribeCluster from a controller: the active data nodes, or with endpoint type 2
    /// (KIP-919) the controllers.
    func describeCluster(_ request: DescribeClusterRequest) async -> DescribeClusterResponse {
        let image = await self.quorum.image
        var response = DescribeClusterResponse()
        response.clusterId = image.clusterID
        response.controllerId = (await self.quorum.leader)?.rawValue ?? -1
        response.endpointType = request.endpointType
        response.clusterAuthorizedOperations = KafkaAPIs.authorizedOperationsOmitted
        if request.endpointType == 2 {
            response.brokers = self.endpoints(image).sorted { $0.key < $1.key }.map {
                .init(brokerId: $0.key.rawValue, host: $0.value.host, port: $0.value.port)
            }
        } else {
            response.brokers = image.nodes.values.filter { !$0.fenced }.sorted { $0.id < $1.id }.map {
                .init(brokerId: $0.id.rawValue, host: $0.host, port: $0.port, rack: $0.rack)
            }
        }
        return response
    }

    /// Every registered data node; the leader adds what it last heard from each.
    func describeNodes() async -> DescribeNodesResponse {
        let image = await self.quorum.image
        let leading = await self.quorum.isLeader
        let heard = leading ? self.liveness.withLock { $0 } : [:]
        let now = ContinuousClock.now
        return DescribeNodesResponse(
            fromLeader: leading,
            nodes: image.nodes.values.sorted { $0.id < $1.id }.map { node in
                let live = heard[node.id]
                return .init(
                    id: node.id.rawValue, host: node.host, port: node.port, rack: node.rack, incarnation: node.incarnation,
                    fenced: node.fenced, appliedOffset: live?.appliedOffset ?? -1,
                    lastHeartbeatAgeMs: live.map { Int64((now - $0.heardAt) / .milliseconds(1)) } ?? -1)
            })
    }

    /// The ring as the applied image holds it.
    func describeRing() async -> DescribeRingResponse {
        let image = await self.quorum.image
        return DescribeRingResponse(image: image, placement: PartitionPlacement(image: image), answeredBy: -1)
    }

    /// Metadata from a controller: the topics of the applied image (no data plane here, so
    /// partitions have no leader) and the registered data nodes as brokers.
    func metadata(_ request: MetadataRequest, version: Int16) async -> MetadataResponse {
        let image = await self.quorum.image
        var response = MetadataResponse()
        response.clusterId = image.clusterID
        response.controllerId = (await self.quorum.leader)?.rawValue ?? -1
        response.clusterAuthorizedOperations = KafkaAPIs.authorizedOperationsOmitted
        response.brokers = image.nodes.values.filter { !$0.fenced }.sorted { $0.id < $1.id }.map {
            .init(nodeId: $0.id.rawValue, host: $0.host, port: $0.port, rack: $0.rack)
        }
        let all = request.topics == nil || (version == 0 && request.topics!.isEmpty)
        let names = all ? image.topics.keys.sorted() : (request.topics ?? []).compactMap(\.name)
        for name in names {
            guard let topic = image.topics[name] else {
                response.topics.append(
                    .init(errorCode: KafkaErrorCode.unknownTopicOrPartition.rawValue, name: name,
                          topicAuthorizedOperations: KafkaAPIs.authorizedOperationsOmitted))
                continue
            }
            var described = MetadataResponse.MetadataResponseTopic()
            described.name = name
            described.topicId = topic.id
            described.topicAuthorizedOperations = KafkaAPIs.authorizedOperationsOmitted
            described.partitions = (0..<topic.partitionCount).map {
                .init(errorCode: KafkaErrorCode.leaderNotAvailable.rawValue, partitionIndex: $0, leaderId: -1, leaderEpoch: -1)
            }
            response.topics.append(described)
        }
        return response
    }

    // MARK: Data nodes

    func registerNode(_ request: RegisterNodeRequest) async -> RegisterNodeResponse {
        do {
            let incarnation = try await self.metadata.registerNode(
                id: NodeID(request.nodeID), host: request.host, port: request.port, rack: request.rack)
            self.liveness.withLock { $0[NodeID(request.nodeID)] = .now(appliedOffset: -1) }
            return RegisterNodeResponse(incarnation: incarnation)
        } catch {
            return RegisterNodeResponse(errorCode: error.code.rawValue, errorMessage: error.message)
        }
    }

    func heartbeat(_ request: NodeHeartbeatRequest) async -> NodeHeartbeatResponse {
        guard await self.quorum.isLeader else { return NodeHeartbeatResponse(errorCode: KafkaErrorCode.notController.rawValue) }
        let node = await self.quorum.image.nodes[NodeID(request.nodeID)]
        guard let node, node.incarnation == request.incarnation, !node.fenced else {
            return NodeHeartbeatResponse(errorCode: KafkaErrorCode.staleBrokerEpoch.rawValue)
        }
        self.liveness.withLock { $0[node.id] = .now(appliedOffset: request.appliedOffset) }
        await self.confirm(suspects: request.suspects.map { NodeID($0) }, reportedBy: node.id)
        if request.caughtUp && node.joining {
            do {
                try await self.metadata.activateNode(id: node.id, incarnation: node.incarnation)
            } catch {
                return NodeHeartbeatResponse(errorCode: error.code.rawValue)
            }
        }
        if request.wantsToLeave && !node.leaving {
            do {
                try await self.metadata.markNodeLeaving(id: node.id, incarnation: node.incarnation)
            } catch {
                return NodeHeartbeatResponse(errorCode: error.code.rawValue)
            }
        }
        return NodeHeartbeatResponse()
    }

    /// The longest a data node's metadata long poll is held (`FetchMetadataRequest.maxWaitMs`).
    static let metadataWaitMax = Duration.seconds(5)

    func fetchMetadata(_ request: FetchMetadataRequest) async -> FetchMetadataResponse {
        let after = LogIndex(UInt64(max(0, request.fromOffset)))
        if request.maxWaitMs > 0 {
            _ = await self.quorum.waitCommitted(after: after, limit: min(.milliseconds(request.maxWaitMs), Self.metadataWaitMax))
        }
        let found = await self.quorum.committed(after: after, limit: Int(max(1, min(request.maxEntries, 10_000))))
        return FetchMetadataResponse(
            commitIndex: Int64(found.commit.rawValue), snapshot: found.snapshot.map { ByteBuffer(bytes: $0.data) },
            entries: found.entries)
    }

    /// A data node's ring neighbours stopped answering it: fenced at once if the controllers
    /// have not heard from it for `suspected-node-timeout-ms` either (a node that still
    /// heartbeats is alive, whatever its neighbours see; the session timeout remains the backstop).
    private func confirm(suspects: [NodeID], reportedBy reporter: NodeID) async {
        guard !suspects.isEmpty else { return }
        let image = await self.quorum.image
        let now = ContinuousClock.now
        let silence = Duration.milliseconds(self.config.suspectedNodeTimeoutMilliseconds)
        let confirmed = self.liveness.withLock { seen in
            suspects.compactMap { id -> NodeRegistration? in
                guard id != reporter, let node = image.nodes[id], !node.fenced, let last = seen[id], now - last.heardAt > silence else {
                    return nil
                }
                return node
            }
        }
        for node in confirmed {
            self.logger.warning(
                "a data node's ring neighbours and the controllers both stopped hearing from it",
                metadata: ["node": "\(node.id)", "reportedBy": "\(reporter)"])
            try? await self.metadata.fenceNode(id: node.id, incarnation: node.incarnation, reason: "suspected by node \(reporter)")
        }
    }

    /// On the leader: fences data nodes whose heartbeats stopped for the session timeout. A
    /// node first seen by this leader gets a full timeout of grace.
    func fenceSilentNodes() async {
        guard await self.quorum.isLeader else {
            self.liveness.withLock { $0.removeAll() }
            return
        }
        let image = await self.quorum.image
        let now = ContinuousClock.now
        let timeout = Duration.milliseconds(self.config.nodeSessionTimeoutMilliseconds)
        let expired = self.liveness.withLock { seen -> [NodeRegistration] in
            var expired: [NodeRegistration] = []
            for node in image.nodes.values where !node.fenced {
                guard let last = seen[node.id] else {
                    seen[node.id] = .now(appliedOffset: -1)
                    continue
                }
                if now - last.heardAt > timeout { expired.append(node) }
            }
            return expired
        }
        for node in expired {
            try? await self.metadata.fenceNode(id: node.id, incarnation: node.incarnation, reason: "no heartbeat within the session timeout")
        }
    }

    func addVoter(_ request: AddRaftVoterRequest) async -> AddRaftVoterResponse {
        var response = AddRaftVoterResponse()
        guard let listener = request.listeners.first else {
            response.errorCode = KafkaErrorCode.invalidRequest.rawValue
            response.errorMessage = "the new voter's listener is required"
            return response
        }
        do {
            let id = NodeID(request.voterId)
            _ = try await self.quorum.propose(.registerController(id: id, endpoint: Endpoint(host: listener.host, port: Int32(listener.port))))
            _ = try await self.quorum.changeConfiguration(.addVoter(id))
            self.logger.info("added controller voter", metadata: ["voter": "\(id)", "listener": "\(listener.host):\(listener.port)"])
        } catch {
            let failure = error as? BrokerError ?? BrokerError(.unknownServerError, "\(error)")
            response.errorCode = failure.code.rawValue
            response.errorMessage = failure.message
        }
        return response
    }

    func removeVoter(_ request: RemoveRaftVoterRequest) async -> RemoveRaftVoterResponse {
        var response = RemoveRaftVoterResponse()
        do {
            _ = try await self.quorum.changeConfiguration(.removeVoter(NodeID(request.voterId)))
            self.logger.info("removed controller voter", metadata: ["voter": "\(request.voterId)"])
        } catch {
            let failure = error as? BrokerError ?? BrokerError(.unknownServerError, "\(error)")
            response.errorCode = failure.code.rawValue
            response.errorMessage = failure.message
        }
        return response
    }
}

/// `rafka controller`: one voter of the metadata quorum, serving Raft traffic and the quorum APIs
/// on its listener until SIGTERM/SIGINT.
public struct ControllerProcess: Service {
    let config: BrokerConfig
    let logger: Logger

    public init(config: BrokerConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, self.config.eventLoopThreads == 0 ? 2 : self.config.eventLoopThreads))
        let threadPool = NIOThreadPool(numberOfThreads: 2)  // log fsyncs, and snapshots beside them
        threadPool.start()
        do {
            try await self.serve(group: group, threadPool: threadPool)
        } catch {
            try? await threadPool.shutdownGracefully()
            try? await group.shutdownGracefully()
            throw error
        }
        try? await threadPool.shutdownGracefully()
        try? await group.shutdownGracefully()
    }

    private func serve(group: MultiThreadedEventLoopGroup, threadPool: NIOThreadPool) async throws {
        let controller = try ControllerService(config: self.config, group: group, threadPool: threadPool, logger: self.logger)
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(KafkaFrameDecoder(frameBytesMax: self.config.requestBytesMax)))
                    // One request at a time per connection: Raft messages from a peer are
                    // applied in the order it sent them.
                    try channel.pipeline.syncOperations.addHandler(
                        KafkaConnectionHandler(
                            router: ControllerRouter(controller: controller),
                            memory: ConnectionMemory(budget: MemoryBudget(capacityBytes: self.config.requestMemoryBytesMax)),
                            logger: self.logger, inFlightMax: 1))
                }
            }
            .bind(host: self.config.listen.host, port: self.config.listen.port)
            .get()
        self.logger.info(
            "controller listening", metadata: ["address": "\(self.config.listen)", "voters": "\(self.config.voters.map { "\($0.id)@\($0.endpoint)" })"])
        do {
            try await cancelWhenGracefulShutdown {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await controller.quorum.run() }
                    group.addTask {
                        while !Task.isCancelled {
                            try await Task.sleep(for: .milliseconds(250))
                            await controller.fenceSilentNodes()
                        }
                    }
                    try await group.next()
                    group.cancelAll()
                }
            }
        } catch is CancellationError {
        }
        self.logger.info("controller shutting down")
        try? await listener.close()
        controller.links.close()
        await controller.quorum.close()
        self.logger.info("controller shut down cleanly")
    }
}
