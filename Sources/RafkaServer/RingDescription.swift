import HashTreeCollections
import ChordCore
import KafkaProtocol
import RafkaCore
import RafkaStorage

extension DescribeRingResponse {
    /// The ring `image` holds: every registered data node with its tokens (fenced and leaving
    /// ones too) and the partitions `placement` gives it to lead.
    init(image: MetadataImage, placement: PartitionPlacement, answeredBy: Int32) {
        var leading: [NodeID: Int32] = [:]
        var partitions: Int32 = 0
        for topic in image.topics.values {
            for partition in 0..<topic.partitionCount {
                partitions += 1
                if case .node(let leader) = placement.leader(of: topic, partition: partition) { leading[leader, default: 0] += 1 }
            }
        }
        self.init(
            ringEpoch: image.ringEpoch, metadataOffset: Int64(image.offset.rawValue), answeredBy: answeredBy,
            nodes: image.nodes.values.sorted { $0.id < $1.id }.map { node in
                .init(
                    id: node.id.rawValue, host: node.host, port: node.port, rack: node.rack, fenced: node.fenced, leaving: node.leaving,
                    joining: node.joining,
                    tokens: node.tokens.map(\.rawValue), leaderPartitions: leading[node.id] ?? 0)
            })
        self.partitions = partitions
    }
}
