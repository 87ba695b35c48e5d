import KafkaProtocol
import NIOCore
import RafkaStorage

extension AdminAPIs {
    /// CreateTopics v2–7. Topics are created one by one; each gets its own error code.
    func createTopics(_ request: CreateTopicsRequest, _ context: RequestContext) -> EventLoopFuture<CreateTopicsResponse?> {
        let metadata = self.metadata
        let nodeID = self.config.nodeID
        let topicDefaults = self.config.topicDefaults
        return context.eventLoop.makeFutureWithTask {
            var response = CreateTopicsResponse()
            var seen: Set<String> = []
            for topic in request.topics {
                var result = CreateTopicsResponse.CreatableTopicResult()
                result.name = topic.name
                do throws(BrokerError) {
                    guard seen.insert(topic.name).inserted else {
                        throw BrokerError(.invalidRequest, "Create topics request from client contains a duplicate topic.")
                    }
                    var partitions = topic.numPartitions
                    if !topic.assignments.isEmpty {
                        guard topic.numPartitions == -1 && topic.replicationFactor == -1 else {
                            throw BrokerError(
                                .invalidRequest,
                                "Both numPartitions or replicationFactor and replicasAssignments were set.")
                        }
                        let indexes = Set(topic.assignments.map(\.partitionIndex))
                        guard topic.assignments.allSatisfy({ $0.brokerIds == [nodeID] }),
                            indexes == Set(0..<Int32(topic.assignments.count))
                        else {
                            throw BrokerError(.invalidReplicaAssignment, "Replicas may only be assigned to broker \(nodeID).")
                        }
                        partitions = Int32(topic.assignments.count)
                    }
                    var configs: [String: String] = [:]
                    for config in topic.configs {
                        guard let value = config.value else {
                            throw BrokerError(.invalidConfig, "Null value not supported for topic configs: \(config.name)")
                        }
                        configs[config.name] = value
                    }
                    let created = try await metadata.createTopic(
                        name: topic.name, partitions: partitions,
                        replicationFactor: topic.assignments.isEmpty ? topic.replicationFactor : 1,
                        configs: configs, validateOnly: request.validateOnly)
                    result.topicId = created.id
                    result.numPartitions = created.partitionCount
                    result.replicationFactor = created.replicationFactor
                    result.configs = Self.describedConfigs(created.configs, defaults: topicDefaults).map {
                        .init(name: $0.name, value: $0.value, readOnly: false, configSource: $0.source, isSensitive: false)
                    }
                } catch {
                    result.errorCode = error.code.rawValue
                    result.errorMessage = error.message
                    result.numPartitions = -1
                    result.replicationFactor = -1
                    result.topicConfigErrorCode = error.code == .invalidConfig ? error.code.rawValue : 0
                }
                response.topics.append(result)
            }
            return response
        }
    }

    /// DeleteTopics v1–6 (by name, or by topic id from v6).
    func deleteTopics(_ request: DeleteTopicsRequest, _ context: RequestContext) -> EventLoopFuture<DeleteTopicsResponse?> {
        let metadata = self.metadata
        let currentImage = self.currentImage
        let byState = context.apiVersion >= 6
        return context.eventLoop.makeFutureWithTask {
            var response = DeleteTopicsResponse()
            let targets: [(name: String?, id: KafkaUUID)] =
                byState ? request.topics.map { ($0.name, $0.topicId) } : request.topicNames.map { ($0, .zero) }
            for target in targets {
                var result = DeleteTopicsResponse.DeletableTopicResult()
                result.name = target.name
                result.topicId = target.id
                do throws(BrokerError) {
                    let name: String
                    if let given = target.name {
                        name = given
                    } else if let found = await currentImage().topic(id: target.id) {
                        name = found.name
                    } else {
                        throw BrokerError(.unknownTopicId, "Topic id \(target.id) not found.")
                    }
                    let deleted = try await metadata.deleteTopic(name: name)
                    result.name = deleted.name
                    result.topicId = deleted.id
                } catch {
                    result.errorCode = error.code.rawValue
                    result.errorMessage = error.message
                }
                response.responses.append(result)
            }
            return response
        }
    }

    /// CreatePartitions v0–3. Manual assignments must name only this node.
    func createPartitions(_ request: CreatePartitionsRequest, _ context: RequestContext) -> EventLoopFuture<CreatePartitionsResponse?> {
        let metadata = self.metadata
        let nodeID = self.config.nodeID
        return context.eventLoop.makeFutureWithTask {
            var response = CreatePartitionsResponse()
            for topic in request.topics {
                var result = CreatePartitionsResponse.CreatePartitionsTopicResult(name: topic.name)
                do throws(BrokerError) {
                    if let assignments = topic.assignments, !assignments.allSatisfy({ $0.brokerIds == [nodeID] }) {
                        throw BrokerError(.invalidReplicaAssignment, "Replicas may only be assigned to broker \(nodeID).")
                    }
                    _ = try await metadata.createPartitions(name: topic.name, count: topic.count, validateOnly: request.validateOnly)
                } catch {
                    result.errorCode = error.code.rawValue
                    result.errorMessage = error.message
                }
                response.results.append(result)
            }
            return response
        }
    }
}
