import RafkaCore

// The Raft consensus algorithm as a pure state machine: no I/O, clock, threads or global
// randomness. The etcd/raft shape: events in (`tick`, `step`, `propose…`, `readIndex`,
// `persisted`, `applied`), a `RaftReady` out.
//
//                 timeout                 majority of pre-votes          majority of votes
//   ┌──────────┐ ─────────► ┌──────────────┐ ───────────────► ┌───────────┐ ─────────────► ┌────────┐
//   │ follower │            │ pre-candidate │                  │ candidate │                │ leader │
//   └──────────┘ ◄───────── └──────────────┘ ◄─────────────── └───────────┘ ◄───────────── └────────┘
//        ▲  higher term, or a leader's message; lost pre-vote/vote; lost quorum (check-quorum)   │
//        └─────────────────────────────────────────────────────────────────────────────────────┘
//
// Section numbers cite "In Search of an Understandable Consensus Algorithm" (Ongaro, Ousterhout
// 2014) and, for §3.10, §4, §6.4 and §9.6, Ongaro's thesis.

/// One Raft server's consensus state.
///
/// Lifecycle: built from what storage holds (hard state, snapshot, entries); then the shell
/// loops: feed events, take `ready()`, do what it says in order, report `persisted` and
/// `applied`. Not thread-safe: one owner (an actor) drives it.
public struct RaftStateMachine: Sendable {
    public enum Role: Sendable, Equatable {
        case follower
        case preCandidate
        case candidate
        case leader
    }

    public let id: NodeID
    public let options: RaftOptions
    public internal(set) var role: Role = .follower
    public internal(set) var term: Term
    public internal(set) var vote: NodeID?
    public internal(set) var leader: NodeID?
    public internal(set) var commitIndex: LogIndex
    var log: RaftLog
    var snapshot: RaftSnapshot?
    var snapshotConfiguration: RaftConfiguration
    /// The configuration in force (the latest in the log) and the index of its entry.
    public internal(set) var configuration: RaftConfiguration
    var configurationIndex: LogIndex
    var random: SeededRandom

    var electionElapsed = 0
    var heartbeatElapsed = 0
    var randomizedElectionTimeout = 0
    var votes: [NodeID: Bool] = [:]
    var progress: [NodeID: Progress] = [:]
    var transferee: NodeID?
    var transferElapsed = 0

    /// Entries through this index are durable on this server.
    public internal(set) var persistedIndex: LogIndex
    /// Entries through this index have been handed to the shell to persist.
    var handedOutIndex: LogIndex
    /// Entries through this index have been handed to the shell to apply.
    var applyHandedOutIndex: LogIndex
    public internal(set) var appliedIndex: LogIndex
    var lastHardState: HardState
    var pendingSnapshot: RaftSnapshot?
    var messages: [RaftMessage] = []
    var readStates: [ReadState] = []
    var lastReportedLeader: NodeID?
    var reads = ReadIndexQueue()

    /// Builds the state of a server from storage.
    ///
    /// - Parameters:
    ///   - hardState: the last persisted term, vote and commit index.
    ///   - snapshot: the latest snapshot, if any (its configuration seeds the voter set).
    ///   - entries: every stored entry after the snapshot.
    ///   - initialConfiguration: the voters of a brand-new group (ignored once the log or a
    ///     snapshot holds a configuration).
    public init(
        id: NodeID,
        options: RaftOptions = RaftOptions(),
        hardState: HardState = HardState(),
        snapshot: RaftSnapshot? = nil,
        entries: [RaftEntry] = [],
        initialConfiguration: RaftConfiguration,
        seed: UInt64
    ) {
        precondition(options.heartbeatTicks > 0 && options.electionTicks > options.heartbeatTicks)
        self.id = id
        self.options = options
        self.term = hardState.term
        self.vote = hardState.vote
        self.log = RaftLog(
            snapshotIndex: snapshot?.index ?? .zero, snapshotTerm: snapshot?.term ?? .zero, entries: entries)
        self.snapshot = snapshot
        self.snapshotConfiguration = snapshot?.configuration ?? initialConfiguration
        (self.configuration, self.configurationIndex) = self.log.configuration(
            snapshotConfiguration: self.snapshotConfiguration)
        let snapshotIndex = snapshot?.index ?? .zero
        self.commitIndex = max(min(hardState.commit, self.log.lastIndex), snapshotIndex)
        self.persistedIndex = self.log.lastIndex
        self.handedOutIndex = self.log.lastIndex
        self.applyHandedOutIndex = snapshotIndex
        self.appliedIndex = snapshotIndex
        self.lastHardState = HardState(term: self.term, vote: self.vote, commit: self.commitIndex)
        self.random = SeededRandom(seed: seed ^ UInt64(bitPattern: Int64(id.rawValue)) &* 0x9E37_79B9)
        self.resetElectionTimeout()
    }

    public var hardState: HardState { HardState(term: self.term, vote: self.vote, commit: self.commitIndex) }

    /// The entry at `index`, if it is in the log (not compacted, not beyond the end).
    public func entry(at index: LogIndex) -> RaftEntry? { self.log.entry(at: index) }

    /// Entries through this index live only in the snapshot.
    public var snapshotIndex: LogIndex { self.log.snapshotIndex }
    public var lastIndex: LogIndex { self.log.lastIndex }
    public var lastTerm: Term { self.log.lastTerm }
    public var isLeader: Bool { self.role == .leader }
    var quorum: Int { self.configuration.quorum }

    /// Each voter's replication state as the leader sees it (nil on other roles).
    public var followerMatchIndexes: [NodeID: LogIndex]? {
        guard self.role == .leader else { return nil }
        return self.progress.mapValues(\.match)
    }

    /// Starts an election now instead of waiting for a timeout: for a server that is the only
    /// voter (standalone), where waiting would only delay start-up.
    public mutating func campaignNow() {
        guard self.role != .leader else { return }
        self.campaign(transfer: false)
    }

    // MARK: Time

    /// One tick of the shell's clock.
    public mutating func tick() {
        switch self.role {
        case .follower, .preCandidate, .candidate:
            self.electionElapsed += 1
            if self.electionElapsed >= self.randomizedElectionTimeout && self.configuration.contains(self.id) {
                self.campaign(transfer: false)
            } else if self.role == .preCandidate && self.electionElapsed % self.options.heartbeatTicks == 0 {
                // A voter that heard from the old leader a tick later than we did still holds its
                // lease (§4.2.3) and drops our pre-vote silently. Pre-votes change nothing, so ask
                // the silent ones again rather than wait out a whole second election timeout.
                self.requestPreVotes()
            }
        case .leader:
            self.heartbeatElapsed += 1
            self.electionElapsed += 1
            self.tickSnapshots()
            if self.transferee != nil {
                self.transferElapsed += 1
                // §3.10: a transfer that does not finish within an election timeout is abandoned.
                if self.transferElapsed >= self.options.electionTicks { self.transferee = nil }
            }
            if self.electionElapsed >= self.options.electionTicks {
                self.electionElapsed = 0
                if self.options.checkQuorum && !self.hasActiveQuorum() {
                    // §6.2: a leader cut off from a majority stops accepting writes.
                    self.becomeFollower(term: self.term, leader: nil)
                    return
                }
                for peer in Array(self.progress.keys) { self.progress[peer]!.recentActive = false }
            }
            if self.heartbeatElapsed >= self.options.heartbeatTicks {
                self.heartbeatElapsed = 0
                self.broadcastHeartbeat()
            }
        }
    }

    mutating func resetElectionTimeout() {
        self.electionElapsed = 0
        let spread = UInt64(self.options.electionTicks)
        self.randomizedElectionTimeout = self.options.electionTicks + Int(self.random.next() % spread)
    }

    func hasActiveQuorum() -> Bool {
        var active = 0
        for voter in self.configuration.voters {
            if voter == self.id || self.progress[voter]?.recentActive == true { active += 1 }
        }
        return active >= self.quorum
    }

    // MARK: Role changes

    mutating func becomeFollower(term: Term, leader: NodeID?) {
        if term > self.term {
            self.term = term
            self.vote = nil
        }
        self.role = .follower
        self.leader = leader
        self.progress = [:]
        self.transferee = nil
        self.votes = [:]
        self.reads.failAll()
        self.resetElectionTimeout()
    }

    /// §5.2: start an election — after a pre-vote round when enabled (§9.6), unless the leader
    /// asked us to take over (§3.10).
    mutating func campaign(transfer: Bool) {
        guard self.configuration.contains(self.id) else { return }
        guard self.options.preVote && !transfer else {
            self.startElection(transfer: transfer)
            return
        }
        self.role = .preCandidate
        self.leader = nil
        self.votes = [self.id: true]
        self.resetElectionTimeout()
        if self.tallyVotes() { return }
        self.requestPreVotes()
    }

    /// Pre-vote requests to every voter that has not answered this round.
    mutating func requestPreVotes() {
        for voter in self.configuration.voters where voter != self.id && self.votes[voter] == nil {
            self.send(
                to: voter, term: self.term.next,
                .voteRequest(lastIndex: self.log.lastIndex, lastTerm: self.log.lastTerm, preVote: true, transfer: false))
        }
    }

    /// The real election: a new term, a vote for ourselves, RequestVote to every voter.
    mutating func startElection(transfer: Bool) {
        self.role = .candidate
        self.term = self.term.next
        self.vote = self.id
        self.leader = nil
        self.votes = [self.id: true]
        self.resetElectionTimeout()
        if self.tallyVotes() { return }
        for voter in self.configuration.voters where voter != self.id {
            self.send(
                to: voter, term: self.term,
                .voteRequest(lastIndex: self.log.lastIndex, lastTerm: self.log.lastTerm, preVote: false, transfer: transfer))
        }
    }

    /// Counts votes; wins or loses the election when the outcome is known. True when decided.
    @discardableResult
    mutating func tallyVotes() -> Bool {
        let granted = self.votes.filter { $0.value && self.configuration.contains($0.key) }.count
        let rejected = self.votes.filter { !$0.value && self.configuration.contains($0.key) }.count
        if granted >= self.quorum {
            if self.role == .preCandidate {
                self.startElection(transfer: false)
            } else {
                self.becomeLeader()
            }
            return true
        }
        if rejected >= self.quorum {
            self.becomeFollower(term: self.term, leader: nil)
            return true
        }
        return false
    }

    mutating func becomeLeader() {
        self.role = .leader
        self.leader = self.id
        self.heartbeatElapsed = 0
        self.electionElapsed = 0
        self.transferee = nil
        self.progress = [:]
        for voter in self.configuration.voters where voter != self.id {
            self.progress[voter] = Progress(next: self.log.lastIndex + 1)
        }
        // §5.4.2 / §8: a new leader commits an entry of its own term before anything it inherited
        // can count as committed, and before it serves reads.
        self.appendToLog(.noop)
        self.broadcastAppend()
    }

    // MARK: Messages in

    /// Handles a message from another server.
    public mutating func step(_ message: RaftMessage) {
        guard message.to == self.id, message.from != self.id else { return }
        if message.term > self.term {
            guard self.acceptHigherTerm(message) else { return }
        } else if message.term < self.term {
            self.handleStaleTerm(message)
            return
        }
        switch message.kind {
        case .voteRequest(let lastIndex, let lastTerm, let preVote, _):
            self.handleVoteRequest(message, lastIndex: lastIndex, lastTerm: lastTerm, preVote: preVote)
        case .voteResponse(let granted, let preVote):
            let expected: Role = preVote ? .preCandidate : .candidate
            guard self.role == expected else { return }
            self.votes[message.from] = granted
            self.tallyVotes()
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            self.followLeader(message.from)
            self.handleAppend(from: message.from, prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        case .appendResponse(let success, let index, let hintTerm):
            self.handleAppendResponse(from: message.from, success: success, index: index, hintTerm: hintTerm)
        case .heartbeat(let commit, let readRound):
            self.followLeader(message.from)
            // The leader sends min(its commit, our match): that prefix is ours and agrees with it.
            self.commitTo(min(commit, self.log.lastIndex))
            self.send(to: message.from, term: self.term, .heartbeatResponse(readRound: readRound))
        case .heartbeatResponse(let readRound):
            self.handleHeartbeatResponse(from: message.from, readRound: readRound)
        case .installSnapshot(let snapshot):
            self.followLeader(message.from)
            self.handleSnapshot(from: message.from, snapshot)
        case .timeoutNow:
            // §3.10: the leader asked us to take over; campaign at once, past any lease.
            if self.role != .leader { self.campaign(transfer: true) }
        }
    }

    /// Decides whether a message with a higher term moves us to that term (§5.1), honouring
    /// leader leases (§4.2.3: ignore vote requests while a leader is known to be alive) and
    /// pre-votes (which never change terms). False when the message should be dropped.
    mutating func acceptHigherTerm(_ message: RaftMessage) -> Bool {
        switch message.kind {
        case .voteRequest(_, _, let preVote, let transfer):
            let leaseValid = self.options.checkQuorum && self.leader != nil && self.electionElapsed < self.options.electionTicks
            if leaseValid && !transfer { return false }
            if preVote { return true }  // answered without adopting the term
            self.becomeFollower(term: message.term, leader: nil)
            return true
        case .voteResponse(let granted, let preVote):
            // A granted pre-vote carries the proposed term; it is not a newer term.
            if preVote && granted { return true }
            self.becomeFollower(term: message.term, leader: nil)
            return false
        case .append, .heartbeat, .installSnapshot:
            self.becomeFollower(term: message.term, leader: message.from)
            return true
        case .appendResponse, .heartbeatResponse, .timeoutNow:
            self.becomeFollower(term: message.term, leader: nil)
            return message.kind == .timeoutNow
        }
    }

    mutating func handleStaleTerm(_ message: RaftMessage) {
        switch message.kind {
        case .append, .heartbeat, .installSnapshot:
            // A deposed leader learns the newer term from our reply and steps down.
            self.send(to: message.from, term: self.term, .appendResponse(success: false, index: self.log.lastIndex, hintTerm: nil))
        case .voteRequest(_, _, true, _):
            self.send(to: message.from, term: self.term, .voteResponse(granted: false, preVote: true))
        default:
            break
        }
    }

    mutating func followLeader(_ leader: NodeID) {
        if self.role != .follower { self.becomeFollower(term: self.term, leader: leader) }
        self.leader = leader
        self.electionElapsed = 0
    }

    /// §5.2, §5.4.1: grant a vote to a candidate whose log is at least as up to date as ours,
    /// at most one per term. Pre-votes (§9.6) grant without recording anything.
    mutating func handleVoteRequest(_ message: RaftMessage, lastIndex: LogIndex, lastTerm: Term, preVote: Bool) {
        let upToDate = self.log.isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm)
        let canVote = self.vote == message.from || (self.vote == nil && self.leader == nil)
            || (preVote && message.term > self.term)
        let granted = canVote && upToDate
        if granted && !preVote {
            self.vote = message.from
            self.electionElapsed = 0
        }
        self.send(
            to: message.from, term: granted && preVote ? message.term : self.term,
            .voteResponse(granted: granted, preVote: preVote))
    }

    // MARK: Replication (follower side)

    /// §5.3: accept entries that follow a matching (prevIndex, prevTerm), replacing any
    /// conflicting suffix; reject with a hint otherwise.
    mutating func handleAppend(
        from leader: NodeID,
        prevIndex: LogIndex,
        prevTerm: Term,
        entries: [RaftEntry],
        commit: LogIndex
    ) {
        if prevIndex < self.commitIndex {
            // Already committed here; acknowledge what we know matches.
            self.send(to: leader, term: self.term, .appendResponse(success: true, index: self.commitIndex, hintTerm: nil))
            return
        }
        guard self.log.matches(index: prevIndex, term: prevTerm) else {
            let hint: (LogIndex, Term?)
            if prevIndex > self.log.lastIndex {
                hint = (self.log.lastIndex, nil)
            } else {
                let conflictTerm = self.log.term(at: prevIndex)
                hint = (self.log.firstIndex(ofTermAt: prevIndex) - 1, conflictTerm)
            }
            self.send(to: leader, term: self.term, .appendResponse(success: false, index: hint.0, hintTerm: hint.1))
            return
        }
        var lastNew = prevIndex
        for entry in entries {
            lastNew = entry.index
            if let existing = self.log.term(at: entry.index) {
                if existing == entry.term { continue }
                precondition(entry.index > self.commitIndex, "leader tried to overwrite committed entry \(entry.index)")
                self.truncateLog(after: entry.index - 1)
            }
            self.appendEntry(entry)
        }
        self.commitTo(min(commit, lastNew))
        self.send(to: leader, term: self.term, .appendResponse(success: true, index: lastNew, hintTerm: nil))
    }

    mutating func handleSnapshot(from leader: NodeID, _ snapshot: RaftSnapshot) {
        guard snapshot.index > self.commitIndex else {
            self.send(to: leader, term: self.term, .appendResponse(success: true, index: self.commitIndex, hintTerm: nil))
            return
        }
        self.log.restore(index: snapshot.index, term: snapshot.term)
        self.snapshot = snapshot
        self.snapshotConfiguration = snapshot.configuration
        (self.configuration, self.configurationIndex) = self.log.configuration(snapshotConfiguration: snapshot.configuration)
        self.pendingSnapshot = snapshot
        self.commitIndex = snapshot.index
        // Entries kept after the snapshot (they agreed with it) were handed out before; the
        // snapshot itself goes out in the next Ready, before anything is applied after it.
        self.handedOutIndex = max(min(self.handedOutIndex, self.log.lastIndex), snapshot.index)
        self.persistedIndex = max(min(self.persistedIndex, self.log.lastIndex), snapshot.index)
        self.applyHandedOutIndex = snapshot.index
        self.send(to: leader, term: self.term, .appendResponse(success: true, index: snapshot.index, hintTerm: nil))
    }

    mutating func commitTo(_ index: LogIndex) {
        if index > self.commitIndex { self.commitIndex = index }
    }

    // MARK: Log changes

    mutating func appendToLog(_ payload: RaftEntry.Payload) {
        self.appendEntry(RaftEntry(term: self.term, index: self.log.lastIndex + 1, payload: payload))
    }

    mutating func appendEntry(_ entry: RaftEntry) {
        self.log.append(entry)
        if case .configuration(let configuration) = entry.payload {
            self.configuration = configuration
            self.configurationIndex = entry.index
            self.configurationChanged()
        }
    }

    mutating func truncateLog(after index: LogIndex) {
        self.log.truncate(after: index)
        self.handedOutIndex = min(self.handedOutIndex, index)
        self.persistedIndex = min(self.persistedIndex, index)
        if self.configurationIndex > index {
            (self.configuration, self.configurationIndex) = self.log.configuration(
                snapshotConfiguration: self.snapshotConfiguration)
            self.configurationChanged()
        }
    }

    mutating func configurationChanged() {
        guard self.role == .leader else { return }
        for voter in self.configuration.voters where voter != self.id && self.progress[voter] == nil {
            self.progress[voter] = Progress(next: self.log.lastIndex + 1)
        }
        for peer in self.progress.keys where !self.configuration.contains(peer) {
            self.progress[peer] = nil
        }
    }

    // MARK: Shell feedback

    /// Entries through `index` (with the given term at `index`) are durable.
    public mutating func persisted(through index: LogIndex, term: Term) {
        // A persisted notice for entries since replaced by a newer leader's is stale.
        guard self.log.term(at: index) == term, index > self.persistedIndex else { return }
        self.persistedIndex = min(index, self.log.lastIndex)
        if self.role == .leader { self.maybeCommit() }
    }

    /// The state machine applied entries through `index`.
    public mutating func applied(through index: LogIndex) {
        precondition(index <= self.applyHandedOutIndex, "applied \(index) before it was handed out")
        self.appliedIndex = max(self.appliedIndex, index)
        self.releaseReads()
    }

    /// Takes a snapshot the application made at `index` (≤ applied) and drops the entries it
    /// covers (§7).
    public mutating func compact(through index: LogIndex, data: [UInt8]) {
        precondition(index <= self.appliedIndex && index > self.log.snapshotIndex, "compact \(index) out of range")
        let snapshot = RaftSnapshot(
            index: index, term: self.log.term(at: index)!,
            configuration: self.log.configuration(at: index, snapshotConfiguration: self.snapshotConfiguration),
            data: data)
        self.log.compact(through: index)
        self.snapshot = snapshot
        self.snapshotConfiguration = snapshot.configuration
    }

    /// The latest snapshot (to persist after `compact`, or to send to a lagging follower).
    public var latestSnapshot: RaftSnapshot? { self.snapshot }

    // MARK: Ready

    /// Whether there is work for the shell.
    public var hasReady: Bool {
        self.hardState != self.lastHardState || self.pendingSnapshot != nil || self.handedOutIndex < self.log.lastIndex
            || !self.messages.isEmpty || !self.readStates.isEmpty || self.leader != self.lastReportedLeader
            || self.applyHandedOutIndex < min(self.commitIndex, self.persistedIndex)
    }

    /// Everything to do now (see `RaftReady`); hands each item out once.
    public mutating func ready() -> RaftReady {
        var ready = RaftReady()
        if self.hardState != self.lastHardState {
            ready.hardState = self.hardState
            self.lastHardState = self.hardState
        }
        ready.snapshot = self.pendingSnapshot
        self.pendingSnapshot = nil
        if self.handedOutIndex < self.log.lastIndex {
            ready.entries = self.log.entries(after: self.handedOutIndex, through: self.log.lastIndex)
            self.handedOutIndex = self.log.lastIndex
        }
        ready.messages = self.messages
        self.messages = []
        ready.readStates = self.readStates
        self.readStates = []
        // Apply only what is both committed and durable here.
        let applyThrough = min(self.commitIndex, self.persistedIndex, self.log.lastIndex)
        if self.applyHandedOutIndex < applyThrough {
            ready.committed = self.log.entries(after: self.applyHandedOutIndex, through: applyThrough)
            self.applyHandedOutIndex = applyThrough
        }
        if self.leader != self.lastReportedLeader {
            ready.leaderChange = .some(self.leader)
            self.lastReportedLeader = self.leader
        }
        return ready
    }

    mutating func send(to: NodeID, term: Term, _ kind: RaftMessage.Kind) {
        self.messages.append(RaftMessage(from: self.id, to: to, term: term, kind: kind))
    }
}
