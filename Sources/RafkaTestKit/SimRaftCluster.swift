import RafkaCore
import RaftCore

/// A deterministic simulation of a Raft group: real `RaftStateMachine`s with a simulated clock,
/// network (delay, reordering, loss, duplication, partitions) and disk (writes become durable
/// only when their fsync completes; a crash loses what was not yet synced). A small key-value
/// store runs on top so that client histories can be checked for linearizability.
///
/// Every step checks Raft's safety properties (§5.2 election safety, §5.3 log matching, §5.4
/// leader completeness, state-machine safety) and per-node commit monotonicity; the first
/// violation is recorded in `violations`. The same seed replays the same run.
public struct SimRaftCluster {
    public struct Options: Sendable {
        public var nodes = 3
        /// Nodes 1…initialVoters form the group; the rest start outside it (to be added).
        public var initialVoters: Int?
        public var raft = RaftOptions()
        public var faults = SimNetwork<RaftMessage>.Faults(dropProbability: 0.02, duplicateProbability: 0.01, delayTicks: 0...2)
        /// Ticks an fsync takes (a crash in between loses the write).
        public var syncTicks: ClosedRange<Int> = 0...1
        /// Take a snapshot once this many entries are applied beyond the last one.
        public var snapshotEvery = 15
        public init() {}
    }

    struct Disk {
        var hardState = HardState()
        var snapshot: RaftSnapshot?
        var entries: [RaftEntry] = []
    }

    struct PendingSync {
        var completesAt: Int
        var ready: RaftReady
    }

    struct Node {
        var core: RaftStateMachine?
        var disk = Disk()
        var pending: [PendingSync] = []
        var store: [String: String] = [:]
        var lastCommit: LogIndex = .zero
        var writes: [UInt64: Int] = [:]  // proposal id → history position
        var reads: [UInt64: (history: Int, key: String)] = [:]
        var confirmedReads: [(index: LogIndex, history: Int, key: String)] = []
    }

    public let options: Options
    public let seed: UInt64
    public private(set) var now = 0
    public internal(set) var violations: [String] = []
    public internal(set) var history: [LinearizabilityChecker.Operation] = []
    public var network: SimNetwork<RaftMessage>
    var nodes: [NodeID: Node] = [:]
    public let ids: [NodeID]
    var random: SeededRandom
    let initial: RaftConfiguration
    private var nextRequestID: UInt64 = 1
    // Global records for the safety checks.
    var leaders: [Term: NodeID] = [:]
    var chainHashes: [LogIndex: [Term: UInt64]] = [:]
    var committed: [LogIndex: RaftEntry] = [:]
    var applied: [LogIndex: RaftEntry] = [:]

    public init(seed: UInt64, options: Options = Options()) {
        self.seed = seed
        self.options = options
        self.random = SeededRandom(seed: seed)
        self.network = SimNetwork(faults: options.faults)
        self.ids = (1...options.nodes).map { NodeID(Int32($0)) }
        self.initial = RaftConfiguration(voters: Array(self.ids.prefix(options.initialVoters ?? options.nodes)))
        for id in self.ids {
            var node = Node()
            node.core = self.makeCore(id, disk: node.disk)
            self.nodes[id] = node
        }
    }

    func makeCore(_ id: NodeID, disk: Disk) -> RaftStateMachine {
        RaftStateMachine(
            id: id, options: self.options.raft, hardState: disk.hardState, snapshot: disk.snapshot, entries: disk.entries,
            initialConfiguration: self.initial, seed: self.seed &+ UInt64(self.now))
    }

    // MARK: Observation

    public func core(_ id: NodeID) -> RaftStateMachine? { self.nodes[id]?.core }
    public func isUp(_ id: NodeID) -> Bool { self.nodes[id]?.core != nil }
    public var leadersNow: [NodeID] { self.ids.filter { self.nodes[$0]?.core?.isLeader == true } }
    public func store(_ id: NodeID) -> [String: String] { self.nodes[id]?.store ?? [:] }

    /// Runs until `condition` holds (true) or `ticks` pass (false).
    public mutating func run(upTo ticks: Int, until condition: (SimRaftCluster) -> Bool) -> Bool {
        for _ in 0..<ticks {
            if condition(self) { return true }
            self.step()
        }
        return condition(self)
    }

    /// The single leader now, if exactly one node leads.
    public var leader: NodeID? {
        let leaders = self.leadersNow
        return leaders.count == 1 ? leaders[0] : nil
    }
    /// The highest index known committed anywhere.
    public var committedIndex: LogIndex { self.committed.keys.max() ?? .zero }

    // MARK: Driving

    /// Advances the clock one tick: every live node ticks, due messages are delivered, due
    /// fsyncs complete, and every node's Ready is processed. Safety is checked throughout.
    public mutating func step() {
        self.now += 1
        for id in self.ids where self.nodes[id]!.core != nil { self.nodes[id]!.core!.tick() }
        for (from, to, message) in self.network.deliver(now: self.now) where self.nodes[to]?.core != nil {
            _ = from
            self.nodes[to]!.core!.step(message)
            self.processReady(to)
        }
        for id in self.ids where self.nodes[id]!.core != nil {
            self.processReady(id)
            self.completeSyncs(id)
            self.processReady(id)
        }
    }

    public mutating func run(ticks: Int) {
        for _ in 0..<ticks { self.step() }
    }

    /// Kills `id`: its memory and unsynced writes are gone, its messages in flight are lost.
    public mutating func crash(_ id: NodeID) {
        guard self.nodes[id]!.core != nil else { return }
        self.nodes[id]!.core = nil
        self.nodes[id]!.pending = []
        self.nodes[id]!.store = [:]
        self.nodes[id]!.writes = [:]
        self.nodes[id]!.reads = [:]
        self.nodes[id]!.confirmedReads = []
        self.network.dropAll(involving: id)
    }

    /// Restarts `id` from what its disk holds.
    public mutating func restart(_ id: NodeID) {
        guard self.nodes[id]!.core == nil else { return }
        let disk = self.nodes[id]!.disk
        self.nodes[id]!.core = self.makeCore(id, disk: disk)
        self.nodes[id]!.store = disk.snapshot.map { Self.decodeStore($0.data) } ?? [:]
        self.nodes[id]!.lastCommit = .zero
    }

    // MARK: Clients

    /// A client writes `key = value` through `id`. Returns false if `id` refused (not leader).
    @discardableResult
    public mutating func write(_ key: String, _ value: String, via id: NodeID) -> Bool {
        guard var core = self.nodes[id]?.core else { return false }
        let requestID = self.nextRequestID
        self.nextRequestID += 1
        guard case .accepted = core.propose(Self.encode(requestID, key, value)) else { return false }
        self.nodes[id]!.core = core
        self.nodes[id]!.writes[requestID] = self.history.count
        self.history.append(.init(key: key, kind: .write(value), invokedAt: self.now, completedAt: nil))
        self.processReady(id)
        return true
    }

    /// A client reads `key` through `id` with ReadIndex. Returns false if `id` refused.
    @discardableResult
    public mutating func read(_ key: String, via id: NodeID) -> Bool {
        guard var core = self.nodes[id]?.core else { return false }
        let requestID = self.nextRequestID
        self.nextRequestID += 1
        guard case .accepted = core.readIndex(requestID: requestID) else { return false }
        self.nodes[id]!.core = core
        self.nodes[id]!.reads[requestID] = (self.history.count, key)
        self.history.append(.init(key: key, kind: .read(nil), invokedAt: self.now, completedAt: nil))
        self.processReady(id)
        return true
    }

    public mutating func proposeConfigurationChange(_ change: ConfigurationChange, via id: NodeID) -> ProposalResult {
        guard var core = self.nodes[id]?.core else { return .notLeader(nil) }
        let result = core.proposeConfigurationChange(change)
        self.nodes[id]!.core = core
        self.processReady(id)
        return result
    }

    public mutating func transferLeadership(from id: NodeID, to target: NodeID) -> ProposalResult {
        guard var core = self.nodes[id]?.core else { return .notLeader(nil) }
        let result = core.transferLeadership(to: target)
        self.nodes[id]!.core = core
        self.processReady(id)
        return result
    }

    /// The recorded client history, checked for linearizability.
    public var linearizabilityViolation: String? {
        LinearizabilityChecker().firstViolation(in: self.history.filter { op in
            // Reads that never completed had no effect.
            if case .read = op.kind, op.completedAt == nil { return false }
            return true
        })
    }
}
