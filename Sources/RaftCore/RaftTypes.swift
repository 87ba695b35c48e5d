import RafkaCore

/// The voters of a Raft group. Kept sorted so that every iteration is deterministic (a `Set`'s
/// order differs between processes, and simulations must replay exactly).
public struct RaftConfiguration: Sendable, Hashable, CustomStringConvertible {
    public private(set) var voters: [NodeID]

    public init(voters: [NodeID]) {
        self.voters = Array(Set(voters)).sorted()
    }

    public func contains(_ node: NodeID) -> Bool { self.voters.contains(node) }

    /// Votes needed for a majority.
    public var quorum: Int { self.voters.count / 2 + 1 }

    public func adding(_ node: NodeID) -> RaftConfiguration { RaftConfiguration(voters: self.voters + [node]) }

    public func removing(_ node: NodeID) -> RaftConfiguration { RaftConfiguration(voters: self.voters.filter { $0 != node }) }

    public var description: String { "{" + self.voters.map(\.description).joined(separator: ",") + "}" }
}

/// One log entry.
public struct RaftEntry: Sendable, Hashable {
    public enum Payload: Sendable, Hashable {
        /// A new leader's first entry: committing it commits every earlier entry (Raft §5.4.2)
        /// and lets the leader serve reads (§6.4).
        case noop
        /// An application command, opaque to Raft (metadata changes).
        case command([UInt8])
        /// A new voter set; takes effect as soon as it is in a server's log (§6, single-server changes).
        case configuration(RaftConfiguration)
    }

    public var term: Term
    public var index: LogIndex
    public var payload: Payload

    public init(term: Term, index: LogIndex, payload: Payload) {
        self.term = term
        self.index = index
        self.payload = payload
    }
}

/// What must be durable before a server answers any message: its term, vote and commit index.
public struct HardState: Sendable, Hashable {
    public var term: Term
    public var vote: NodeID?
    public var commit: LogIndex

    public init(term: Term = .zero, vote: NodeID? = nil, commit: LogIndex = .zero) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// A snapshot of the applied state through `index` (Raft §7): the entries up to it are gone.
public struct RaftSnapshot: Sendable, Hashable {
    public var index: LogIndex
    public var term: Term
    public var configuration: RaftConfiguration
    /// The application's state (for Rafka, a SQLite database of the metadata image).
    public var data: [UInt8]

    public init(index: LogIndex, term: Term, configuration: RaftConfiguration, data: [UInt8]) {
        self.index = index
        self.term = term
        self.configuration = configuration
        self.data = data
    }
}

/// A message between servers.
public struct RaftMessage: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// RequestVote (§5.2), or the pre-vote that precedes it (§9.6) without raising terms.
        case voteRequest(lastIndex: LogIndex, lastTerm: Term, preVote: Bool, transfer: Bool)
        case voteResponse(granted: Bool, preVote: Bool)
        /// AppendEntries (§5.3).
        case append(prevIndex: LogIndex, prevTerm: Term, entries: [RaftEntry], commit: LogIndex)
        /// On success, `index` is the last index known to match; on rejection, where the leader
        /// should try next (the follower's hint, §5.3's "optimization").
        case appendResponse(success: Bool, index: LogIndex, hintTerm: Term?)
        /// Keeps followers from campaigning; carries a read round for ReadIndex (§6.4).
        case heartbeat(commit: LogIndex, readRound: UInt64)
        case heartbeatResponse(readRound: UInt64)
        /// InstallSnapshot (§7), whole (metadata snapshots are small).
        case installSnapshot(RaftSnapshot)
        /// Leadership transfer: start an election now (§3.10 of Ongaro's thesis).
        case timeoutNow
    }

    public var from: NodeID
    public var to: NodeID
    public var term: Term
    public var kind: Kind

    public init(from: NodeID, to: NodeID, term: Term, kind: Kind) {
        self.from = from
        self.to = to
        self.term = term
        self.kind = kind
    }
}

/// A linearizable read that may now be served once the state machine applied `index`.
public struct ReadState: Sendable, Hashable {
    public var requestID: UInt64
    public var index: LogIndex
}

/// Everything the shell must do after feeding events in, in this order:
/// 1. persist `snapshot` (if any), then `entries` (truncating the stored log at the first
///    entry's index, then appending), then `hardState` — and fsync;
/// 2. send `messages` (only now: a vote or an acknowledgement must never precede its fsync);
/// 3. apply `snapshot` to the state machine if any, then `committed` entries, in order;
/// 4. call `persisted(through:term:)` and `applied(through:)` on the core.
public struct RaftReady: Sendable, Equatable {
    public var hardState: HardState?
    public var snapshot: RaftSnapshot?
    public var entries: [RaftEntry] = []
    public var messages: [RaftMessage] = []
    public var committed: [RaftEntry] = []
    public var readStates: [ReadState] = []
    /// The leader changed (nil: none known).
    public var leaderChange: NodeID??

    public var isEmpty: Bool {
        self.hardState == nil && self.snapshot == nil && self.entries.isEmpty && self.messages.isEmpty
            && self.committed.isEmpty && self.readStates.isEmpty && self.leaderChange == nil
    }
}

/// Tunables, counted in ticks of the shell's clock.
public struct RaftOptions: Sendable {
    /// Election timeout: randomized in [electionTicks, 2 × electionTicks) (§5.2).
    public var electionTicks: Int = 10
    /// A leader sends heartbeats this often; must be well below `electionTicks`.
    public var heartbeatTicks: Int = 1
    /// Pre-vote (§9.6): a partitioned server does not disrupt the cluster when it returns.
    public var preVote = true
    /// A leader that has not heard from a majority for an election timeout steps down (§6.2).
    public var checkQuorum = true
    /// Entries per AppendEntries message.
    public var maxEntriesPerAppend = 64
    /// Unacknowledged AppendEntries per follower in pipeline mode.
    public var maxInflightAppends = 16

    public init() {}
}
