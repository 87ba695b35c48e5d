import ChordCore
import HashTreeCollections
import KafkaProtocol
import Logging
import NIOCore
import RafkaCore
import RafkaStorage

/// The Kafka API handlers. Each takes a decoded request and returns a future response on the
/// connection's event loop; nil means "send nothing" (acks=0). Errors inside a request become
/// Kafka error codes in the response; a handler never fails its future for a client mistake.
struct KafkaAPIs: Sendable {
    let broker: Broker

    /// The metadata-changing APIs: run here in standalone (shared with the controllers'
    /// listener), forwarded to the controller leader on a data node.
    var admin: AdminRouting {
        switch self.broker.control {
        case .local(_, let metadata):
            let cache = self.broker.cache
            return .local(AdminAPIs(metadata: metadata, config: self.broker.config, logger: self.broker.logger) { cache.image })
        case .remote(let link):
            return .forwarded(link, self.broker.reconciler, self.broker.cache, self.broker.config, self.broker.logger)
        }
    }

    var logger: Logger { self.broker.logger }

    /// Kafka's "authorized operations not requested" marker.
    static let authorizedOperationsOmitted = Int32.min

    /// Runs `body` on Swift's executor and delivers its result on `eventLoop`. Used for calls
    /// into the metadata actor; the Task is bounded by the request it serves.
    func async<T: Sendable>(
        on eventLoop: any EventLoop,
        _ body: @escaping @Sendable () async -> T
    ) -> EventLoopFuture<T> {
        eventLoop.makeFutureWithTask(body)
    }

    /// The error for a partition this node does not serve: offline after a failed recovery,
    /// led elsewhere (clients refresh their metadata), or unknown.
    func missingPartitionError(_ topicPartition: TopicPartition) -> BrokerError {
        if let reason = self.broker.replicas.offlineReason(topicPartition) {
            return BrokerError(.kafkaStorageError, "\(topicPartition) is offline: \(reason)")
        }
        if let topic = self.broker.cache.image.topics[topicPartition.topic], topicPartition.partition < topic.partitionCount {
            return BrokerError(.notLeaderOrFollower, "\(topicPartition) is not led by this node")
        }
        return BrokerError(.unknownTopicOrPartition, "unknown partition \(topicPartition)")
    }

    /// `error` from a partition's shell, as the client should hear it: on a data node, a shell
    /// closed under a request ("deleted") whose topic still exists was handed to another node
    /// (NOT_LEADER_OR_FOLLOWER, with a leader hint), not removed.
    func servingError(_ error: any Error, _ topicPartition: TopicPartition) -> BrokerError {
        guard let error = error as? BrokerError else { return BrokerError(.unknownServerError, "\(error)") }
        guard error.code == .unknownTopicOrPartition, !self.broker.isStandalone else { return error }
        return self.missingPartitionError(topicPartition)
    }

    /// The leader epoch of `topicPartition` by this node's image (`snapshot`, for a caller that
    /// looks many partitions up in one): 0 in standalone; on a data node, the ring epoch at which
    /// its leader last changed (what Metadata answers report); -1 for a topic the image does not have.
    func leaderEpoch(of topicPartition: TopicPartition, in snapshot: MetadataCache.Snapshot? = nil) -> Int32 {
        guard !self.broker.isStandalone else { return 0 }
        let (image, placement) = snapshot ?? self.broker.cache.snapshot
        guard let topic = image.topics[topicPartition.topic] else { return -1 }
        return placement.leaderEpoch(of: topic, partition: topicPartition.partition)
    }

    /// The image to look many partitions' leader epochs up in, once per request (nil in standalone).
    var epochSnapshot: MetadataCache.Snapshot? {
        self.broker.isStandalone ? nil : self.broker.cache.snapshot
    }

    /// `leaderEpoch(of:)` under `placement`, for callers that look many partitions up in one image.
    static func leaderEpoch(of broker: Broker, placement: PartitionPlacement, topic: TopicMetadata, partition: Int32) -> Int32 {
        broker.isStandalone ? 0 : placement.leaderEpoch(of: topic, partition: partition)
    }

    /// Checks a client's `currentLeaderEpoch` (-1: not given) of `topicPartition`: a newer one
    /// than this node's means its metadata is behind (UNKNOWN_LEADER_EPOCH), an older one the
    /// client's is (FENCED_LEADER_EPOCH); both are retriable after a metadata refresh.
    func leaderEpochError(_ epoch: Int32, of topicPartition: TopicPartition) -> BrokerError? {
        guard epoch >= 0 else { return nil }
        return Self.leaderEpochError(epoch, current: self.leaderEpoch(of: topicPartition))
    }

    /// `leaderEpochError` against `current`, the partition's epoch as the caller looked it up.
    static func leaderEpochError(_ epoch: Int32, current: Int32) -> BrokerError? {
        guard epoch >= 0 else { return nil }
        if epoch > current { return BrokerError(.unknownLeaderEpoch, "leader epoch \(epoch) is newer than \(current)") }
        if epoch < current { return BrokerError(.fencedLeaderEpoch, "leader epoch \(epoch) is older than \(current)") }
        return nil
    }

    /// `results` of every partition of a request, in order, grouped per topic (`counts`: each
    /// topic's partitions).
    static func grouped<Result>(_ results: [Result], counts: [Int]) -> [[Result]] {
        var grouped: [[Result]] = []
        var cursor = 0
        for count in counts {
            grouped.append(Array(results[cursor..<cursor + count]))
            cursor += count
        }
        return grouped
    }

    /// Whether auto-creation applies (broker setting and, v4+, the client's wish).
    func mayAutoCreate(clientAllows: Bool) -> Bool {
        self.broker.config.autoCreateTopics && clientAllows
    }

    // MARK: ApiVersions

    /// The ApiVersions body listing `RequestRouter.supported`.
    func apiVersionsTable(error: KafkaErrorCode = KafkaErrorCode(rawValue: 0)) -> ApiVersionsResponse {
        var response = ApiVersionsResponse()
        response.errorCode = error.rawValue
        response.apiKeys = RequestRouter.supported.map {
            ApiVersionsResponse.ApiVersion(apiKey: $0.0.rawValue, minVersion: $0.1.lowerBound, maxVersion: $0.1.upperBound)
        }
        return response
    }

    func apiVersions(_ request: ApiVersionsRequest, _ context: RequestContext) -> EventLoopFuture<ApiVersionsResponse?> {
        context.eventLoop.makeSucceededFuture(self.apiVersionsTable())
    }

    // MARK: DescribeCluster

    func describeCluster(_ request: DescribeClusterRequest, _ context: RequestContext) -> EventLoopFuture<DescribeClusterResponse?> {
        let broker = self.broker
        return self.async(on: context.eventLoop) {
            var response = DescribeClusterResponse()
            response.clusterId = broker.cache.image.clusterID
            response.controllerId = await broker.controllerID ?? -1
            response.endpointType = request.endpointType
            response.brokers = broker.brokers.map {
                .init(brokerId: $0.nodeId, host: $0.host, port: $0.port, rack: $0.rack)
            }
            response.clusterAuthorizedOperations = Self.authorizedOperationsOmitted
            return response
        }
    }

    // MARK: DescribeQuorum

    /// The metadata quorum: this process in standalone (the only voter); a data node asks a
    /// controller.
    func describeQuorum(_ request: DescribeQuorumRequest, _ context: RequestContext) -> EventLoopFuture<DescribeQuorumResponse?> {
        switch self.broker.control {
        case .local(let quorum, _):
            return self.async(on: context.eventLoop) {
                let status = await quorum.status()
                let image = await quorum.image
                return QuorumDescription.response(status: status, me: quorum.id, image: image, endpoints: [:])
            }
        case .remote(let link):
            return context.eventLoop.makeFutureWithTask {
                try await link.describeQuorum(request, version: context.apiVersion)
            }.map { $0 }
        }
    }

    // MARK: DescribeRing

    /// The ring this node's metadata image holds, with what this node serves and, on a data
    /// node, its Chord view of each of its tokens.
    func describeRing(_ request: DescribeRingRequest, _ context: RequestContext) -> EventLoopFuture<DescribeRingResponse?> {
        let broker = self.broker
        return self.async(on: context.eventLoop) {
            let (image, placement) = broker.cache.snapshot
            var response = DescribeRingResponse(image: image, placement: placement, answeredBy: broker.config.nodeID)
            response.servedPartitions = Int32(broker.replicas.partitionCount)
            response.servedBytes = await broker.replicas.servedBytes()
            for view in await broker.chord?.view ?? [] {
                response.views.append(
                    .init(
                        token: view.token.rawValue, predecessorNode: view.predecessor?.node.rawValue ?? -1,
                        predecessorToken: view.predecessor?.position.rawValue ?? 0, successorNode: view.successor.node.rawValue,
                        successorToken: view.successor.position.rawValue))
            }
            return response
        }
    }

    // MARK: DescribeCache

    /// This node's hot cache counters (rafka-admin cache describe).
    func describeCache(_ request: DescribeCacheRequest, _ context: RequestContext) -> EventLoopFuture<DescribeCacheResponse?> {
        let statistics = self.broker.replicas.hotCache.describe()
        var response = DescribeCacheResponse()
        response.nodeID = self.broker.config.nodeID
        response.bytesMax = Int64(statistics.bytesMax)
        response.maxAgeMilliseconds = statistics.maxAgeMilliseconds
        response.bytes = Int64(statistics.bytes)
        response.batches = Int64(statistics.batches)
        response.partitions = Int32(statistics.partitions)
        response.hits = statistics.hits
        response.hitBytes = statistics.hitBytes
        response.misses = statistics.misses
        response.missBytes = statistics.missBytes
        response.evictedForBytes = statistics.evictedForBytes
        response.evictedForAge = statistics.evictedForAge
        return context.eventLoop.makeSucceededFuture(response)
    }

    // MARK: PartitionHandoff

    /// A new leader taking over a partition asks for this node's copy (data nodes only).
    func partitionHandoff(_ request: PartitionHandoffRequest, _ context: RequestContext) -> EventLoopFuture<PartitionHandoffResponse?> {
        guard let mover = self.broker.reconciler.mover else {
            return context.eventLoop.makeSucceededFuture(
                PartitionHandoffResponse(errorCode: KafkaErrorCode.invalidRequest.rawValue, errorMessage: "not a data node"))
        }
        return self.async(on: context.eventLoop) { await mover.handOff(request) }
    }

    /// A node about to leave asks this one, which will lead one of its partitions, to copy it now.
    func partitionCopyAhead(_ request: PartitionCopyAheadRequest, _ context: RequestContext) -> EventLoopFuture<PartitionCopyAheadResponse?> {
        guard let mover = self.broker.reconciler.mover else {
            return context.eventLoop.makeSucceededFuture(
                PartitionCopyAheadResponse(errorCode: KafkaErrorCode.invalidRequest.rawValue, errorMessage: "not a data node"))
        }
        return self.async(on: context.eventLoop) { await mover.copyAhead(request) }
    }
}
