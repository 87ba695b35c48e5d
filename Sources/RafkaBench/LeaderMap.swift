import KafkaProtocol
import NIOCore
import RafkaClient
import Synchronization

/// Where each partition of a run's topic is led now, and at which leader epoch. In a cluster
/// partitions move while a run goes on (a data node joins the ring or leaves it): a producer or
/// consumer answered NOT_LEADER_OR_FOLLOWER for a partition, or whose connection to its leader
/// closed, waits `retryBackoff`, asks for a refresh and looks the partition up again, as Kafka
/// clients do. An answer that names the new leader with a newer epoch (KIP-951: Produce v10,
/// Fetch v16) is taken at once (`learn`), and the batch or reader goes there without the wait,
/// as the Java client does.
final class LeaderMap: Sendable {
    /// Partition answers that mean "ask someone else": the partition moved or is being opened.
    static let moved: Set<KafkaErrorCode> = [.notLeaderOrFollower, .leaderNotAvailable, .unknownTopicOrPartition]

    /// How long connecting (and negotiating versions) to a leader may take while a partition
    /// moves: a node restarting may accept connections before it answers.
    static let connectTimeout = TimeAmount.seconds(2)

    /// The retry reason for a batch or reader whose connection to the partition's leader closed.
    static let connectionClosed = "connection to its leader closed"

    /// How long a client waits before it asks again where a partition went (Kafka's
    /// `retry.backoff.ms`).
    static let retryBackoff = TimeAmount.milliseconds(100)
    /// How long a batch or a partition's reader may go without a leader that takes it before the
    /// run fails (a node that left for good, with nothing to take its partitions over).
    static let patienceNanoseconds: Int64 = 30_000_000_000

    private let bootstrap: String
    private let topic: String
    private struct State {
        var leaders: [Int32: BenchTopic.Leader]
        /// Each partition's leader epoch as last learned (-1: the broker gives none).
        var epochs: [Int32: Int32]
        /// The refresh under way, which callers meanwhile wait for instead of asking again.
        var refreshing: Task<Void, Never>?
        /// Why the last refresh learned nothing, if it did not.
        var problem: String?
    }

    private let state: Mutex<State>

    init(bootstrap: String, topic: String, leaders: [Int32: BenchTopic.Leader], epochs: [Int32: Int32]) {
        self.bootstrap = bootstrap
        self.topic = topic
        self.state = Mutex(State(leaders: leaders, epochs: epochs))
    }

    func leader(of partition: Int32) -> BenchTopic.Leader {
        self.state.withLock { $0.leaders[partition]! }
    }

    /// Takes a leader an answer named for `partition` (`leaderID`, -1 for none, at `epoch`) if its
    /// epoch is newer than the one known and its address is known (`endpoints`, or an earlier
    /// leader). Returns whether the map now names that leader at that epoch (taken here, or
    /// already, from another answer): the partition may be tried there at once.
    func learn(_ partition: Int32, leaderID: Int32, epoch: Int32, endpoints: [BenchTopic.Leader]) -> Bool {
        guard leaderID >= 0, epoch >= 0 else { return false }
        return self.state.withLock { state in
            let known = state.epochs[partition, default: -1]
            if epoch > known,
                let leader = endpoints.first(where: { $0.id == leaderID })
                    ?? state.leaders.values.first(where: { $0.id == leaderID })
            {
                state.leaders[partition] = leader
                state.epochs[partition] = epoch
            }
            return state.epochs[partition] == epoch && state.leaders[partition]?.id == leaderID
        }
    }

    /// Why the last refresh learned nothing (no broker answered, or Metadata named no leaders),
    /// for the message of a run that fails for want of a leader.
    var problem: String? { self.state.withLock { $0.problem } }

    /// Asks the cluster where every partition is led now. Partitions without a leader at the
    /// moment keep the one known before; a refresh no broker answers changes nothing.
    func refresh() async {
        let task = self.state.withLock { state in
            if let running = state.refreshing { return running }
            let task = Task { await self.ask() }
            state.refreshing = task
            return task
        }
        await task.value
    }

    private func ask() async {
        let problem: String?
        do {
            problem = try await self.askOnce()
        } catch {
            problem = "asking for Metadata: \(error)"
        }
        self.state.withLock {
            $0.refreshing = nil
            $0.problem = problem
        }
    }

    /// Takes what Metadata says; returns why it said nothing useful, if so.
    private func askOnce() async throws -> String? {
        // The bootstrap first, then every leader known: a bootstrap node may be the one that left.
        let known = self.state.withLock { Set($0.leaders.values) }.map { "\($0.host):\($0.port)" }.sorted()
        let admin = try await KafkaAdminClient.connect(
            bootstrap: ([self.bootstrap] + known).joined(separator: ","), connectTimeout: Self.connectTimeout)
        defer { admin.close() }
        var request = MetadataRequest()
        request.topics = [.init(name: self.topic)]
        request.allowAutoTopicCreation = false
        let response = try await admin.connection.send(request, timeout: Self.connectTimeout)
        guard let topic = response.topics.first, topic.errorCode == 0 else {
            let code = KafkaErrorCode(rawValue: response.topics.first?.errorCode ?? 0)
            return "Metadata for \(self.topic): \(code)"
        }
        let brokers = Dictionary(response.brokers.map { ($0.nodeId, $0) }, uniquingKeysWith: { first, _ in first })
        return self.state.withLock { state in
            var leaderless = 0
            for partition in topic.partitions where partition.errorCode != 0 { leaderless += 1 }
            for partition in topic.partitions where partition.errorCode == 0 {
                // A node whose image is behind may name a leader already replaced.
                let known = state.epochs[partition.partitionIndex, default: -1]
                guard let broker = brokers[partition.leaderId], partition.leaderEpoch < 0 || partition.leaderEpoch >= known
                else { continue }
                state.leaders[partition.partitionIndex] = .init(
                    id: broker.nodeId, host: broker.host, port: Int(broker.port))
                state.epochs[partition.partitionIndex] = partition.leaderEpoch
            }
            return leaderless == 0 ? nil : "Metadata names no leader for \(leaderless) partitions of \(self.topic)"
        }
    }
}
