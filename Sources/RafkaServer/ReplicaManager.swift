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
    private let logger: Logger
    /// Lookup from any thread; the lock is held only for dictionary access (docs/lock-ordering.md).
    private let partitions = Mutex<[TopicPartition: PartitionShell]>([:])
    /// Each hosted topic's effective configuration, read by produce validation on any loop.
    private let configs = Mutex<[String: LogConfig]>([:])
    /// Partitions whose log could not be opened at startup, with the reason (naming the file).
    /// They answer KAFKA_STORAGE_ERROR until an operator repairs or restores them.
    private let offline = Mutex<[TopicPartition: String]>([:])

    init(logsDirectory: String, group: any EventLoopGroup, threadPool: NIOThreadPool, logger: Logger) {
        self.logsDirectory = logsDirectory
        self.loops = Array(group.makeIterator())
        self.threadPool = threadPool
        self.logger = logger
    }

    func shell(for topicPartition: TopicPartition) -> PartitionShell? {
        self.partitions.withLock { $0[topicPartition] }
    }

    func shells(topic: String) -> [PartitionShell] {
        self.partitions.withLock { $0.values.filter { $0.topicPartition.topic == topic } }
    }

    var partitionCount: Int { self.partitions.withLock { $0.count } }

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
                    on: self.loop(for: tp), threadPool: self.threadPool, logger: self.logger,
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

    /// Makes sure `directory` belongs to `topicID`: a directory of another topic id (a deleted
    /// topic's leftovers) is moved aside, never merged into the new topic.
    private static func claim(directory: String, topicID: KafkaUUID, logger: Logger) throws {
        let marker = directory + "/partition.metadata"
        let expected = "version: 0\ntopic_id: \(topicID)\n"
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
            let shells = partitions.values.filter { $0.topicPartition.topic == topic }
            for shell in shells { partitions[shell.topicPartition] = nil }
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
        for shell in removed {
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

    /// Runs retention (every `retentionInterval`) and flush checks (every second) on each loop
    /// for the partitions pinned to it. Returns the tasks so shutdown can cancel them.
    func startMaintenance(retentionIntervalMilliseconds: Int64) -> [RepeatedTask] {
        self.loops.map { loop in
            let lastRetention = NIOLoopBoundBox.makeBoxSendingValue(FileSystem.monotonicMilliseconds(), eventLoop: loop)
            return loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                let now = FileSystem.monotonicMilliseconds()
                let retention = now - lastRetention.value >= retentionIntervalMilliseconds
                if retention { lastRetention.value = now }
                let mine = self.partitions.withLock { $0.values.filter { $0.eventLoop === loop } }
                for shell in mine { shell.maintain(retention: retention) }
            }
        }
    }

    /// Closes every partition cleanly (flush, indexes, checkpoints).
    func closeAll() async {
        let all = self.partitions.withLock { partitions in
            defer { partitions.removeAll() }
            return Array(partitions.values)
        }
        for shell in all {
            do {
                try await shell.close().get()
            } catch {
                self.logger.error("closing \(shell.topicPartition) failed: \(error)")
            }
        }
    }
}
