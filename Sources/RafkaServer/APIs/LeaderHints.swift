import HashTreeCollections
import KafkaProtocol
import RafkaCore
import RafkaStorage

/// Leader discovery (KIP-951): a Produce v10+ or Fetch v16+ answer that turns a partition away
/// (NOT_LEADER_OR_FOLLOWER; fetching, FENCED_LEADER_EPOCH too) names the node that leads it now
/// by this node's image, with the leader epoch and that node's address. A client that trusts
/// the hint (its epoch is newer than the one it knew) goes there at once, instead of backing off
/// and asking Metadata where the partition went, as Kafka 3.7+ brokers let it.
///
/// This node is named only for a partition it serves (a fetch with an old epoch, FENCED_LEADER_EPOCH,
/// learns the current one), never for one it has not taken over yet; a fenced node never is;
/// standalone gives no hints: its partitions never move.
struct LeaderHints {
    private let image: MetadataImage
    private let placement: PartitionPlacement
    private let me: NodeID
    private let replicas: ReplicaManager
    /// The nodes named so far, for the answer's `NodeEndpoints`.
    private(set) var named: [NodeID: NodeRegistration] = [:]

    /// nil in standalone.
    init?(_ broker: Broker) {
        guard !broker.isStandalone else { return nil }
        (self.image, self.placement) = broker.cache.snapshot
        self.me = NodeID(broker.config.nodeID)
        self.replicas = broker.replicas
    }

    /// Whether an answer with `code` carries a hint (`fetching`: a Fetch answer).
    static func applies(to code: Int16, fetching: Bool) -> Bool {
        code == KafkaErrorCode.notLeaderOrFollower.rawValue
            || (fetching && code == KafkaErrorCode.fencedLeaderEpoch.rawValue)
    }

    /// The leader of `partition` of `topic` and its epoch, if a node serving clients leads it.
    mutating func leader(topic: String, partition: Int32) -> (id: Int32, epoch: Int32)? {
        guard let metadata = self.image.topics[topic],
            case .node(let node) = self.placement.leader(of: metadata, partition: partition),
            node != self.me || self.replicas.shell(for: TopicPartition(topic, partition)) != nil,
            let registration = self.image.nodes[node], !registration.fenced
        else {
            return nil
        }
        self.named[node] = registration
        return (node.rawValue, self.placement.leaderEpoch(of: metadata, partition: partition))
    }

    /// The named nodes in id order.
    var endpoints: [NodeRegistration] { self.named.values.sorted { $0.id < $1.id } }
}

extension ProduceResponse {
    /// Fills KIP-951's hints (v10+) for the partitions turned away.
    mutating func addLeaderHints(_ hints: LeaderHints?) {
        guard var hints else { return }
        for topic in self.responses.indices {
            let name = self.responses[topic].name
            for index in self.responses[topic].partitionResponses.indices {
                let partition = self.responses[topic].partitionResponses[index]
                guard LeaderHints.applies(to: partition.errorCode, fetching: false),
                    let leader = hints.leader(topic: name, partition: partition.index)
                else { continue }
                self.responses[topic].partitionResponses[index].currentLeader = .init(leaderId: leader.id, leaderEpoch: leader.epoch)
            }
        }
        self.nodeEndpoints = hints.endpoints.map { .init(nodeId: $0.id.rawValue, host: $0.host, port: $0.port, rack: $0.rack) }
    }
}

extension FetchResponse {
    /// Fills KIP-951's hints (v16+, as Kafka gives them) for the partitions turned away.
    mutating func addLeaderHints(_ hints: LeaderHints?) {
        guard var hints else { return }
        for topic in self.responses.indices {
            let name = self.responses[topic].topic
            for index in self.responses[topic].partitions.indices {
                let partition = self.responses[topic].partitions[index]
                guard LeaderHints.applies(to: partition.errorCode, fetching: true),
                    let leader = hints.leader(topic: name, partition: partition.partitionIndex)
                else { continue }
                self.responses[topic].partitions[index].currentLeader = .init(leaderId: leader.id, leaderEpoch: leader.epoch)
            }
        }
        self.nodeEndpoints = hints.endpoints.map { .init(nodeId: $0.id.rawValue, host: $0.host, port: $0.port, rack: $0.rack) }
    }
}
