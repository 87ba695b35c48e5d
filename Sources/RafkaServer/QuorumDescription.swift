import KafkaProtocol
import RafkaCore
import RafkaStorage

/// DescribeQuorum (KIP-595) answers for the metadata quorum, shared by controllers and by
/// brokers that host a quorum member (standalone).
enum QuorumDescription {
    /// `observers`: what the leader last heard from each data node (empty elsewhere).
    static func response(
        status: QuorumStatus, me: NodeID, image: MetadataImage, endpoints: [NodeID: Endpoint],
        observers: [NodeID: (appliedOffset: Int64, heardAtEpochMs: Int64)] = [:]
    ) -> DescribeQuorumResponse {
        var partition = DescribeQuorumResponse.PartitionData()
        partition.partitionIndex = 0
        partition.leaderId = status.leader?.rawValue ?? -1
        partition.leaderEpoch = Int32(truncatingIfNeeded: status.term.rawValue)
        partition.highWatermark = Int64(status.commitIndex.rawValue)
        partition.currentVoters = status.voters.map { voter in
            let end: Int64
            if voter == me {
                end = Int64(status.lastIndex.rawValue)
            } else if let match = status.matchIndexes[voter] {
                end = Int64(match.rawValue)
            } else {
                end = -1  // only the leader knows its followers' logs
            }
            return .init(replicaId: voter.rawValue, logEndOffset: end)
        }
        // Data nodes follow the metadata log without voting: Kafka's observers, each with the
        // offset it last reported applying and when (-1 when this server does not know).
        partition.observers = image.nodes.values.filter { !$0.fenced }.sorted { $0.id < $1.id }.map { node in
            let heard = observers[node.id]
            return .init(
                replicaId: node.id.rawValue, logEndOffset: heard?.appliedOffset ?? -1,
                lastFetchTimestamp: heard?.heardAtEpochMs ?? -1, lastCaughtUpTimestamp: -1)
        }
        var response = DescribeQuorumResponse()
        response.topics = [.init(topicName: "__cluster_metadata", partitions: [partition])]
        response.nodes = endpoints.sorted { $0.key < $1.key }.map { id, endpoint in
            .init(nodeId: id.rawValue, listeners: [.init(name: "CONTROLLER", host: endpoint.host, port: UInt16(clamping: endpoint.port))])
        }
        return response
    }
}
