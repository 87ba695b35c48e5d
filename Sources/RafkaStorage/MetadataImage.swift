public import ChordCore
public import HashTreeCollections
import KafkaProtocol
import NIOCore
import RaftCore
import RafkaCore

/// The cluster metadata every node serves from: cluster id, controller voters, data-node
/// registrations, ring epoch, topics with their configurations, and the producer-id allocator.
///
/// A value type produced by applying `MetadataChange`s in metadata-log order; `offset` is the
/// log index of the last change applied, so every view of the metadata says how new it is.
/// Topics live in persistent hash tries: a changed copy shares all but the changed path with
/// the original, so readers may hold images while the next change is applied, at any topic count.
public struct MetadataImage: Sendable, Equatable {
    public var clusterID: String
    /// The metadata-log index this image reflects.
    public var offset: LogIndex
    public private(set) var topics: TreeDictionary<String, TopicMetadata>
    /// Topic names by topic id (Fetch v13+ and Metadata v10+ name topics by id).
    private var topicNamesByID: TreeDictionary<KafkaUUID, String>
    /// The next producer id InitProducerId hands out.
    public var nextProducerID: Int64
    /// The controller quorum's voters (mirrors Raft's configuration entries).
    public var controllers: [NodeID]
    /// Where controllers added after the cluster started listen (the initial voters' addresses
    /// come from each process's `--voters`).
    public var controllerEndpoints: [NodeID: Endpoint]
    public var nodes: [NodeID: NodeRegistration]
    /// Bumped whenever ring membership changes (used by the data plane).
    public var ringEpoch: Int64
    /// Each partition's leader epoch: the ring epoch at which its leadership last changed. nil
    /// until the metadata log's `trackLeaderEpochs` entry (a cluster begun by a version without
    /// it): every partition's epoch is then the ring epoch, as those versions reported it.
    public internal(set) var leaderEpochs: LeaderEpochMap?

    public init(
        clusterID: String, offset: LogIndex = .zero, topics: [TopicMetadata] = [], nextProducerID: Int64 = 0,
        controllers: [NodeID] = [], controllerEndpoints: [NodeID: Endpoint] = [:], nodes: [NodeID: NodeRegistration] = [:],
        ringEpoch: Int64 = 0, leaderEpochs: LeaderEpochMap? = nil
    ) {
        self.controllerEndpoints = controllerEndpoints
        self.clusterID = clusterID
        self.offset = offset
        self.topics = [:]
        self.topicNamesByID = [:]
        self.nextProducerID = nextProducerID
        self.controllers = controllers
        self.nodes = nodes
        self.ringEpoch = ringEpoch
        self.leaderEpochs = leaderEpochs
        for topic in topics { self.setTopic(topic) }
    }

    public func topic(named name: String) -> TopicMetadata? { self.topics[name] }

    public func topic(id: KafkaUUID) -> TopicMetadata? {
        self.topicNamesByID[id].flatMap { self.topics[$0] }
    }

    /// Adds `topic`, or replaces the topic of that name.
    public mutating func setTopic(_ topic: TopicMetadata) {
        if let old = self.topics.updateValue(topic, forKey: topic.name), old.id != topic.id {
            self.topicNamesByID[old.id] = nil
        }
        self.topicNamesByID[topic.id] = topic.name
    }

    public mutating func removeTopic(named name: String) {
        if let old = self.topics.removeValue(forKey: name) { self.topicNamesByID[old.id] = nil }
    }

    /// Changes the topic named `name` in place, if it exists (not its name or id).
    public mutating func updateTopic(named name: String, _ body: (inout TopicMetadata) -> Void) {
        guard var topic = self.topics[name] else { return }
        body(&topic)
        precondition(topic.name == name, "a topic's name does not change")
        self.topics[name] = topic
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

/// A host and port.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int32

    public init(host: String, port: Int32) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(self.host):\(self.port)" }
}

/// A data node as registered with the controllers.
public struct NodeRegistration: Sendable, Equatable {
    public var id: NodeID
    public var host: String
    public var port: Int32
    public var rack: String?
    /// Assigned at registration (the metadata offset of the registration): a restarted node
    /// gets a new one, and a fenced incarnation can neither lead nor acknowledge writes.
    public var incarnation: Int64
    public var fenced: Bool
    /// The node asked to leave (a controlled shutdown): its partitions pass to the next nodes
    /// clockwise, which copy them from it while it still runs. A new registration clears it.
    public var leaving: Bool
    /// A new node still copying the partitions it will lead from their current leaders: not
    /// placed yet. The controllers activate it when it says it has caught up.
    public var joining: Bool
    /// The node's ring tokens, chosen by the controller leader (`TokenAllocator`) at its first
    /// registration and kept across restarts, so its partitions stay where they are.
    public var tokens: [RingPosition]

    public init(
        id: NodeID, host: String, port: Int32, rack: String?, incarnation: Int64, fenced: Bool, tokens: [RingPosition] = [],
        leaving: Bool = false, joining: Bool = false
    ) {
        self.leaving = leaving
        self.joining = joining
        self.id = id
        self.host = host
        self.port = port
        self.rack = rack
        self.incarnation = incarnation
        self.fenced = fenced
        self.tokens = tokens
    }
}

extension NodeRegistration {
    /// Part of the placement: neither joining nor leaving.
    public var isPlaced: Bool { !self.joining && !self.leaving }
}

extension MetadataImage {
    /// The ring of data nodes that serve: registered, placed (neither joining nor leaving) and
    /// not fenced, with tokens.
    public var ring: RingMap { self.ring(including: { !$0.fenced && $0.isPlaced }) }

    /// The nodes whose partitions they lead stay theirs: every placed node (a fenced node keeps
    /// its place until it comes back).
    public var placementRing: RingMap { self.ring(including: { $0.isPlaced }) }

    /// The nodes that run as far as the controllers know: not fenced (leaving ones included,
    /// which hand their copies over).
    public var runningRing: RingMap { self.ring(including: { !$0.fenced }) }

    /// Every registered node's tokens, fenced or not: what a new node's tokens are carved from
    /// (a fenced node keeps its place for when it comes back).
    public var allTokens: RingMap { self.ring(including: { _ in true }) }

    private func ring(including: (NodeRegistration) -> Bool) -> RingMap {
        var tokens: [NodeID: [RingPosition]] = [:]
        var racks: [NodeID: String] = [:]
        for node in self.nodes.values where including(node) && !node.tokens.isEmpty {
            tokens[node.id] = node.tokens
            if let rack = node.rack { racks[node.id] = rack }
        }
        return RingMap(tokens: tokens, racks: racks)
    }
}

/// One change to the metadata image: the commands of the metadata log.
public enum MetadataChange: Sendable, Equatable {
    /// The first entry of a new cluster.
    case bootstrap(clusterID: String)
    case createTopic(TopicMetadata)
    case deleteTopic(name: String)
    case setPartitionCount(topic: String, count: Int32)
    case setTopicConfigs(topic: String, configs: [String: String])
    /// Reserves producer ids below `next` (allocated in blocks so that InitProducerId rarely writes).
    case reserveProducerIDs(next: Int64)
    case registerNode(NodeRegistration)
    /// The node missed its heartbeats: its incarnation is fenced.
    case fenceNode(id: NodeID, incarnation: Int64)
    case unfenceNode(id: NodeID, incarnation: Int64)
    /// The node's incarnation asked to leave the ring (controlled shutdown).
    case nodeLeaving(id: NodeID, incarnation: Int64)
    /// The joining node's incarnation has copied what it will lead: it is placed.
    case activateNode(id: NodeID, incarnation: Int64)
    case unregisterNode(id: NodeID)
    /// Records where a controller listens, before it is added as a voter.
    case registerController(id: NodeID, endpoint: Endpoint)
    /// From here on, each partition keeps its own leader epoch (`LeaderEpochMap`), starting at
    /// the ring epoch: no epoch falls below one reported or stamped before. Proposed by a
    /// controller leader whose image does not track them yet (a new cluster, or one begun by an
    /// older version), so every image replayed or restored agrees on where tracking began;
    /// older versions skip the entry.
    case trackLeaderEpochs

    /// Applies the change (validated before it was proposed) to `image` at log `offset`.
    public func apply(to image: inout MetadataImage, at offset: LogIndex) {
        image.offset = offset
        let before = self.changesMembership && image.leaderEpochs != nil ? image : nil
        defer {
            if let before, var epochs = before.leaderEpochs, image.ringEpoch != before.ringEpoch {
                let tokens = image.nodes.values.reduce(0) { $0 + $1.tokens.count }
                epochs.recordChanges(from: before, to: image, epoch: image.ringEpoch, arcsMax: max(Limits.leaderEpochArcsMin, 4 * tokens))
                image.leaderEpochs = epochs
            }
        }
        switch self {
        case .bootstrap(let clusterID):
            if image.clusterID.isEmpty { image.clusterID = clusterID }
        case .createTopic(let topic):
            image.setTopic(topic)
        case .deleteTopic(let name):
            image.removeTopic(named: name)
        case .setPartitionCount(let topic, let count):
            image.updateTopic(named: topic) { $0.partitionCount = count }
        case .setTopicConfigs(let topic, let configs):
            image.updateTopic(named: topic) { $0.configs = configs }
        case .reserveProducerIDs(let next):
            image.nextProducerID = max(image.nextProducerID, next)
        case .registerNode(let registration):
            image.nodes[registration.id] = registration
            image.ringEpoch += 1
        case .fenceNode(let id, let incarnation):
            if image.nodes[id]?.incarnation == incarnation, image.nodes[id]?.fenced == false {
                image.nodes[id]?.fenced = true
                image.ringEpoch += 1
            }
        case .unfenceNode(let id, let incarnation):
            if image.nodes[id]?.incarnation == incarnation, image.nodes[id]?.fenced == true {
                image.nodes[id]?.fenced = false
                image.ringEpoch += 1
            }
        case .nodeLeaving(let id, let incarnation):
            if image.nodes[id]?.incarnation == incarnation, image.nodes[id]?.leaving == false {
                image.nodes[id]?.leaving = true
                image.ringEpoch += 1
            }
        case .activateNode(let id, let incarnation):
            if image.nodes[id]?.incarnation == incarnation, image.nodes[id]?.joining == true {
                image.nodes[id]?.joining = false
                image.ringEpoch += 1
            }
        case .unregisterNode(let id):
            if image.nodes.removeValue(forKey: id) != nil { image.ringEpoch += 1 }
        case .registerController(let id, let endpoint):
            image.controllerEndpoints[id] = endpoint
        case .trackLeaderEpochs:
            if image.leaderEpochs == nil { image.leaderEpochs = LeaderEpochMap(uniform: image.ringEpoch) }
        }
    }

    /// Whether the change may move ring membership (and with it partition leaders).
    private var changesMembership: Bool {
        switch self {
        case .registerNode, .fenceNode, .unfenceNode, .nodeLeaving, .activateNode, .unregisterNode: true
        case .bootstrap, .createTopic, .deleteTopic, .setPartitionCount, .setTopicConfigs, .reserveProducerIDs, .registerController,
            .trackLeaderEpochs:
            false
        }
    }
}

// MARK: Encoding

extension MetadataChange {
    private enum Kind: UInt8 {
        case bootstrap = 1, createTopic, deleteTopic, setPartitionCount, setTopicConfigs, reserveProducerIDs
        case registerNode, fenceNode, unfenceNode, unregisterNode, registerController, nodeLeaving, activateNode
        case trackLeaderEpochs
    }

    /// The bytes of a metadata-log entry: a format version, a kind, then the fields.
    public func encoded() -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(1))
        switch self {
        case .bootstrap(let clusterID):
            buffer.writeInteger(Kind.bootstrap.rawValue)
            buffer.writeKafkaString(clusterID, compact: true)
        case .createTopic(let topic):
            buffer.writeInteger(Kind.createTopic.rawValue)
            buffer.writeKafkaString(topic.name, compact: true)
            buffer.writeKafkaUUID(topic.id)
            buffer.writeKafkaInt32(topic.partitionCount)
            buffer.writeKafkaInt16(topic.replicationFactor)
            Self.write(topic.configs, into: &buffer)
        case .deleteTopic(let name):
            buffer.writeInteger(Kind.deleteTopic.rawValue)
            buffer.writeKafkaString(name, compact: true)
        case .setPartitionCount(let topic, let count):
            buffer.writeInteger(Kind.setPartitionCount.rawValue)
            buffer.writeKafkaString(topic, compact: true)
            buffer.writeKafkaInt32(count)
        case .setTopicConfigs(let topic, let configs):
            buffer.writeInteger(Kind.setTopicConfigs.rawValue)
            buffer.writeKafkaString(topic, compact: true)
            Self.write(configs, into: &buffer)
        case .reserveProducerIDs(let next):
            buffer.writeInteger(Kind.reserveProducerIDs.rawValue)
            buffer.writeKafkaInt64(next)
        case .registerNode(let node):
            buffer.writeInteger(Kind.registerNode.rawValue)
            buffer.writeKafkaInt32(node.id.rawValue)
            buffer.writeKafkaString(node.host, compact: true)
            buffer.writeKafkaInt32(node.port)
            buffer.writeKafkaNullableString(node.rack, compact: true)
            buffer.writeKafkaInt64(node.incarnation)
            buffer.writeKafkaBool(node.fenced)
            buffer.writeKafkaArrayCount(node.tokens.count, compact: true)
            for token in node.tokens { buffer.writeInteger(token.rawValue) }
            buffer.writeKafkaBool(node.joining)
        case .fenceNode(let id, let incarnation), .unfenceNode(let id, let incarnation):
            buffer.writeInteger(self.isFence ? Kind.fenceNode.rawValue : Kind.unfenceNode.rawValue)
            buffer.writeKafkaInt32(id.rawValue)
            buffer.writeKafkaInt64(incarnation)
        case .activateNode(let id, let incarnation):
            buffer.writeInteger(Kind.activateNode.rawValue)
            buffer.writeKafkaInt32(id.rawValue)
            buffer.writeKafkaInt64(incarnation)
        case .nodeLeaving(let id, let incarnation):
            buffer.writeInteger(Kind.nodeLeaving.rawValue)
            buffer.writeKafkaInt32(id.rawValue)
            buffer.writeKafkaInt64(incarnation)
        case .unregisterNode(let id):
            buffer.writeInteger(Kind.unregisterNode.rawValue)
            buffer.writeKafkaInt32(id.rawValue)
        case .registerController(let id, let endpoint):
            buffer.writeInteger(Kind.registerController.rawValue)
            buffer.writeKafkaInt32(id.rawValue)
            buffer.writeKafkaString(endpoint.host, compact: true)
            buffer.writeKafkaInt32(endpoint.port)
        case .trackLeaderEpochs:
            buffer.writeInteger(Kind.trackLeaderEpochs.rawValue)
        }
        return Array(buffer.readableBytesView)
    }

    private var isFence: Bool {
        if case .fenceNode = self { return true }
        return false
    }

    private static func write(_ configs: [String: String], into buffer: inout ByteBuffer) {
        buffer.writeKafkaArrayCount(configs.count, compact: true)
        for (key, value) in configs.sorted(by: { $0.key < $1.key }) {
            buffer.writeKafkaString(key, compact: true)
            buffer.writeKafkaString(value, compact: true)
        }
    }

    private static func readConfigs(_ buffer: inout ByteBuffer) throws(KafkaDecodingError) -> [String: String] {
        guard let count = try buffer.readKafkaArrayCount(compact: true) else { return [:] }
        var configs: [String: String] = [:]
        for _ in 0..<count {
            configs[try buffer.readKafkaString(compact: true)] = try buffer.readKafkaString(compact: true)
        }
        return configs
    }

    /// Decodes a metadata-log entry; throws for bytes this version does not understand.
    public init(encoded bytes: [UInt8]) throws(KafkaDecodingError) {
        var buffer = ByteBuffer(bytes: bytes)
        guard try buffer.readKafkaInt8() == 1 else { throw KafkaDecodingError(.unsupportedVersion, "metadata change") }
        guard let kind = Kind(rawValue: UInt8(bitPattern: try buffer.readKafkaInt8())) else {
            throw KafkaDecodingError(.unknownAPIKey, "metadata change kind")
        }
        switch kind {
        case .bootstrap:
            self = .bootstrap(clusterID: try buffer.readKafkaString(compact: true))
        case .createTopic:
            let name = try buffer.readKafkaString(compact: true)
            let id = try buffer.readKafkaUUID()
            let partitions = try buffer.readKafkaInt32()
            let factor = try buffer.readKafkaInt16()
            self = .createTopic(
                TopicMetadata(name: name, id: id, partitionCount: partitions, replicationFactor: factor, configs: try Self.readConfigs(&buffer)))
        case .deleteTopic:
            self = .deleteTopic(name: try buffer.readKafkaString(compact: true))
        case .setPartitionCount:
            self = .setPartitionCount(topic: try buffer.readKafkaString(compact: true), count: try buffer.readKafkaInt32())
        case .setTopicConfigs:
            self = .setTopicConfigs(topic: try buffer.readKafkaString(compact: true), configs: try Self.readConfigs(&buffer))
        case .reserveProducerIDs:
            self = .reserveProducerIDs(next: try buffer.readKafkaInt64())
        case .registerNode:
            let id = NodeID(try buffer.readKafkaInt32())
            let host = try buffer.readKafkaString(compact: true)
            let port = try buffer.readKafkaInt32()
            let rack = try buffer.readKafkaNullableString(compact: true)
            let incarnation = try buffer.readKafkaInt64()
            let fenced = try buffer.readKafkaBool()
            let count = try buffer.readKafkaArrayCount(compact: true) ?? 0
            guard count <= Limits.ringTokensPerNodeMax, buffer.readableBytes >= count * 8 else {
                throw KafkaDecodingError(.lengthExceedsBuffer, "node registration with \(count) tokens")
            }
            let tokens = (0..<count).map { _ in RingPosition(buffer.readInteger(as: UInt64.self)!) }
            let joining = try buffer.readKafkaBool()
            self = .registerNode(
                NodeRegistration(
                    id: id, host: host, port: port, rack: rack, incarnation: incarnation, fenced: fenced, tokens: tokens, joining: joining))
        case .fenceNode:
            self = .fenceNode(id: NodeID(try buffer.readKafkaInt32()), incarnation: try buffer.readKafkaInt64())
        case .unfenceNode:
            self = .unfenceNode(id: NodeID(try buffer.readKafkaInt32()), incarnation: try buffer.readKafkaInt64())
        case .activateNode:
            self = .activateNode(id: NodeID(try buffer.readKafkaInt32()), incarnation: try buffer.readKafkaInt64())
        case .nodeLeaving:
            self = .nodeLeaving(id: NodeID(try buffer.readKafkaInt32()), incarnation: try buffer.readKafkaInt64())
        case .unregisterNode:
            self = .unregisterNode(id: NodeID(try buffer.readKafkaInt32()))
        case .registerController:
            let id = NodeID(try buffer.readKafkaInt32())
            self = .registerController(
                id: id, endpoint: Endpoint(host: try buffer.readKafkaString(compact: true), port: try buffer.readKafkaInt32()))
        case .trackLeaderEpochs:
            self = .trackLeaderEpochs
        }
    }
}

extension MetadataImage {
    /// Applies one committed metadata-log entry: the same on every controller and data node.
    /// An entry this version cannot read only advances the offset (every reader skips it alike).
    public mutating func apply(_ entry: RaftEntry) -> KafkaDecodingError? {
        switch entry.payload {
        case .noop:
            self.offset = entry.index
        case .configuration(let configuration):
            self.controllers = configuration.voters
            self.offset = entry.index
        case .command(let bytes):
            do {
                try MetadataChange(encoded: bytes).apply(to: &self, at: entry.index)
            } catch {
                self.offset = entry.index
                return error
            }
        }
        return nil
    }
}
