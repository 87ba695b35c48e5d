import KafkaProtocol
import Logging
import RafkaCore
import RafkaStorage
import Synchronization

/// The current metadata image, readable from any thread without waiting for the service.
final class MetadataCache: Sendable {
    private let current: Mutex<MetadataImage>

    init(_ image: MetadataImage) {
        self.current = Mutex(image)
    }

    /// A snapshot (copy-on-write: reading is cheap, later changes do not show through).
    var image: MetadataImage { self.current.withLock { $0 } }

    func publish(_ image: MetadataImage) {
        self.current.withLock { $0 = image }
    }
}

/// The controller's metadata operations: validates each change the way Kafka's controller does,
/// proposes it to the metadata quorum, and returns once it is applied and this node's partitions
/// reflect it. One change at a time (an actor, serialized across its awaits).
///
/// In standalone the quorum is this process alone (one voter); the same path serves a
/// replicated quorum.
actor MetadataService {
    private let quorum: RaftShell
    /// This node's partitions follow the image (nil on a controller, which hosts none).
    private let reconciler: MetadataReconciler?
    private let config: BrokerConfig
    private let logger: Logger
    /// Producer ids handed out in memory below `image.nextProducerID` (the durable reservation).
    private var nextUnreservedProducerID: Int64?
    private static let producerIDBlock: Int64 = 1000
    /// Topic changes run one at a time. The actor alone does not ensure that: while a change
    /// awaits the quorum, another call may enter, and two auto-creations of one topic (or a
    /// deletion and a re-creation) would interleave.
    private var changeInProgress = false
    private var waitingChanges: [CheckedContinuation<Void, Never>] = []

    init(quorum: RaftShell, reconciler: MetadataReconciler?, config: BrokerConfig, logger: Logger) {
        self.quorum = quorum
        self.reconciler = reconciler
        self.config = config
        self.logger = logger
    }

    /// The image changes are validated against: the quorum's applied state.
    private var image: MetadataImage {
        get async { await self.quorum.image }
    }

    /// The topic if it exists, once this node's partitions reflect it (it may have been created
    /// by a concurrent call whose reconciliation is still under way).
    private func reconciledTopic(_ name: String) async -> TopicMetadata? {
        let image = await self.image
        guard let topic = image.topics[name] else { return nil }
        await self.reconciler?.waitUntilReconciled(image.offset)
        return topic
    }

    func logConfig(for overrides: [String: String]) throws(BrokerError) -> LogConfig {
        try storage { () throws(StorageError) in try LogConfig(overrides: overrides, defaults: self.config.topicDefaults) }
    }

    /// Runs `body` after every earlier topic change has finished.
    private func serialized<T>(_ body: () async throws(BrokerError) -> T) async throws(BrokerError) -> T {
        if self.changeInProgress {
            await withCheckedContinuation { self.waitingChanges.append($0) }
        }
        self.changeInProgress = true
        defer {
            if self.waitingChanges.isEmpty {
                self.changeInProgress = false
            } else {
                // Hand over directly: the flag stays set for the next change.
                self.waitingChanges.removeFirst().resume()
            }
        }
        return try await body()
    }

    /// Commits `change` through the quorum and waits until this node's partitions reflect it.
    @discardableResult
    private func apply(_ change: MetadataChange) async throws(BrokerError) -> MetadataImage {
        let image: MetadataImage
        do {
            image = try await self.quorum.propose(change)
        } catch let error as BrokerError {
            throw error
        } catch {
            throw BrokerError(.unknownServerError, "\(error)")
        }
        await self.reconciler?.waitUntilReconciled(image.offset)
        return image
    }

    // MARK: Topics

    /// CreateTopics for one topic. `partitions`/`replicationFactor` of -1 take the broker defaults.
    func createTopic(
        name: String,
        partitions: Int32,
        replicationFactor: Int16,
        configs: [String: String],
        validateOnly: Bool
    ) async throws(BrokerError) -> TopicMetadata {
        try await self.serialized { () async throws(BrokerError) in
            try await self.createTopicNow(
                name: name, partitions: partitions, replicationFactor: replicationFactor, configs: configs,
                validateOnly: validateOnly)
        }
    }

    private func createTopicNow(
        name: String,
        partitions: Int32,
        replicationFactor: Int16,
        configs: [String: String],
        validateOnly: Bool
    ) async throws(BrokerError) -> TopicMetadata {
        try TopicNames.validate(name)
        let image = await self.image
        if image.topics[name] != nil {
            throw BrokerError(.topicAlreadyExists, "Topic '\(name)' already exists.")
        }
        if let clash = image.topics.keys.first(where: { TopicNames.collide($0, name) }) {
            throw BrokerError(.invalidTopicException, "Topic '\(name)' collides with existing topic: \(clash)")
        }
        let count = partitions == -1 ? self.config.defaultPartitions : partitions
        guard count > 0 else { throw BrokerError(.invalidPartitions, "Number of partitions must be larger than 0.") }
        guard count <= Int32(Limits.partitionsPerTopicMax) else {
            throw BrokerError(.invalidPartitions, "Number of partitions \(count) exceeds the limit \(Limits.partitionsPerTopicMax).")
        }
        let factor = replicationFactor == -1 ? self.config.defaultReplicationFactor : replicationFactor
        guard factor > 0 else { throw BrokerError(.invalidReplicationFactor, "Replication factor must be larger than 0.") }
        guard factor <= 1 else {
            throw BrokerError(.invalidReplicationFactor, "Replication factor: \(factor) larger than available brokers: 1.")
        }
        _ = try self.logConfig(for: configs)
        let topic = TopicMetadata(name: name, id: KafkaUUID.random(), partitionCount: count, replicationFactor: factor, configs: configs)
        if validateOnly { return topic }
        try await self.apply(.createTopic(topic))
        self.logger.info("created topic", metadata: ["topic": "\(name)", "partitions": "\(count)", "id": "\(topic.id)"])
        return topic
    }

    /// Creates `name` with broker defaults unless it exists (auto-creation on Metadata/Produce).
    func ensureTopic(name: String) async throws(BrokerError) -> TopicMetadata {
        if let existing = await self.reconciledTopic(name) { return existing }
        return try await self.serialized { () async throws(BrokerError) in
            // Another caller may have created it while this one waited.
            if let existing = await self.reconciledTopic(name) { return existing }
            return try await self.createTopicNow(
                name: name, partitions: -1, replicationFactor: -1, configs: [:], validateOnly: false)
        }
    }

    func deleteTopic(name: String) async throws(BrokerError) -> TopicMetadata {
        try await self.serialized { () async throws(BrokerError) in try await self.deleteTopicNow(name: name) }
    }

    private func deleteTopicNow(name: String) async throws(BrokerError) -> TopicMetadata {
        guard let topic = await self.image.topics[name] else {
            throw BrokerError(.unknownTopicOrPartition, "This server does not host this topic-partition.")
        }
        try await self.apply(.deleteTopic(name: name))
        self.logger.info("deleted topic", metadata: ["topic": "\(name)", "id": "\(topic.id)"])
        return topic
    }

    func createPartitions(name: String, count: Int32, validateOnly: Bool) async throws(BrokerError) -> TopicMetadata {
        try await self.serialized { () async throws(BrokerError) in
            try await self.createPartitionsNow(name: name, count: count, validateOnly: validateOnly)
        }
    }

    private func createPartitionsNow(name: String, count: Int32, validateOnly: Bool) async throws(BrokerError) -> TopicMetadata {
        guard var topic = await self.image.topics[name] else {
            throw BrokerError(.unknownTopicOrPartition, "The topic '\(name)' does not exist.")
        }
        guard count > topic.partitionCount else {
            let verb = count == topic.partitionCount ? "the same as" : "higher than"
            throw BrokerError(
                .invalidPartitions,
                "Topic currently has \(topic.partitionCount) partitions, which is \(verb) the requested \(count).")
        }
        guard count <= Int32(Limits.partitionsPerTopicMax) else {
            throw BrokerError(.invalidPartitions, "Number of partitions \(count) exceeds the limit \(Limits.partitionsPerTopicMax).")
        }
        if validateOnly { return topic }
        try await self.apply(.setPartitionCount(topic: name, count: count))
        topic.partitionCount = count
        return topic
    }

    /// Replaces the topic's configuration overrides with `configs` (after validation).
    func setConfigs(topic name: String, configs: [String: String], validateOnly: Bool) async throws(BrokerError) {
        try await self.serialized { () async throws(BrokerError) in
            try await self.setConfigsNow(topic: name, configs: configs, validateOnly: validateOnly)
        }
    }

    private func setConfigsNow(topic name: String, configs: [String: String], validateOnly: Bool) async throws(BrokerError) {
        guard await self.image.topics[name] != nil else {
            throw BrokerError(.unknownTopicOrPartition, "Topic \(name) does not exist.")
        }
        _ = try self.logConfig(for: configs)
        if validateOnly { return }
        try await self.apply(.setTopicConfigs(topic: name, configs: configs))
    }

    // MARK: Data nodes

    /// Registers (or re-registers) a data node with a new incarnation: above every earlier one,
    /// since it is the metadata offset the registration is proposed at.
    func registerNode(id: NodeID, host: String, port: Int32, rack: String?) async throws(BrokerError) -> Int64 {
        try await self.serialized { () async throws(BrokerError) in
            let incarnation = Int64(await self.image.offset.rawValue) + 1
            let registration = NodeRegistration(id: id, host: host, port: port, rack: rack, incarnation: incarnation, fenced: false)
            try await self.apply(.registerNode(registration))
            self.logger.info("registered data node", metadata: ["node": "\(id)", "incarnation": "\(incarnation)", "listener": "\(host):\(port)"])
            return incarnation
        }
    }

    /// Fences a data node's incarnation (it missed its heartbeats for the session timeout).
    func fenceNode(id: NodeID, incarnation: Int64) async throws(BrokerError) {
        try await self.serialized { () async throws(BrokerError) in
            guard let node = await self.image.nodes[id], node.incarnation == incarnation, !node.fenced else { return }
            try await self.apply(.fenceNode(id: id, incarnation: incarnation))
            self.logger.warning("fenced data node: no heartbeat within the session timeout", metadata: ["node": "\(id)", "incarnation": "\(incarnation)"])
        }
    }

    // MARK: Producer ids

    /// A fresh producer id (InitProducerId for idempotent producers). Ids are reserved durably
    /// in blocks so that a restart never hands out an id twice.
    func allocateProducerID() async throws(BrokerError) -> Int64 {
        try await self.serialized { () async throws(BrokerError) in
            let reserved = await self.image.nextProducerID
            var next = self.nextUnreservedProducerID ?? reserved
            if next >= reserved {
                // After a restart (or a controller change) start above every earlier reservation.
                next = reserved
                try await self.apply(.reserveProducerIDs(next: reserved + Self.producerIDBlock))
            }
            self.nextUnreservedProducerID = next + 1
            return next
        }
    }
}

/// Kafka's rules for topic names (`Topic.validate`).
enum TopicNames {
    static func validate(_ name: String) throws(BrokerError) {
        guard !name.isEmpty else { throw BrokerError(.invalidTopicException, "Topic name is illegal, it can't be empty") }
        guard name != "." && name != ".." else {
            throw BrokerError(.invalidTopicException, "Topic name cannot be \".\" or \"..\"")
        }
        guard name.utf8.count <= Limits.topicNameLengthMax else {
            throw BrokerError(
                .invalidTopicException,
                "Topic name is illegal, it can't be longer than \(Limits.topicNameLengthMax) characters, topic name: \(name)")
        }
        let legal = name.utf8.allSatisfy { c in
            (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39) || c == 0x2E || c == 0x5F || c == 0x2D
        }
        guard legal else {
            throw BrokerError(
                .invalidTopicException,
                "Topic name \"\(name)\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'")
        }
    }

    /// Kafka forbids topics that differ only by '.' versus '_' (their metric names collide).
    static func collide(_ a: String, _ b: String) -> Bool {
        a != b && a.replacingPeriods() == b.replacingPeriods()
    }
}

extension String {
    fileprivate func replacingPeriods() -> String { String(self.map { $0 == "." ? "_" : $0 }) }
}
