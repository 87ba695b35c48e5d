import KafkaProtocol
import Logging
import NIOCore
import NIOPosix
import RafkaCore
import RafkaStorage
import Synchronization

/// The partitions this node hosts: one `PartitionShell` per partition, each pinned to an event
/// loop by a hash of its name so that partitions spread over cores.
///
/// Directory layout: `<logs>/<topic>-<partition>/` holding the segments and a
/// `partition.metadata` file with the topic id, so that a directory left over from a deleted
/// topic is never served as part of a new topic with the same name.
final class ReplicaManager: Sendable {
    let logsDirectory: String
    private let loops: [any EventLoop]
    private let threadPool: NIOThreadPool
    private let writebackPool: NIOThreadPool
    private let logger: Logger
    /// The newest batches of every partition here, shared by all of them.
    let hotCache: HotCache
    /// What each partition keeps of its log's end in the OS page cache (`BrokerConfig.pageCacheTailBytes`).
    let pageCacheTailBytes: Int?
    /// Lookup from any thread; the lock is held only for dictionary access (docs/lock-ordering.md).
    private let partitions = Mutex(PartitionIndex<PartitionShell>())
    /// Each hosted topic's effective configuration, read by produce validation on any loop.
    private let configs = Mutex<[String: LogConfig]>([:])
    /// Partitions whose log could not be opened at startup, with the reason (naming the file).
    /// They answer KAFKA_STORAGE_ERROR until an operator repairs or restores them.
    private let offline = Mutex<[TopicPartition: String]>([:])
    /// Copies open but not served to clients (a data node's): one being filled by its new
    /// leader, or one this node led before and keeps until the new leader has taken it over.
    /// Follower fetches read them.
    private let held = Mutex<[TopicPartition: PartitionShell]>([:])
    /// Partitions this node is taking over (`PartitionMover`), with the requests waiting for
    /// them: a produce or fetch that reaches the new leader before the takeover ends waits for
    /// it (`whenArrived`), rather than being turned away into its client's retry back-off.
    private let arrivals = Mutex(Arrivals())

    private struct Arrivals {
        struct Arrival {
            /// When the takeover began: after `arrivalWaitMax` requests no longer wait for it.
            var since: NIODeadline
            /// The requests waiting, by id (each leaves when it is answered or its wait is up).
            var waiters: [UInt64: EventLoopPromise<Void>] = [:]
        }

        var byPartition: [TopicPartition: Arrival] = [:]
        var nextWaiter: UInt64 = 0
    }

    init(
        logsDirectory: String, group: any EventLoopGroup, threadPool: NIOThreadPool, writebackPool: NIOThreadPool,
        hotCache: HotCache, pageCacheTailBytes: Int?, logger: Logger
    ) {
        self.hotCache = hotCache
        self.pageCacheTailBytes = pageCacheTailBytes
        self.logsDirectory = logsDirectory
        self.loops = Array(group.makeIterator())
        self.threadPool = threadPool
        self.writebackPool = writebackPool
        self.logger = logger
    }

    func shell(for topicPartition: TopicPartition) -> PartitionShell? {
        self.partitions.withLock { $0[topicPartition] }
    }

    func shells(topic: String) -> [PartitionShell] {
        self.partitions.withLock { Array(($0.byTopic[topic] ?? [:]).values) }
    }

    /// The served partitions of `topic` by index, in one lookup: a fetch of thousands of a
    /// topic's partitions then hashes its name once, not once per partition. The dictionary
    /// shares storage with the index: while a caller holds it, a change to the topic copies it
    /// (under the lock), so callers keep it for one pass over a request only.
    func shellsByIndex(topic: String) -> [Int32: PartitionShell] {
        self.partitions.withLock { $0.byTopic[topic] ?? [:] }
    }

    var partitionCount: Int { self.partitions.withLock { $0.count } }

    /// The bytes of every partition served to clients.
    func servedBytes() async -> Int64 {
        var total: Int64 = 0
        for shell in self.partitions.withLock({ Array($0.values) }) {
            total += (try? await shell.sizeBytes().get()) ?? 0
        }
        return total
    }

    /// Every partition served to clients.
    var served: [TopicPartition] { self.partitions.withLock { Array($0.keys) } }

    /// A served or held copy, for a follower fetch (the new leader copying it).
    func anyShell(for topicPartition: TopicPartition) -> PartitionShell? {
        self.shell(for: topicPartition) ?? self.held.withLock { $0[topicPartition] }
    }

    /// Stops serving a partition whose log failed (its files stay for recovery on restart).
    func takeOffline(_ topicPartition: TopicPartition, reason: String) {
        self.partitions.withLock { $0[topicPartition] = nil }
        self.offline.withLock { $0[topicPartition] = reason }
    }

    /// Why `topicPartition` is offline, or nil if it is not.
    func offlineReason(_ topicPartition: TopicPartition) -> String? {
        self.offline.withLock { $0[topicPartition] }
    }

    func config(topic: String) -> LogConfig? {
        self.configs.withLock { $0[topic] }
    }

    private func loop(for topicPartition: TopicPartition) -> any EventLoop {
        var hasher = Hasher()
        hasher.combine(topicPartition.topic)
        hasher.combine(topicPartition.partition)
        // Hasher is seeded per process; placement only needs to be stable within one run.
        return self.loops[Int(UInt(bitPattern: hasher.finalize()) % UInt(self.loops.count))]
    }

    func directory(for topicPartition: TopicPartition) -> String {
        "\(self.logsDirectory)/\(topicPartition.topic)-\(topicPartition.partition)"
    }

    /// Opens (creating or recovering) the given partitions of `topic`.
    ///
    /// With `tolerateFailures` (startup), a partition whose log cannot be recovered — a corrupt
    /// closed segment, an unreadable file — is logged with the reason and kept offline while
    /// every other partition serves; otherwise the first failure is thrown.
    func open(
        topic: TopicMetadata,
        partitions range: Range<Int32>,
        config: LogConfig,
        tolerateFailures: Bool = false
    ) async throws {
        var futures: [EventLoopFuture<PartitionShell>] = []
        for index in range {
            let tp = TopicPartition(topic.name, index)
            let directory = self.directory(for: tp)
            try Self.claim(directory: directory, topicID: topic.id, logger: self.logger)
            futures.append(
                PartitionShell.open(
                    topicPartition: tp, topicID: topic.id, directory: directory, config: config,
                    cache: self.hotCache, pageCacheTailBytes: self.pageCacheTailBytes, on: self.loop(for: tp),
                    threadPool: self.threadPool, writebackPool: self.writebackPool, logger: self.logger,
                    onFailure: { [weak self] tp, reason in self?.takeOffline(tp, reason: reason) }))
        }
        self.configs.withLock { $0[topic.name] = config }
        for (index, future) in zip(range, futures) {
            let shell: PartitionShell
            do {
                shell = try await future.get()
            } catch {
                guard tolerateFailures else { throw error }
                let tp = TopicPartition(topic.name, index)
                self.logger.error(
                    "partition is offline: its log could not be recovered",
                    metadata: ["partition": "\(tp)", "reason": "\(error)"])
                self.offline.withLock { $0[tp] = "\(error)" }
                continue
            }
            self.partitions.withLock { $0[shell.topicPartition] = shell }
        }
    }

    // MARK: Copies on a data node

    /// Stops serving `topicPartition` to clients (another node leads it now) and keeps the copy
    /// for the new leader to take over.
    func retire(_ topicPartition: TopicPartition) {
        let shell = self.partitions.withLock { $0.removeValue(forKey: topicPartition) }
        guard let shell else { return }
        _ = shell.stopWrites()
        self.held.withLock { $0[topicPartition] = shell }
    }

    /// This node's copy of a partition, served or not, opened from disk if need be (a copy left
    /// by an earlier run); nil when there is none. A served copy stops being served.
    func heldCopy(topic: TopicMetadata, partition: Int32, config: LogConfig) async throws -> PartitionShell? {
        let tp = TopicPartition(topic.name, partition)
        self.retire(tp)
        if let shell = self.held.withLock({ $0[tp] }) {
            guard shell.topicID == topic.id else {
                await self.dropCopy(tp)
                return nil
            }
            return shell
        }
        let directory = self.directory(for: tp)
        guard Self.belongs(directory: directory, to: topic.id) else { return nil }
        return try await self.openHeld(topic: topic, partition: partition, config: config)
    }

    /// Opens (creating if need be) a copy that is not served yet. With `fresh`, an existing copy
    /// is deleted first.
    func openHeld(topic: TopicMetadata, partition: Int32, config: LogConfig, fresh: Bool = false) async throws -> PartitionShell {
        let tp = TopicPartition(topic.name, partition)
        if fresh { await self.dropCopy(tp) }
        if let shell = self.held.withLock({ $0[tp] }) { return shell }
        let directory = self.directory(for: tp)
        if fresh { try? FileSystem.removeTree(directory) }
        try Self.claim(directory: directory, topicID: topic.id, logger: self.logger)
        if fresh { try Self.writeLeaderEpoch(-1, directory: directory) }
        let shell = try await PartitionShell.open(
            topicPartition: tp, topicID: topic.id, directory: directory, config: config,
            cache: self.hotCache, pageCacheTailBytes: self.pageCacheTailBytes, on: self.loop(for: tp),
            threadPool: self.threadPool, writebackPool: self.writebackPool, logger: self.logger,
            onFailure: { [weak self] tp, reason in self?.takeOffline(tp, reason: reason) }
        ).get()
        _ = shell.stopWrites()
        self.configs.withLock { $0[topic.name] = config }
        self.held.withLock { $0[tp] = shell }
        return shell
    }

    /// Starts serving a held copy as leader from `leaderEpoch`, recorded with the copy
    /// first so that a later leader can tell the newest copy.
    func serve(_ topicPartition: TopicPartition, leaderEpoch: Int32) throws {
        guard let shell = self.held.withLock({ $0[topicPartition] }) else {
            throw BrokerError(.unknownTopicOrPartition, "no copy of \(topicPartition) to serve")
        }
        try Self.writeLeaderEpoch(leaderEpoch, directory: self.directory(for: topicPartition))
        shell.lead(from: leaderEpoch)
        self.held.withLock { $0[topicPartition] = nil }
        self.partitions.withLock { $0[topicPartition] = shell }
        self.offline.withLock { $0[topicPartition] = nil }
        self.endArrival(topicPartition)
    }

    /// Goes on leading a served partition from `leaderEpoch`: a newer epoch given to its
    /// leadership without a change of leader (the image's leader-epoch map raised old epochs).
    func restamp(_ topicPartition: TopicPartition, leaderEpoch: Int32) throws {
        guard let shell = self.shell(for: topicPartition) else { return }
        try Self.writeLeaderEpoch(leaderEpoch, directory: self.directory(for: topicPartition))
        shell.lead(from: leaderEpoch)
    }

    // MARK: Arrivals

    /// The longest a takeover holds requests for its partition, counted from when it began: one
    /// that takes longer (its source is gone, or the copy is large) lets them have its error.
    static let arrivalWaitMax = TimeAmount.seconds(5)

    /// How long a request that may wait `milliseconds` (a produce's timeout, a fetch's wait)
    /// waits for an arriving partition.
    static func arrivalWait(milliseconds: Int32) -> TimeAmount {
        min(.milliseconds(Int64(max(0, milliseconds))), Self.arrivalWaitMax)
    }

    /// A takeover of `topicPartition` began (at `since`): requests for it may wait for it.
    func expectArrival(_ topicPartition: TopicPartition, since: NIODeadline = .now()) {
        self.arrivals.withLock { state in
            if state.byPartition[topicPartition] == nil { state.byPartition[topicPartition] = .init(since: since) }
        }
    }

    /// The takeover of `topicPartition` ended (it is served, or this node will not lead it):
    /// the requests waiting for it go on.
    func endArrival(_ topicPartition: TopicPartition) {
        let ended = self.arrivals.withLock { $0.byPartition.removeValue(forKey: topicPartition) }
        for waiter in ended.map({ Array($0.waiters.values) }) ?? [] { waiter.succeed() }
    }

    /// Every takeover ended but those of `kept` (all of them: shutdown).
    func endArrivals(except kept: Set<TopicPartition> = []) {
        let ended = self.arrivals.withLock { state in
            let ended = state.byPartition.filter { !kept.contains($0.key) }
            for tp in ended.keys { state.byPartition[tp] = nil }
            return ended.values.flatMap(\.waiters.values)
        }
        for waiter in ended { waiter.succeed() }
    }

    /// Whether requests for `topicPartition` wait for its takeover here: one is under way, and
    /// began less than `arrivalWaitMax` ago.
    func isArriving(_ topicPartition: TopicPartition) -> Bool {
        let now = NIODeadline.now()
        return self.arrivals.withLock { state in
            state.byPartition[topicPartition].map { now < $0.since + Self.arrivalWaitMax } ?? false
        }
    }

    /// Succeeds on `loop` once the takeover of one of `partitions` (those arriving) ended, or
    /// after `limit`, or when the takeovers have gone on for `arrivalWaitMax`, whichever comes
    /// first; at once if none is arriving.
    func whenArrived(_ partitions: [TopicPartition], on loop: any EventLoop, within limit: TimeAmount) -> EventLoopFuture<Void> {
        let now = NIODeadline.now()
        let done = loop.makePromise(of: Void.self)
        let (id, until) = self.arrivals.withLock { state -> (UInt64, NIODeadline?) in
            let id = state.nextWaiter
            state.nextWaiter += 1
            var until: NIODeadline?
            for tp in partitions {
                guard let since = state.byPartition[tp]?.since, now < since + Self.arrivalWaitMax else { continue }
                state.byPartition[tp]!.waiters[id] = done
                until = max(until ?? since, since + Self.arrivalWaitMax)
            }
            return (id, until)
        }
        guard let until else {
            done.succeed()
            return done.futureResult
        }
        done.succeed(at: min(now + limit, until)) {
            self.arrivals.withLock { state in
                for tp in partitions { state.byPartition[tp]?.waiters[id] = nil }
            }
        }
        return done.futureResult
    }

    /// Deletes this node's copy (not served) of `topicPartition`: its new leader has its own.
    func dropCopy(_ topicPartition: TopicPartition) async {
        let shell = self.held.withLock { $0.removeValue(forKey: topicPartition) }
        do {
            if let shell {
                try await shell.delete().get()
            }
            try FileSystem.removeTree(self.directory(for: topicPartition))
        } catch {
            self.logger.error("deleting the copy of \(topicPartition) failed: \(error)")
        }
    }

    /// The partition's leader epoch when this node last became the leader of the copy in `directory`:
    /// -1 for a copy never served (one being filled), 0 for a copy from before the ring
    /// (standalone).
    static func leaderEpoch(directory: String) -> Int32 {
        guard FileSystem.exists(directory + "/partition.metadata") else { return -1 }
        guard var bytes = try? FileSystem.readAll(directory + "/leader-epoch"),
            let text = bytes.readString(length: bytes.readableBytes)
        else { return 0 }
        return Int32(text.filter { !$0.isWhitespace }) ?? -1
    }

    func leaderEpoch(of topicPartition: TopicPartition) -> Int32 {
        Self.leaderEpoch(directory: self.directory(for: topicPartition))
    }

    /// Records that the copy (not served yet) was made from a copy led since `leaderEpoch`, so a
    /// later takeover from the same leadership can go on from it.
    func recordCopyOf(_ topicPartition: TopicPartition, leaderEpoch: Int32) throws {
        try FileSystem.writeAtomically(
            self.directory(for: topicPartition) + "/copy-of-epoch", contents: ByteBuffer(string: "\(leaderEpoch)\n"))
    }

    /// The leader epoch recorded by `recordCopyOf`, if any.
    func copyOf(_ topicPartition: TopicPartition) -> Int32? {
        guard var bytes = try? FileSystem.readAll(self.directory(for: topicPartition) + "/copy-of-epoch"),
            let text = bytes.readString(length: bytes.readableBytes)
        else { return nil }
        return Int32(text.filter { !$0.isWhitespace })
    }

    private static func writeLeaderEpoch(_ epoch: Int32, directory: String) throws {
        try FileSystem.writeAtomically(directory + "/leader-epoch", contents: ByteBuffer(string: "\(epoch)\n"))
    }

    /// Whether `directory` holds a copy of the topic with `topicID`.
    private static func belongs(directory: String, to topicID: KafkaUUID) -> Bool {
        guard var bytes = try? FileSystem.readAll(directory + "/partition.metadata"),
            let text = bytes.readString(length: bytes.readableBytes)
        else { return false }
        return text == Self.marker(topicID)
    }

    private static func marker(_ topicID: KafkaUUID) -> String { "version: 0\ntopic_id: \(topicID)\n" }

    /// Makes sure `directory` belongs to `topicID`: a directory of another topic id (a deleted
    /// topic's leftovers) is moved aside, never merged into the new topic.
    private static func claim(directory: String, topicID: KafkaUUID, logger: Logger) throws {
        let marker = directory + "/partition.metadata"
        let expected = Self.marker(topicID)
        if FileSystem.exists(marker), var bytes = try? FileSystem.readAll(marker),
            let text = bytes.readString(length: bytes.readableBytes)
        {
            if text == expected { return }
            let aside = directory + ".\(KafkaUUID.random())-stray"
            logger.warning("moving aside a partition directory of another topic id", metadata: ["directory": "\(directory)", "to": "\(aside)"])
            try FileSystem.rename(directory, to: aside)
        }
        try FileSystem.createDirectory(directory)
        try FileSystem.writeAtomically(marker, contents: ByteBuffer(string: expected))
    }

    /// Stops serving and deletes every partition of `topic`.
    func delete(topic: String) async {
        let removed = self.partitions.withLock { partitions in
            let shells = Array((partitions.byTopic[topic] ?? [:]).values)
            for shell in shells { partitions[shell.topicPartition] = nil }
            return shells
        }
        let held = self.held.withLock { held in
            let shells = held.values.filter { $0.topicPartition.topic == topic }
            for shell in shells { held[shell.topicPartition] = nil }
            return shells
        }
        self.configs.withLock { $0[topic] = nil }
        let offline = self.offline.withLock { offline in
            let gone = offline.keys.filter { $0.topic == topic }
            for tp in gone { offline[tp] = nil }
            return gone
        }
        for tp in offline {
            do {
                try FileSystem.removeTree(self.directory(for: tp))
            } catch {
                self.logger.error("deleting offline \(tp) failed: \(error)")
            }
        }
        for shell in removed + held {
            do {
                try await shell.delete().get()
            } catch {
                self.logger.error("deleting \(shell.topicPartition) failed: \(error)")
            }
        }
    }

    func update(topic: String, config: LogConfig) {
        self.configs.withLock { $0[topic] = config }
        for shell in self.shells(topic: topic) { shell.update(config: config) }
    }

    /// Runs the hot cache's age eviction every second on each loop, and retention (every
    /// `retentionInterval`) for the partitions pinned to it. Nothing else walks the partitions:
    /// fsyncs start from appends, rolls and `flush.ms` timers, so 10,000 idle partitions cost a
    /// walk per retention interval, not per second. Returns the tasks so shutdown can cancel them.
    func startMaintenance(retentionIntervalMilliseconds: Int64) -> [RepeatedTask] {
        let cache = self.hotCache
        return self.loops.map { loop in
            let lastRetention = NIOLoopBoundBox.makeBoxSendingValue(FileSystem.monotonicMilliseconds(), eventLoop: loop)
            return loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                let now = FileSystem.monotonicMilliseconds()
                cache.evictExpired(nowMilliseconds: now)
                guard now - lastRetention.value >= retentionIntervalMilliseconds else { return }
                lastRetention.value = now
                let mine = self.partitions.withLock { $0.values.filter { $0.eventLoop === loop } }
                for shell in mine { shell.maintain() }
            }
        }
    }

    /// Closes every partition cleanly (flush, indexes, checkpoints), all at once: each loop
    /// closes its own partitions one after another, both loops at the same time.
    func closeAll() async {
        self.endArrivals()
        let all =
            self.partitions.withLock { partitions in
                defer { partitions.removeAll() }
                return Array(partitions.values)
            }
            + self.held.withLock { held in
                defer { held.removeAll() }
                return Array(held.values)
            }
        let closing = all.map { shell in (shell, shell.close()) }
        for (shell, closed) in closing {
            do {
                try await closed.get()
            } catch {
                self.logger.error("closing \(shell.topicPartition) failed: \(error)")
            }
        }
    }
}

/// Values by partition (the shells a node serves), also grouped by topic and partition index,
/// kept in step: the dictionary operations `ReplicaManager` uses, and `byTopic`.
struct PartitionIndex<Value> {
    private var byPartition: [TopicPartition: Value] = [:]
    private(set) var byTopic: [String: [Int32: Value]] = [:]

    subscript(topicPartition: TopicPartition) -> Value? {
        get { self.byPartition[topicPartition] }
        set {
            if let newValue {
                self.byPartition[topicPartition] = newValue
                self.byTopic[topicPartition.topic, default: [:]][topicPartition.partition] = newValue
            } else {
                self.removeValue(forKey: topicPartition)
            }
        }
    }

    @discardableResult
    mutating func removeValue(forKey topicPartition: TopicPartition) -> Value? {
        guard let removed = self.byPartition.removeValue(forKey: topicPartition) else { return nil }
        self.byTopic[topicPartition.topic]?[topicPartition.partition] = nil
        if self.byTopic[topicPartition.topic]?.isEmpty == true { self.byTopic[topicPartition.topic] = nil }
        return removed
    }

    mutating func removeAll() {
        self.byPartition.removeAll()
        self.byTopic.removeAll()
    }

    var values: Dictionary<TopicPartition, Value>.Values { self.byPartition.values }
    var keys: Dictionary<TopicPartition, Value>.Keys { self.byPartition.keys }
    var count: Int { self.byPartition.count }
}
