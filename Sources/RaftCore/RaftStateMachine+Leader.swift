import RafkaCore

/// The leader's view of one follower's log.
struct Progress: Sendable, Equatable {
    enum State: Sendable, Equatable {
        /// Looking for where the logs agree: one AppendEntries at a time.
        case probe
        /// Logs agree up to `match`: AppendEntries are pipelined.
        case replicate
        /// The follower needs the snapshot at this index (its next entry was compacted away).
        case snapshot(LogIndex)
    }

    var match: LogIndex = .zero
    var next: LogIndex
    var state: State = .probe
    /// Last index of each unacknowledged AppendEntries in replicate mode.
    var inflight: [LogIndex] = []
    /// In probe mode: a message is out; wait for its answer (or the next heartbeat's).
    var probeSent = false
    /// Heard from since the last check-quorum round.
    var recentActive = false
    /// Ticks since a snapshot was sent without an answer; it is sent again after an election
    /// timeout (the message or the follower may have been lost).
    var snapshotTicks = 0

    init(next: LogIndex) {
        self.next = next
    }
}

/// Reads waiting for the leader to confirm it is still the leader (§6.4).
struct ReadIndexQueue: Sendable, Equatable {
    struct Pending: Sendable, Equatable {
        var id: UInt64
        var index: LogIndex
        var round: UInt64
    }

    /// The heartbeat round the latest reads ride on.
    var round: UInt64 = 0
    var pending: [Pending] = []
    /// Reads that arrived before the leader committed an entry of its term.
    var waitingForCommit: [UInt64] = []
    /// The highest round each voter acknowledged.
    var acknowledged: [NodeID: UInt64] = [:]

    mutating func failAll() {
        self.pending = []
        self.waitingForCommit = []
        self.acknowledged = [:]
    }
}

/// What a proposal became.
public enum ProposalResult: Sendable, Equatable {
    case accepted(LogIndex)
    /// Not the leader; the known leader, if any, should be asked.
    case notLeader(NodeID?)
    /// A leadership transfer is under way; retry with the new leader.
    case transferring
    /// A configuration change is uncommitted, or the leader has not yet committed an entry of
    /// its term (§6 allows one change at a time; the latter is Ongaro's 2015 correction).
    case configurationChangeInProgress
    /// The change is a no-op (adding a voter that is one, removing one that is not).
    case unchanged
}

/// A single-server membership change (§6, thesis §4.1).
public enum ConfigurationChange: Sendable, Equatable {
    case addVoter(NodeID)
    case removeVoter(NodeID)
}

extension RaftStateMachine {
    // MARK: Proposals

    /// Appends an application command (leader only).
    public mutating func propose(_ command: [UInt8]) -> ProposalResult {
        guard self.role == .leader else { return .notLeader(self.leader) }
        guard self.transferee == nil else { return .transferring }
        self.appendToLog(.command(command))
        self.broadcastAppend()
        return .accepted(self.log.lastIndex)
    }

    /// Proposes adding or removing one voter. The new configuration is used as soon as it is
    /// appended (§6); a leader that removes itself steps down once the change commits.
    public mutating func proposeConfigurationChange(_ change: ConfigurationChange) -> ProposalResult {
        guard self.role == .leader else { return .notLeader(self.leader) }
        guard self.transferee == nil else { return .transferring }
        guard self.configurationIndex <= self.commitIndex, self.log.term(at: self.commitIndex) == self.term else {
            return .configurationChangeInProgress
        }
        let next: RaftConfiguration
        switch change {
        case .addVoter(let node):
            guard !self.configuration.contains(node) else { return .unchanged }
            next = self.configuration.adding(node)
        case .removeVoter(let node):
            guard self.configuration.contains(node), self.configuration.voters.count > 1 else { return .unchanged }
            next = self.configuration.removing(node)
        }
        self.appendToLog(.configuration(next))
        self.broadcastAppend()
        return .accepted(self.log.lastIndex)
    }

    /// Hands leadership to `target` (thesis §3.10): stop taking proposals, bring it up to date,
    /// then tell it to campaign.
    public mutating func transferLeadership(to target: NodeID) -> ProposalResult {
        guard self.role == .leader else { return .notLeader(self.leader) }
        guard target != self.id, self.configuration.contains(target), let progress = self.progress[target] else {
            return .unchanged
        }
        self.transferee = target
        self.transferElapsed = 0
        if progress.match == self.log.lastIndex {
            self.send(to: target, term: self.term, .timeoutNow)
        } else {
            self.sendAppend(to: target, sendIfEmpty: true)
        }
        return .accepted(self.log.lastIndex)
    }

    /// Asks for a linearizable read (§6.4). On the leader, the read's index is the commit index
    /// now; it is released as a `ReadState` once a majority confirms this server still leads
    /// (a heartbeat round). The shell serves it once it applied that index.
    public mutating func readIndex(requestID: UInt64) -> ProposalResult {
        guard self.role == .leader else { return .notLeader(self.leader) }
        guard self.log.term(at: self.commitIndex) == self.term else {
            self.reads.waitingForCommit.append(requestID)
            return .accepted(self.commitIndex)
        }
        if self.configuration.voters == [self.id] {
            self.readStates.append(ReadState(requestID: requestID, index: self.commitIndex))
            return .accepted(self.commitIndex)
        }
        self.reads.round += 1
        self.reads.pending.append(.init(id: requestID, index: self.commitIndex, round: self.reads.round))
        self.broadcastHeartbeat()
        return .accepted(self.commitIndex)
    }

    // MARK: Sending

    mutating func broadcastAppend() {
        for peer in self.configuration.voters where peer != self.id {
            self.sendAppend(to: peer, sendIfEmpty: true)
        }
    }

    /// Counts ticks for snapshots in flight; one unanswered for an election timeout is sent again.
    mutating func tickSnapshots() {
        for (peer, var progress) in self.progress {
            guard case .snapshot = progress.state else { continue }
            progress.snapshotTicks += 1
            if progress.snapshotTicks >= self.options.electionTicks {
                progress.state = .probe
                progress.probeSent = false
            }
            self.progress[peer] = progress
        }
    }

    mutating func broadcastHeartbeat() {
        for peer in self.configuration.voters where peer != self.id {
            guard let progress = self.progress[peer] else { continue }
            self.send(
                to: peer, term: self.term,
                .heartbeat(commit: min(progress.match, self.commitIndex), readRound: self.reads.round))
        }
    }

    /// Sends `peer` what it is missing: entries from its next index, or the snapshot when those
    /// were compacted away. Respects probe and pipeline limits.
    mutating func sendAppend(to peer: NodeID, sendIfEmpty: Bool) {
        guard var progress = self.progress[peer] else { return }
        switch progress.state {
        case .snapshot:
            return
        case .probe where progress.probeSent:
            return
        case .replicate where progress.inflight.count >= self.options.maxInflightAppends:
            return
        default:
            break
        }
        let prevIndex = progress.next - 1
        guard let prevTerm = self.log.term(at: prevIndex) else {
            guard let snapshot = self.snapshot else { return }
            progress.state = .snapshot(snapshot.index)
            progress.snapshotTicks = 0
            self.progress[peer] = progress
            self.send(to: peer, term: self.term, .installSnapshot(snapshot))
            return
        }
        let entries = self.log.entries(from: progress.next, count: self.options.maxEntriesPerAppend)
        if entries.isEmpty && !sendIfEmpty { return }
        self.send(to: peer, term: self.term, .append(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: self.commitIndex))
        switch progress.state {
        case .replicate:
            if let last = entries.last {
                progress.next = last.index + 1
                progress.inflight.append(last.index)
            }
        case .probe:
            progress.probeSent = true
        case .snapshot:
            break
        }
        self.progress[peer] = progress
    }

    // MARK: Responses

    mutating func handleAppendResponse(from peer: NodeID, success: Bool, index: LogIndex, hintTerm: Term?) {
        guard self.role == .leader, var progress = self.progress[peer] else { return }
        progress.recentActive = true
        if success {
            progress.match = max(progress.match, index)
            progress.next = max(progress.next, progress.match + 1)
            progress.inflight.removeAll { $0 <= index }
            progress.probeSent = false
            if progress.state != .replicate {
                progress.state = .replicate
                progress.inflight = []
                progress.next = progress.match + 1
            }
            self.progress[peer] = progress
            self.maybeCommit()
            if self.transferee == peer && progress.match == self.log.lastIndex {
                self.send(to: peer, term: self.term, .timeoutNow)
            }
            self.sendAppend(to: peer, sendIfEmpty: false)
        } else {
            // §5.3: back off to the follower's hint (its last index, or just before the first
            // entry of the conflicting term), never below what is known to match.
            guard index >= progress.match || progress.state != .replicate else {
                self.progress[peer] = progress
                return
            }
            progress.next = max(progress.match + 1, min(index + 1, self.log.lastIndex + 1))
            progress.state = .probe
            progress.inflight = []
            progress.probeSent = false
            self.progress[peer] = progress
            self.sendAppend(to: peer, sendIfEmpty: true)
        }
    }

    mutating func handleHeartbeatResponse(from peer: NodeID, readRound: UInt64) {
        guard self.role == .leader, var progress = self.progress[peer] else { return }
        progress.recentActive = true
        progress.probeSent = false
        if progress.state == .replicate && progress.inflight.count >= self.options.maxInflightAppends {
            // The follower is alive but the pipeline is full: some appends were lost. Make room
            // for one; a gap makes the follower reject it and the leader probes again (§5.3).
            progress.inflight.removeFirst()
        }
        self.progress[peer] = progress
        if progress.match < self.log.lastIndex { self.sendAppend(to: peer, sendIfEmpty: true) }
        self.reads.acknowledged[peer] = max(self.reads.acknowledged[peer] ?? 0, readRound)
        self.releaseConfirmedReads()
    }

    /// Releases reads whose round a majority (this leader included) has acknowledged.
    mutating func releaseConfirmedReads() {
        guard !self.reads.pending.isEmpty else { return }
        var rounds = self.configuration.voters.map { $0 == self.id ? UInt64.max : (self.reads.acknowledged[$0] ?? 0) }
        rounds.sort(by: >)
        let confirmed = rounds[self.quorum - 1]
        while let first = self.reads.pending.first, first.round <= confirmed {
            self.readStates.append(ReadState(requestID: first.id, index: first.index))
            self.reads.pending.removeFirst()
        }
    }

    /// The read path has nothing to release on apply: the shell waits for the index itself.
    mutating func releaseReads() {}

    // MARK: Commitment

    /// §5.3, §5.4.2: the commit index is the highest index stored on a majority, counting only
    /// when that entry is from the current term.
    mutating func maybeCommit() {
        guard self.role == .leader else { return }
        var matches = self.configuration.voters.map { $0 == self.id ? self.persistedIndex : (self.progress[$0]?.match ?? .zero) }
        matches.sort(by: >)
        let candidate = matches[self.quorum - 1]
        guard candidate > self.commitIndex, self.log.term(at: candidate) == self.term else { return }
        let hadCommittedInTerm = self.log.term(at: self.commitIndex) == self.term
        self.commitIndex = candidate
        if !hadCommittedInTerm && !self.reads.waitingForCommit.isEmpty {
            let waiting = self.reads.waitingForCommit
            self.reads.waitingForCommit = []
            for id in waiting { _ = self.readIndex(requestID: id) }
        }
        if !self.configuration.contains(self.id) && self.configurationIndex <= self.commitIndex {
            // The change removing this leader committed: hand over by stepping down (§6).
            self.broadcastAppend()
            self.becomeFollower(term: self.term, leader: nil)
            return
        }
        self.broadcastAppend()
    }
}
