import ChordCore
import KafkaProtocol
import RafkaCore
import RafkaStorage

extension DescribeRingResponse {
    /// The ring `image` holds: every registered data node with its tokens, fenced ones too.
    init(image: MetadataImage, answeredBy: Int32) {
        self.init(
            ringEpoch: image.ringEpoch, metadataOffset: Int64(image.offset.rawValue), answeredBy: answeredBy,
            nodes: image.nodes.values.sorted { $0.id < $1.id }.map { node in
                .init(
                    id: node.id.rawValue, host: node.host, port: node.port, rack: node.rack, fenced: node.fenced,
                    tokens: node.tokens.map(\.rawValue))
            })
    }
}
