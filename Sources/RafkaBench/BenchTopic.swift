import KafkaProtocol
import NIOCore
import RafkaClient

/// The topic a run uses: its id and each partition's leader, from Metadata (created first
/// when missing).
struct BenchTopic: Sendable {
    struct Leader: Hashable, Sendable {
        var id: Int32
        var host: String
        var port: Int
    }

    let name: String
    let id: KafkaUUID
    /// Partition index → its leader when the run began.
    let leaders: [Int32: Leader]
    /// Where each partition is led now, which may change during the run.
    let routes: LeaderMap
    /// The partition indexes in order, sorted once: producers look them up for every send.
    let partitions: [Int32]

    init(name: String, id: KafkaUUID, leaders: [Int32: Leader], epochs: [Int32: Int32] = [:], bootstrap: String) {
        self.name = name
        self.id = id
        self.leaders = leaders
        self.routes = LeaderMap(bootstrap: bootstrap, topic: name, leaders: leaders, epochs: epochs)
        self.partitions = leaders.keys.sorted()
    }

    /// Looks the topic up through `bootstrap`, creating it with `settings.partitions` if the
    /// broker does not have it, and waits (up to 30 s) until every partition has a leader.
    static func resolve(_ settings: BenchSettings, create: Bool) async throws -> BenchTopic {
        let admin = try await KafkaAdminClient.connect(bootstrap: settings.bootstrap)
        defer { admin.close() }
        var created = false
        let deadline = MonotonicClock.now() + 30_000_000_000
        while true {
            var request = MetadataRequest()
            request.topics = [.init(name: settings.topic)]
            request.allowAutoTopicCreation = false
            let response = try await admin.connection.send(request)
            let brokers = Dictionary(response.brokers.map { ($0.nodeId, $0) }, uniquingKeysWith: { first, _ in first })
            if let topic = response.topics.first, topic.errorCode == 0, !topic.partitions.isEmpty {
                var leaders: [Int32: Leader] = [:]
                var epochs: [Int32: Int32] = [:]
                for partition in topic.partitions where partition.errorCode == 0 {
                    guard let broker = brokers[partition.leaderId] else { continue }
                    leaders[partition.partitionIndex] = Leader(id: broker.nodeId, host: broker.host, port: Int(broker.port))
                    epochs[partition.partitionIndex] = partition.leaderEpoch
                }
                if leaders.count == topic.partitions.count {
                    return BenchTopic(
                        name: settings.topic, id: topic.topicId, leaders: leaders, epochs: epochs, bootstrap: settings.bootstrap)
                }
            } else if let topic = response.topics.first, topic.errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue, !created {
                guard create else { throw KafkaClientError("topic \(settings.topic) does not exist") }
                do {
                    _ = try await admin.createTopic(
                        name: settings.topic, partitions: settings.partitions, replicationFactor: settings.replicationFactor)
                } catch let error as KafkaAdminError where error.code == .topicAlreadyExists {
                    // Another run created it meanwhile.
                }
                created = true
            }
            guard MonotonicClock.now() < deadline else {
                throw KafkaClientError("topic \(settings.topic) has partitions without a leader after 30 s")
            }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
    }

    /// One connection per leader the partitions in `subset` have.
    func connect(_ subset: [Int32], clientID: String) async throws -> [Leader: KafkaConnection] {
        var connections: [Leader: KafkaConnection] = [:]
        for partition in subset {
            let leader = self.leaders[partition]!
            if connections[leader] == nil {
                connections[leader] = try await KafkaConnection.connect(host: leader.host, port: leader.port, clientID: clientID)
            }
        }
        return connections
    }
}
