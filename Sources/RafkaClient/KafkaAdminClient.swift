import KafkaProtocol
import NIOCore

/// Topic and cluster administration against any Kafka-compatible broker (what `rafka-admin`
/// uses). Each call is one request; errors carry Kafka's code and message.
public final class KafkaAdminClient: Sendable {
    public let connection: KafkaConnection

    public init(connection: KafkaConnection) {
        self.connection = connection
    }

    /// Connects to the first address of `bootstrap` (`host:port[,host:port…]`) that connects and
    /// negotiates versions within `connectTimeout`.
    public static func connect(bootstrap: String, connectTimeout: TimeAmount = .seconds(10)) async throws -> KafkaAdminClient {
        var lastError: (any Error)?
        for address in bootstrap.split(separator: ",") {
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
                throw KafkaClientError("bootstrap address \(address) is not HOST:PORT")
            }
            do {
                let host = String(address[..<colon]).trimmingCharacters(in: "[]")
                return KafkaAdminClient(
                    connection: try await KafkaConnection.connect(
                        host: host, port: port, clientID: "rafka-admin", connectTimeout: connectTimeout))
            } catch {
                lastError = error
            }
        }
        throw KafkaClientError("cannot connect to \(bootstrap): \(lastError.map { "\($0)" } ?? "no address")")
    }

    public func close() { self.connection.close() }

    private static func check(_ code: Int16, _ message: String?, _ what: String) throws {
        guard code == 0 else { throw KafkaAdminError(code: KafkaErrorCode(rawValue: code), message: message, subject: what) }
    }

    // MARK: Topics

    public func createTopic(
        name: String,
        partitions: Int32 = -1,
        replicationFactor: Int16 = -1,
        configs: [String: String] = [:],
        validateOnly: Bool = false
    ) async throws -> TopicSummary {
        var request = CreateTopicsRequest()
        request.timeoutMs = 30_000
        request.validateOnly = validateOnly
        request.topics = [
            .init(
                name: name, numPartitions: partitions, replicationFactor: replicationFactor,
                configs: configs.sorted { $0.key < $1.key }.map { .init(name: $0.key, value: $0.value) })
        ]
        let response = try await self.onController { try await $0.send(request) } failed: { $0.topics.first?.errorCode }
        guard let result = response.topics.first else { throw KafkaClientError("empty CreateTopics response") }
        try Self.check(result.errorCode, result.errorMessage, "topic '\(name)'")
        return TopicSummary(name: name, id: result.topicId.description, partitions: result.numPartitions, replicationFactor: result.replicationFactor)
    }

    /// Every topic with its partition count.
    public func listTopics() async throws -> [TopicSummary] {
        let response = try await self.connection.send(MetadataRequest(topics: nil, allowAutoTopicCreation: false))
        return response.topics.compactMap { topic in
            guard topic.errorCode == 0, let name = topic.name else { return nil }
            return TopicSummary(
                name: name, id: topic.topicId.description, partitions: Int32(topic.partitions.count),
                replicationFactor: Int16(topic.partitions.first?.replicaNodes.count ?? 0))
        }.sorted { $0.name < $1.name }
    }

    /// Partitions, leaders and configuration of each named topic.
    public func describeTopics(_ names: [String]) async throws -> [TopicDescription] {
        let metadata = try await self.connection.send(
            MetadataRequest(topics: names.map { .init(name: $0) }, allowAutoTopicCreation: false))
        var describeRequest = DescribeConfigsRequest()
        describeRequest.resources = names.map { .init(resourceType: 2, resourceName: $0, configurationKeys: nil) }
        let configs = try await self.connection.send(describeRequest)
        var descriptions: [TopicDescription] = []
        for name in names {
            guard let topic = metadata.topics.first(where: { $0.name == name }) else {
                throw KafkaAdminError(code: .unknownTopicOrPartition, message: nil, subject: "topic '\(name)'")
            }
            try Self.check(topic.errorCode, nil, "topic '\(name)'")
            let configResult = configs.results.first { $0.resourceName == name }
            if let configResult { try Self.check(configResult.errorCode, configResult.errorMessage, "topic '\(name)'") }
            descriptions.append(
                TopicDescription(
                    name: name, id: topic.topicId.description, isInternal: topic.isInternal,
                    partitions: topic.partitions.sorted { $0.partitionIndex < $1.partitionIndex }.map {
                        .init(partition: $0.partitionIndex, leader: $0.leaderId, leaderEpoch: $0.leaderEpoch, replicas: $0.replicaNodes, isr: $0.isrNodes)
                    },
                    configs: (configResult?.configs ?? []).map {
                        .init(name: $0.name, value: $0.value, source: ConfigEntry.sourceName($0.configSource), isDefault: $0.configSource == 5)
                    }))
        }
        return descriptions
    }

    public func deleteTopic(_ name: String) async throws {
        let version = try self.connection.version(for: DeleteTopicsRequest.self)
        var request = DeleteTopicsRequest()
        request.timeoutMs = 30_000
        if version >= 6 {
            request.topics = [.init(name: name, topicId: .zero)]
        } else {
            request.topicNames = [name]
        }
        let response = try await self.onController { try await $0.send(request, version: version) } failed: { $0.responses.first?.errorCode }
        guard let result = response.responses.first else { throw KafkaClientError("empty DeleteTopics response") }
        try Self.check(result.errorCode, result.errorMessage, "topic '\(name)'")
    }

    /// Sets and removes topic configuration keys (IncrementalAlterConfigs, KIP-339).
    public func alterTopicConfig(_ name: String, set: [String: String], delete: [String]) async throws {
        var request = IncrementalAlterConfigsRequest()
        var configs = set.sorted { $0.key < $1.key }.map {
            IncrementalAlterConfigsRequest.AlterableConfig(name: $0.key, configOperation: 0, value: $0.value)
        }
        configs += delete.map { .init(name: $0, configOperation: 1, value: nil) }
        request.resources = [.init(resourceType: 2, resourceName: name, configs: configs)]
        let response = try await self.onController { try await $0.send(request) } failed: { $0.responses.first?.errorCode }
        guard let result = response.responses.first else { throw KafkaClientError("empty IncrementalAlterConfigs response") }
        try Self.check(result.errorCode, result.errorMessage, "topic '\(name)'")
    }

    /// Raises the topic's partition count to `count`.
    public func createPartitions(_ name: String, count: Int32) async throws {
        var request = CreatePartitionsRequest()
        request.timeoutMs = 30_000
        request.topics = [.init(name: name, count: count, assignments: nil)]
        let response = try await self.onController { try await $0.send(request) } failed: { $0.results.first?.errorCode }
        guard let result = response.results.first else { throw KafkaClientError("empty CreatePartitions response") }
        try Self.check(result.errorCode, result.errorMessage, "topic '\(name)'")
    }

    /// Runs a metadata change where it can be made: on the server asked, or — when that answers
    /// NOT_CONTROLLER (a controller that is not the leader, or during an election) — on the
    /// quorum leader, retried for up to ten seconds while a leader is being elected.
    private func onController<Response>(
        _ body: (KafkaConnection) async throws -> Response,
        failed errorCode: (Response) -> Int16?
    ) async throws -> Response {
        let first = try await body(self.connection)
        guard errorCode(first) == KafkaErrorCode.notController.rawValue, self.connection.supports(DescribeQuorumRequest.self) else {
            return first
        }
        var last = first
        for _ in 0..<40 {
            if let leader = try? await self.leaderConnection() {
                let answer = try await body(leader)
                if leader !== self.connection { leader.close() }
                if errorCode(answer) != KafkaErrorCode.notController.rawValue { return answer }
                last = answer
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        return last
    }

    // MARK: Cluster

    public func describeCluster() async throws -> ClusterDescription {
        let response = try await self.connection.send(DescribeClusterRequest())
        try Self.check(response.errorCode, response.errorMessage, "cluster")
        return ClusterDescription(
            clusterID: response.clusterId, controllerID: response.controllerId,
            brokers: response.brokers.map { .init(id: $0.brokerId, host: $0.host, port: $0.port, rack: $0.rack) })
    }
}

/// A broker answered with a Kafka error.
public struct KafkaAdminError: Error, Sendable, CustomStringConvertible {
    public var code: KafkaErrorCode
    public var message: String?
    public var subject: String

    public var description: String {
        let detail = self.message.flatMap { $0.isEmpty ? nil : $0 } ?? self.code.message
        return "\(self.subject): \(detail) (\(self.code.name))"
    }
}

public struct TopicSummary: Sendable, Codable, Equatable {
    public var name: String
    public var id: String
    public var partitions: Int32
    public var replicationFactor: Int16
}

public struct TopicDescription: Sendable, Codable, Equatable {
    public var name: String
    public var id: String
    public var isInternal: Bool
    public var partitions: [PartitionDescription]
    public var configs: [ConfigEntry]
}

public struct PartitionDescription: Sendable, Codable, Equatable {
    public var partition: Int32
    public var leader: Int32
    /// The leader's epoch: on a Rafka data node, the ring epoch at which the partition last moved.
    public var leaderEpoch: Int32
    public var replicas: [Int32]
    public var isr: [Int32]
}

public struct ConfigEntry: Sendable, Codable, Equatable {
    public var name: String
    public var value: String?
    public var source: String
    public var isDefault: Bool

    static func sourceName(_ source: Int8) -> String {
        switch source {
        case 1: "topic"
        case 2: "dynamic-broker"
        case 3: "dynamic-default-broker"
        case 4: "static-broker"
        case 5: "default"
        case 6: "dynamic-broker-logger"
        default: "unknown"
        }
    }
}

public struct ClusterDescription: Sendable, Codable, Equatable {
    public var clusterID: String
    public var controllerID: Int32
    public var brokers: [Broker]

    public struct Broker: Sendable, Codable, Equatable {
        public var id: Int32
        public var host: String
        public var port: Int32
        public var rack: String?
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var result = Substring(self)
        while let first = result.first, set.contains(first) { result = result.dropFirst() }
        while let last = result.last, set.contains(last) { result = result.dropLast() }
        return String(result)
    }
}
