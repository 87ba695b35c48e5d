import KafkaProtocol

/// The cluster metadata a node serves from: cluster id, topics and their configurations, and
/// the producer-id allocator. A value type; every change produces a new image.
///
/// On a single node it is persisted by `MetadataStore`; the Raft control plane will replicate
/// the same changes through its log.
public struct MetadataImage: Sendable, Equatable {
    public var clusterID: String
    public var topics: [String: TopicMetadata]
    /// The next producer id InitProducerId hands out.
    public var nextProducerID: Int64

    public init(clusterID: String, topics: [String: TopicMetadata] = [:], nextProducerID: Int64 = 0) {
        self.clusterID = clusterID
        self.topics = topics
        self.nextProducerID = nextProducerID
    }

    public func topic(id: KafkaUUID) -> TopicMetadata? {
        self.topics.values.first { $0.id == id }
    }
}

/// A topic as the metadata image knows it.
public struct TopicMetadata: Sendable, Equatable {
    public var name: String
    public var id: KafkaUUID
    public var partitionCount: Int32
    public var replicationFactor: Int16
    /// The topic's own configuration overrides (not defaults).
    public var configs: [String: String]

    public init(name: String, id: KafkaUUID, partitionCount: Int32, replicationFactor: Int16, configs: [String: String]) {
        self.name = name
        self.id = id
        self.partitionCount = partitionCount
        self.replicationFactor = replicationFactor
        self.configs = configs
    }
}

/// One change to the metadata image.
public enum MetadataChange: Sendable, Equatable {
    case createTopic(TopicMetadata)
    case deleteTopic(name: String)
    case setPartitionCount(topic: String, count: Int32)
    case setTopicConfigs(topic: String, configs: [String: String])
    /// Reserves producer ids below `next` (allocated in blocks so that InitProducerId rarely writes).
    case reserveProducerIDs(next: Int64)

    /// Applies the change to `image` (validation happened before).
    public func apply(to image: inout MetadataImage) {
        switch self {
        case .createTopic(let topic):
            image.topics[topic.name] = topic
        case .deleteTopic(let name):
            image.topics[name] = nil
        case .setPartitionCount(let topic, let count):
            image.topics[topic]?.partitionCount = count
        case .setTopicConfigs(let topic, let configs):
            image.topics[topic]?.configs = configs
        case .reserveProducerIDs(let next):
            image.nextProducerID = max(image.nextProducerID, next)
        }
    }
}
