import ChordCore
import HashTreeCollections
import KafkaProtocol
import Logging
import NIOCore
import RafkaCore
import RafkaStorage
import Synchronization

/// The current metadata image, readable from any thread without waiting for the service.
final class MetadataCache: Sendable {
    private let current: Mutex<(image: MetadataImage, placement: PartitionPlacement)>
    private let uncleanByDefault: Bool
    /// Requests waiting for a ring epoch this node has not reached yet (`whenRingEpoch`), by id:
    /// each leaves when the epoch comes or its wait is up.
    private let epochWaiters = Mutex<(next: UInt64, waiting: [UInt64: (epoch: Int64, promise: EventLoopPromise<Void>)])>((0, [:]))

    init(_ image: MetadataImage, uncleanByDefault: Bool = false) {
        self.uncleanByDefault = uncleanByDefault
        self.current = Mutex((image, PartitionPlacement(image: image, uncleanByDefault: uncleanByDefault)))
    }

    /// A snapshot (copy-on-write: reading is cheap, later changes do not show through).
    var image: MetadataImage { self.current.withLock { $0.image } }

    /// An image with the partition placement it implies.
    typealias Snapshot = (image: MetadataImage, placement: PartitionPlacement)

    /// The image with the partition placement it implies, read together.
    var snapshot: Snapshot { self.current.withLock { $0 } }

    /// The placement `image` implies: the published one while the ring epoch is the same (only
    /// membership changes move partitions).
    func placement(for image: MetadataImage) -> PartitionPlacement {
        let published = self.current.withLock { $0.placement }
        if published.ringEpoch == image.ringEpoch { return published }
        return PartitionPlacement(image: image, uncleanByDefault: self.uncleanByDefault)
    }

    func publish(_ image: MetadataImage, placement: PartitionPlacement? = nil) {
        let placement = placement ?? self.placement(for: image)
        self.current.withLock { $0 = (image, placement) }
        let reached = self.epochWaiters.withLock { waiters in
            let reached = waiters.waiting.filter { $0.value.epoch <= image.ringEpoch }
            for id in reached.keys { waiters.waiting[id] = nil }
            return reached.values.map(\.promise)
        }
        for promise in reached { promise.succeed() }
    }

    /// Succeeds on `loop` once the published image is at ring epoch `epoch` or later, or after
    /// `limit`: a client that learned of a change before this node did (a Fetch naming a newer
    /// leader epoch) is answered under it rather than turned away.
    func whenRingEpoch(reaches epoch: Int64, on loop: any EventLoop, within limit: TimeAmount) -> EventLoopFuture<Void> {
        let done = loop.makePromise(of: Void.self)
        let id = self.epochWaiters.withLock { waiters in
            defer { waiters.next += 1 }
            waiters.waiting[waiters.next] = (epoch, done)
            return waiters.next
        }
        done.succeed(at: .now() + limit) {
            self.epochWaiters.withLock { _ = $0.waiting.removeValue(forKey: id) }
        }
        // Published before the waiter was in: `publish` missed it.
        if self.image.ringEpoch >= epoch { done.succeed() }
        return done.futureResult
    }
}

/// The controller's metadata operations: validates each change the way Kafka's controller does,
/// proposes it to the metadata quorum, and returns once it is applied and this node's partitions
/// reflect it.
///
/// Changes are validated one at a time, against the applied image plus every change proposed
/// and not yet applied (`pending`), and then wait for their commit outside that critical
/// section: concurrent changes share appends and fsyncs, and none is validated against a state
/// that misses another in flight (two creations of one topic, a deletion racing a re-creation).
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
    /// The latest block reservation: ids from it are handed out once it is committed.
    private var reservation: Commit?
    /// Validation runs one change at a time. The actor alone does not ensure that: while a
    /// change awaits the quorum, another call may enter.
    private var validating = false
    private var waitingToValidate: [CheckedContinuation<Void, Never>] = []
    /// The applied image with every proposed, unapplied change on top (nil when none are in flight).
    private var pending: MetadataImage?
    private var inFlight = 0
    /// Bumped when a change in flight fails, so that `pending` is not rebuilt on top of it.
    private var pendingGeneration = 0
    /// Topic creations in flight, so that auto-creation of the same name waits for them.
    private var creating: [String: Commit] = [:]

    /// A proposed change: its applied image when it commits.
    typealias Commit = Task<MetadataImage, any Error>

    init(quorum: RaftShell, reconciler: MetadataReconciler?, config: BrokerConfig, logger: Logger) {
        self.quorum = quorum
        self.reconciler = reconciler
        self.config = config
        self.logger = logger
    }

    /// The image changes are validated against: the applied one plus every change in flight.
    private var image: MetadataImage {
        get async {
            if let pending = self.pending { return pending }
            return await self.quorum.image
        }
    }

    /// The topic if it exists, once this node's partitions reflect it (it may have been created
    /// by a concurrent call whose reconciliation is still under way).
    private func reconciledTopic(_ name: String) async -> TopicMetadata? {
        let image = await self.quorum.image
        guard let topic = image.topics[name] else { return nil }
        await self.reconciler?.waitUntilReconciled(image.offset)
        return topic
    }

    func logConfig(for overrides: [String: String]) throws(BrokerError) -> LogConfig {
        try storage { () throws(StorageError) in try LogConfig(overrides: overrides, defaults: self.config.topicDefaults) }
    }

    /// Runs `body` (validation and proposal) after every earlier change's validation finished.
    private func serialized<T>(_ body: () async throws(BrokerError) -> T) async throws(BrokerError) -> T {
        if self.validating {
            await withCheckedContinuation { self.waitingToValidate.append($0) }
        }
        self.validating = true
        defer {
            if self.waitingToValidate.isEmpty {
                self.validating = false
            } else {
                // Hand over directly: the flag stays set for the next change.
                self.waitingToValidate.removeFirst().resume()
            }
        }
        return try await body()
    }

    /// Proposes `change` (call within `serialized`, after validating it against `image`): later
    /// validations see it at once.
    private func submit(_ change: MetadataChange) async throws(BrokerError) -> Commit {
        let generation = self.pendingGeneration
        var next = await self.image
        let proposal = try await self.quorum.submit(change)
        if generation != self.pendingGeneration {
            // A change in `next` failed meanwhile: start again from what is applied.
            next = await self.quorum.image
        }
        change.apply(to: &next, at: proposal.index)
        self.pending = next
        self.inFlight += 1
        return Task {
            do {
                let image = try await self.quorum.outcome(of: proposal)
                self.settled(failed: false)
                return image
            } catch {
                self.settled(failed: true)
                throw error
            }
        }
    }

    private func settled(failed: Bool) {
        self.inFlight -= 1
        // A failed change is not in the log after all (or its fate is unknown): validate
        // against what is applied from now on.
        if failed { self.pendingGeneration += 1 }
        if failed || self.inFlight == 0 { self.pending = nil }
    }

    /// Waits until `commit` is applied and this node's partitions reflect it.
    @discardableResult
    private func completion(of commit: Commit) async throws(BrokerError) -> MetadataImage {
        let image: MetadataImage
        do {
            image = try await commit.value
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
        let (topic, commit) = try await self.serialized { () async throws(BrokerError) in
            try await self.proposeTopic(
                name: name, partitions: partitions, replicationFactor: replicationFactor, configs: configs,
                validateOnly: validateOnly)
        }
        if let commit { try await self.completion(of: commit) }
        return topic
    }

    /// Validates a new topic; proposes it unless `validateOnly`.
    private func proposeTopic(
        name: String,
        partitions: Int32,
        replicationFactor: Int16,
        configs: [String: String],
        validateOnly: Bool
    ) async throws(BrokerError) -> (TopicMetadata, Commit?) {
        try TopicNames.validate(name)
        let image = await self.image
        if image.topics[name] != nil {
            throw BrokerError(.topicAlreadyExists, "Topic '\(name)' already exists.")
        }
        if TopicNames.mayCollide(name), let clash = image.topics.keys.first(where: { TopicNames.collide($0, name) }) {
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
        if validateOnly { return (topic, nil) }
        let commit = try await self.submit(.createTopic(topic))
        self.creating[name] = commit
        self.logger.info("creating topic", metadata: ["topic": "\(name)", "partitions": "\(count)", "id": "\(topic.id)"])
        Task {
            _ = try? await commit.value
            self.created(name, commit)
        }
        return (topic, commit)
    }

    private func created(_ name: String, _ commit: Commit) {
        if self.creating[name] == commit { self.creating[name] = nil }
    }

    /// Creates `name` with broker defaults unless it exists (auto-creation on Metadata/Produce).
    func ensureTopic(name: String) async throws(BrokerError) -> TopicMetadata {
        if let existing = await self.reconciledTopic(name) { return existing }
        let (topic, commit) = try await self.serialized { () async throws(BrokerError) -> (TopicMetadata, Commit?) in
            // Another caller may have created it, or be creating it, meanwhile.
            if let commit = self.creating[name], let topic = self.pending?.topics[name] { return (topic, commit) }
            if let existing = await self.reconciledTopic(name) { return (existing, nil) }
            return try await self.proposeTopic(name: name, partitions: -1, replicationFactor: -1, configs: [:], validateOnly: false)
        }
        if let commit { try await self.completion(of: commit) }
        return topic
    }

    func deleteTopic(name: String) async throws(BrokerError) -> TopicMetadata {
        let (topic, commit) = try await self.serialized { () async throws(BrokerError) in
            guard let topic = await self.image.topics[name] else {
                throw BrokerError(.unknownTopicOrPartition, "This server does not host this topic-partition.")
            }
            return (topic, try await self.submit(.deleteTopic(name: name)))
        }
        try await self.completion(of: commit)
        self.logger.info("deleted topic", metadata: ["topic": "\(name)", "id": "\(topic.id)"])
        return topic
    }

    func createPartitions(name: String, count: Int32, validateOnly: Bool) async throws(BrokerError) -> TopicMetadata {
        let (topic, commit) = try await self.serialized { () async throws(BrokerError) -> (TopicMetadata, Commit?) in
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
            if validateOnly { return (topic, nil) }
            topic.partitionCount = count
            return (topic, try await self.submit(.setPartitionCount(topic: name, count: count)))
        }
        if let commit { try await self.completion(of: commit) }
        return topic
    }

    /// Replaces the topic's configuration overrides with `configs` (after validation).
    func setConfigs(topic name: String, configs: [String: String], validateOnly: Bool) async throws(BrokerError) {
        let commit = try await self.serialized { () async throws(BrokerError) -> Commit? in
            guard await self.image.topics[name] != nil else {
                throw BrokerError(.unknownTopicOrPartition, "Topic \(name) does not exist.")
            }
            _ = try self.logConfig(for: configs)
            if validateOnly { return nil }
            return try await self.submit(.setTopicConfigs(topic: name, configs: configs))
        }
        if let commit { try await self.completion(of: commit) }
    }

    // MARK: Data nodes

    /// Registers (or re-registers) a data node with a new incarnation: above every earlier one,
    /// since it is past the metadata offset of every change proposed before it. A node's first
    /// registration gives it `ring-tokens-per-node` tokens carved from the most loaded members'
    /// arcs; later ones keep them, so a restart moves no partitions.
    func registerNode(id: NodeID, host: String, port: Int32, rack: String?) async throws(BrokerError) -> Int64 {
        let (incarnation, tokens, commit) = try await self.serialized { () async throws(BrokerError) in
            let image = await self.image
            let incarnation = Int64(image.offset.rawValue) + 1
            var tokens = image.nodes[id]?.tokens ?? []
            // A new node joins: it copies what it will lead before it is placed. A node that
            // was placed before comes back placed, with its data.
            var joining = image.nodes[id]?.joining ?? false
            if tokens.isEmpty {
                var allocator = TokenAllocator(ring: image.allTokens)
                tokens = allocator.allocate(for: id, count: self.config.ringTokensPerNode)
                joining = image.nodes.values.contains { $0.id != id && !$0.fenced && $0.isPlaced }
            }
            let registration = NodeRegistration(
                id: id, host: host, port: port, rack: rack, incarnation: incarnation, fenced: false, tokens: tokens, joining: joining)
            return (incarnation, tokens.count, try await self.submit(.registerNode(registration)))
        }
        try await self.completion(of: commit)
        self.logger.info(
            "registered data node",
            metadata: ["node": "\(id)", "incarnation": "\(incarnation)", "listener": "\(host):\(port)", "tokens": "\(tokens)"])
        return incarnation
    }

    /// Fences a data node's incarnation (it missed its heartbeats for the session timeout, or
    /// its ring neighbours and the controllers both stopped hearing from it).
    func fenceNode(id: NodeID, incarnation: Int64, reason: String) async throws(BrokerError) {
        let commit = try await self.serialized { () async throws(BrokerError) -> Commit? in
            guard let node = await self.image.nodes[id], node.incarnation == incarnation, !node.fenced else { return nil }
            return try await self.submit(.fenceNode(id: id, incarnation: incarnation))
        }
        guard let commit else { return }
        try await self.completion(of: commit)
        self.logger.warning("fenced data node", metadata: ["node": "\(id)", "incarnation": "\(incarnation)", "reason": "\(reason)"])
    }

    /// Takes a data node's incarnation out of the placement at its request (controlled
    /// shutdown): its partitions pass to the next nodes, which copy them from it.
    func markNodeLeaving(id: NodeID, incarnation: Int64) async throws(BrokerError) {
        let commit = try await self.serialized { () async throws(BrokerError) -> Commit? in
            guard let node = await self.image.nodes[id], node.incarnation == incarnation, !node.leaving else { return nil }
            return try await self.submit(.nodeLeaving(id: id, incarnation: incarnation))
        }
        guard let commit else { return }
        try await self.completion(of: commit)
        self.logger.info("data node is leaving the ring", metadata: ["node": "\(id)", "incarnation": "\(incarnation)"])
    }

    /// Places a joining node that has copied what it will lead (its partitions then move to it).
    func activateNode(id: NodeID, incarnation: Int64) async throws(BrokerError) {
        let commit = try await self.serialized { () async throws(BrokerError) -> Commit? in
            guard let node = await self.image.nodes[id], node.incarnation == incarnation, node.joining else { return nil }
            return try await self.submit(.activateNode(id: id, incarnation: incarnation))
        }
        guard let commit else { return }
        try await self.completion(of: commit)
        self.logger.info("data node joined the ring", metadata: ["node": "\(id)", "incarnation": "\(incarnation)"])
    }

    // MARK: Producer ids

    /// A fresh producer id (InitProducerId for idempotent producers). Ids are reserved durably
    /// in blocks so that a restart never hands out an id twice; an id is returned only once its
    /// block's reservation is committed.
    func allocateProducerID() async throws(BrokerError) -> Int64 {
        let (id, commit) = try await self.serialized { () async throws(BrokerError) -> (Int64, Commit?) in
            let reserved = await self.image.nextProducerID
            var next = self.nextUnreservedProducerID ?? reserved
            if next >= reserved {
                // After a restart (or a controller change) start above every earlier reservation.
                next = reserved
                self.reservation = try await self.submit(.reserveProducerIDs(next: reserved + Self.producerIDBlock))
            }
            self.nextUnreservedProducerID = next + 1
            return (next, self.reservation)
        }
        guard let commit else { return id }
        do {
            try await self.completion(of: commit)
        } catch {
            if self.reservation == commit {
                // The block may not be reserved: reserve a new one next time.
                self.reservation = nil
                self.nextUnreservedProducerID = nil
            }
            throw error
        }
        return id
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
    /// Compares bytes without allocating: validation runs it against every existing topic.
    static func collide(_ a: String, _ b: String) -> Bool {
        let (x, y) = (a.utf8, b.utf8)
        guard x.count == y.count else { return false }
        var differs = false
        for (p, q) in zip(x, y) where p != q {
            guard (p == 0x2E || p == 0x5F) && (q == 0x2E || q == 0x5F) else { return false }
            differs = true
        }
        return differs
    }

    /// Whether `name` could collide with any other name at all.
    static func mayCollide(_ name: String) -> Bool {
        name.utf8.contains { $0 == 0x2E || $0 == 0x5F }
    }
}
