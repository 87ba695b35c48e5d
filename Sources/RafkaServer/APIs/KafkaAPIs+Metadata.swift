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
        let metadata = self.broker.metadata
        let cache = self.broker.cache
        let endpoint = self.broker.endpoint
        let replicas = self.broker.replicas
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
                            _ = try await metadata.ensureTopic(name: name)
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
            response.brokers = [
                .init(nodeId: endpoint.nodeID, host: endpoint.host, port: endpoint.port, rack: endpoint.rack)
            ]
            response.clusterId = image.clusterID
            response.controllerId = endpoint.nodeID
            response.clusterAuthorizedOperations = Self.authorizedOperationsOmitted
            let names: [String] =
                allTopics
                ? image.topics.keys.sorted()
                : requested.compactMap { $0.name.flatMap { $0.isEmpty ? nil : $0 } ?? image.topic(id: $0.topicId)?.name }
            for name in names {
                if let error = errors[name] {
                    response.topics.append(.init(errorCode: error.code.rawValue, name: name, topicAuthorizedOperations: Self.authorizedOperationsOmitted))
                } else if let topic = image.topics[name] {
                    response.topics.append(Self.describe(topic, leader: endpoint.nodeID, replicas: replicas))
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

    static func describe(
        _ topic: TopicMetadata,
        leader: Int32,
        replicas: ReplicaManager
    ) -> MetadataResponse.MetadataResponseTopic {
        var result = MetadataResponse.MetadataResponseTopic()
        result.name = topic.name
        result.topicId = topic.id
        // Kafka's internal topics; other names starting with "__" are ordinary topics.
        result.isInternal = topic.name == "__consumer_offsets" || topic.name == "__transaction_state"
        result.topicAuthorizedOperations = Self.authorizedOperationsOmitted
        result.partitions = (0..<topic.partitionCount).map { index in
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
