import HashTreeCollections
import KafkaProtocol
import NIOCore
import RafkaCore
import RafkaStorage

extension KafkaAPIs {
    /// Metadata v0–12: brokers, the cluster id, and the requested topics with their partitions:
    /// in standalone all led by this node at leader epoch 0, on a data node by the nodes the
    /// ring places them on, each at its own leader epoch (`PartitionPlacement`). Unknown topics are auto-created
    /// when the broker allows it and the client asks (v4+), and are ready when the reply leaves.
    func metadata(_ request: MetadataRequest, _ context: RequestContext) -> EventLoopFuture<MetadataResponse?> {
        let version = context.apiVersion
        let allTopics = request.topics == nil || (version == 0 && request.topics!.isEmpty)
        let allowAutoCreate = self.mayAutoCreate(clientAllows: version < 4 || request.allowAutoTopicCreation)
        let requested = request.topics ?? []
        let broker = self.broker
        let cache = self.broker.cache
        let replicas = self.broker.replicas
        let standalone = self.broker.isStandalone ? self.broker.config.nodeID : nil
        return self.async(on: context.eventLoop) {
            var (image, placement) = cache.snapshot
            var errors: [String: BrokerError] = [:]
            var unknownIDs: [KafkaUUID] = []
            if !allTopics {
                for topic in requested {
                    if let name = topic.name, !name.isEmpty {
                        guard image.topics[name] == nil else { continue }
                        do throws(BrokerError) {
                            try TopicNames.validate(name)
                            guard allowAutoCreate else {
                                throw BrokerError(.unknownTopicOrPartition, "unknown topic \(name)")
                            }
                            _ = try await broker.ensureTopic(name)
                        } catch {
                            errors[name] = error
                        }
                    } else if image.topic(id: topic.topicId) == nil {
                        unknownIDs.append(topic.topicId)
                    }
                }
                (image, placement) = cache.snapshot
            }
            let leaders = standalone.map { Leaders.standalone($0) } ?? .ring(placement)
            var response = MetadataResponse()
            response.brokers = broker.brokers
            response.clusterId = image.clusterID
            response.controllerId = await broker.controllerID ?? -1
            response.clusterAuthorizedOperations = Self.authorizedOperationsOmitted
            let names: [String] =
                allTopics
                ? image.topics.keys.sorted()
                : requested.compactMap { $0.name.flatMap { $0.isEmpty ? nil : $0 } ?? image.topic(id: $0.topicId)?.name }
            for name in names {
                if let error = errors[name] {
                    response.topics.append(.init(errorCode: error.code.rawValue, name: name, topicAuthorizedOperations: Self.authorizedOperationsOmitted))
                } else if let topic = image.topics[name] {
                    response.topics.append(Self.describe(topic, leaders: leaders, replicas: replicas))
                } else if !allTopics {
                    // Asked for but not (yet) here: clients retry on LEADER_NOT_AVAILABLE.
                    response.topics.append(
                        .init(errorCode: KafkaErrorCode.leaderNotAvailable.rawValue, name: name,
                              topicAuthorizedOperations: Self.authorizedOperationsOmitted))
                }
            }
            for id in unknownIDs {
                response.topics.append(
                    .init(errorCode: KafkaErrorCode.unknownTopicId.rawValue, name: nil, topicId: id,
                          topicAuthorizedOperations: Self.authorizedOperationsOmitted))
            }
            return response
        }
    }

    /// Who leads partitions, as Metadata reports it.
    enum Leaders {
        /// Standalone: this node, every partition, at leader epoch 0.
        case standalone(Int32)
        /// A data node: the ring's placement under its image.
        case ring(PartitionPlacement)
    }

    static func describe(
        _ topic: TopicMetadata,
        leaders: Leaders,
        replicas: ReplicaManager
    ) -> MetadataResponse.MetadataResponseTopic {
        var result = MetadataResponse.MetadataResponseTopic()
        result.name = topic.name
        result.topicId = topic.id
        // Kafka's internal topics; other names starting with "__" are ordinary topics.
        result.isInternal = topic.name == "__consumer_offsets" || topic.name == "__transaction_state"
        result.topicAuthorizedOperations = Self.authorizedOperationsOmitted
        result.partitions = (0..<topic.partitionCount).map { index in
            let (leader, epoch): (Int32, Int32)
            switch leaders {
            case .standalone(let me):
                (leader, epoch) = (me, 0)
            case .ring(let placement):
                switch placement.leader(of: topic, partition: index) {
                case .node(let node):
                    (leader, epoch) = (node.rawValue, placement.leaderEpoch(of: topic, partition: index))
                case .offline(let fenced):
                    // Its only replica is fenced: no leader until it comes back.
                    return MetadataResponse.MetadataResponsePartition(
                        errorCode: KafkaErrorCode.leaderNotAvailable.rawValue, partitionIndex: index, leaderId: -1,
                        leaderEpoch: placement.leaderEpoch(of: topic, partition: index), replicaNodes: [fenced.rawValue], isrNodes: [],
                        offlineReplicas: [fenced.rawValue])
                case .none:
                    return MetadataResponse.MetadataResponsePartition(
                        errorCode: KafkaErrorCode.leaderNotAvailable.rawValue, partitionIndex: index, leaderId: -1, leaderEpoch: -1)
                }
            }
            if replicas.offlineReason(TopicPartition(topic.name, index)) != nil {
                // The only replica's log is unreadable: no leader, and say why.
                return MetadataResponse.MetadataResponsePartition(
                    errorCode: KafkaErrorCode.kafkaStorageError.rawValue, partitionIndex: index, leaderId: -1,
                    leaderEpoch: epoch, replicaNodes: [leader], isrNodes: [], offlineReplicas: [leader])
            }
            return MetadataResponse.MetadataResponsePartition(
                errorCode: 0, partitionIndex: index, leaderId: leader, leaderEpoch: epoch, replicaNodes: [leader],
                isrNodes: [leader], offlineReplicas: [])
        }
        return result
    }
}
