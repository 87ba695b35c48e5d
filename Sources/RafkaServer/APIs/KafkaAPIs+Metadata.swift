import HashTreeCollections
import KafkaProtocol
import NIOCore
import RafkaCore
import RafkaStorage

extension KafkaAPIs {
    /// Metadata v0–12: brokers (this node), the cluster id, and the requested topics with their
    /// partitions, all led by this node at leader epoch 0. Unknown topics are auto-created
    /// when the broker allows it and the client asks (v4+), and are ready when the reply leaves.
    func metadata(_ request: MetadataRequest, _ context: RequestContext) -> EventLoopFuture<MetadataResponse?> {
        let version = context.apiVersion
        let allTopics = request.topics == nil || (version == 0 && request.topics!.isEmpty)
        let allowAutoCreate = self.mayAutoCreate(clientAllows: version < 4 || request.allowAutoTopicCreation)
        let requested = request.topics ?? []
        let broker = self.broker
        let cache = self.broker.cache
        let replicas = self.broker.replicas
        let leader: Int32? = self.broker.hostsPartitions ? self.broker.config.nodeID : nil
        return self.async(on: context.eventLoop) {
            var image = cache.image
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
                image = cache.image
            }
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
                    response.topics.append(Self.describe(topic, leader: leader, replicas: replicas))
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

    /// A topic's partitions, led by `leader` (this node in standalone; none yet on a data node,
    /// which hosts no partitions until the Chord data plane).
    static func describe(
        _ topic: TopicMetadata,
        leader: Int32?,
        replicas: ReplicaManager
    ) -> MetadataResponse.MetadataResponseTopic {
        var result = MetadataResponse.MetadataResponseTopic()
        result.name = topic.name
        result.topicId = topic.id
        // Kafka's internal topics; other names starting with "__" are ordinary topics.
        result.isInternal = topic.name == "__consumer_offsets" || topic.name == "__transaction_state"
        result.topicAuthorizedOperations = Self.authorizedOperationsOmitted
        result.partitions = (0..<topic.partitionCount).map { index in
            guard let leader else {
                return MetadataResponse.MetadataResponsePartition(
                    errorCode: KafkaErrorCode.leaderNotAvailable.rawValue, partitionIndex: index, leaderId: -1, leaderEpoch: -1)
            }
            if replicas.offlineReason(TopicPartition(topic.name, index)) != nil {
                // The only replica's log is unreadable: no leader, and say why.
                return MetadataResponse.MetadataResponsePartition(
                    errorCode: KafkaErrorCode.kafkaStorageError.rawValue, partitionIndex: index, leaderId: -1,
                    leaderEpoch: 0, replicaNodes: [leader], isrNodes: [], offlineReplicas: [leader])
            }
            return MetadataResponse.MetadataResponsePartition(
                errorCode: 0, partitionIndex: index, leaderId: leader, leaderEpoch: 0, replicaNodes: [leader],
                isrNodes: [leader], offlineReplicas: [])
        }
        return result
    }
}
