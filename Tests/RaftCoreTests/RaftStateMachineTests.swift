import RafkaCore
import RafkaTestKit
import RaftCore
import Testing

/// Scenario tests of the Raft rules, each citing the section of the Raft paper (Ongaro and
/// Ousterhout 2014) or of Ongaro's thesis it checks. Runs use a fault-free simulated network
/// unless a test cuts links itself, so each is deterministic.
@Suite struct RaftStateMachineTests {
    static func quiet(nodes: Int = 3, voters: Int? = nil) -> SimRaftCluster.Options {
        var options = SimRaftCluster.Options()
        options.nodes = nodes
        options.initialVoters = voters
        options.faults = .init(delayTicks: 1...1)
        options.syncTicks = 0...0
        return options
    }

    static func electedCluster(seed: UInt64 = 1, nodes: Int = 3, voters: Int? = nil) -> SimRaftCluster {
        var cluster = SimRaftCluster(seed: seed, options: Self.quiet(nodes: nodes, voters: voters))
        _ = cluster.run(upTo: 200) { $0.leader != nil && $0.committedIndex > .zero }
        return cluster
    }

    // Raft §5.2: one leader is elected, and it stays while it can reach the others.
    @Test(arguments: [UInt64(1), 2, 3, 4, 5])
    func electsExactlyOneLeader(seed: UInt64) {
        var cluster = Self.electedCluster(seed: seed)
        let leader = cluster.leader
        #expect(leader != nil)
        let term = cluster.core(leader!)!.term
        cluster.run(ticks: 300)
        #expect(cluster.leader == leader, "a healthy leader keeps its role")
        #expect(cluster.core(leader!)!.term == term, "no needless elections")
        #expect(cluster.violations.isEmpty)
    }

    // Raft §5.2: a server grants at most one vote per term.
    @Test func grantsOneVotePerTerm() {
        let configuration = RaftConfiguration(voters: [NodeID(1), NodeID(2), NodeID(3)])
        var voter = RaftStateMachine(id: NodeID(1), initialConfiguration: configuration, seed: 1)
        for candidate in [NodeID(2), NodeID(3)] {
            voter.step(RaftMessage(
                from: candidate, to: NodeID(1), term: Term(5),
                kind: .voteRequest(lastIndex: .zero, lastTerm: .zero, preVote: false, transfer: false)))
        }
        let responses = voter.ready().messages.map(\.kind)
        #expect(responses == [.voteResponse(granted: true, preVote: false), .voteResponse(granted: false, preVote: false)])
        #expect(voter.vote == NodeID(2))
    }

    // Raft §5.4.1: a candidate whose log is behind a voter's does not get its vote.
    @Test func electionRestrictionRefusesStaleLogs() {
        let configuration = RaftConfiguration(voters: [NodeID(1), NodeID(2), NodeID(3)])
        let entries = [RaftEntry(term: Term(2), index: LogIndex(1), payload: .noop)]
        var voter = RaftStateMachine(
            id: NodeID(1), hardState: HardState(term: Term(2)), entries: entries, initialConfiguration: configuration, seed: 1)
        voter.step(RaftMessage(
            from: NodeID(2), to: NodeID(1), term: Term(3),
            kind: .voteRequest(lastIndex: LogIndex(5), lastTerm: Term(1), preVote: false, transfer: false)))
        #expect(voter.ready().messages.map(\.kind) == [.voteResponse(granted: false, preVote: false)])
        voter.step(RaftMessage(
            from: NodeID(3), to: NodeID(1), term: Term(3),
            kind: .voteRequest(lastIndex: LogIndex(1), lastTerm: Term(2), preVote: false, transfer: false)))
        #expect(voter.ready().messages.map(\.kind) == [.voteResponse(granted: true, preVote: false)])
    }

    // Raft §5.3: a follower's conflicting suffix is replaced by the leader's entries, and it
    // answers a mismatch with a hint that skips the conflicting term.
    @Test func conflictingEntriesAreReplaced() {
        let configuration = RaftConfiguration(voters: [NodeID(1), NodeID(2)])
        let stale = (1...4).map { RaftEntry(term: Term($0 <= 1 ? 1 : 2), index: LogIndex(UInt64($0)), payload: .noop) }
        var follower = RaftStateMachine(
            id: NodeID(2), hardState: HardState(term: Term(2), commit: LogIndex(1)), entries: stale,
            initialConfiguration: configuration, seed: 1)
        // The leader of term 3 has (1, t1), (2, t3): its probe at (2, t3) does not match.
        follower.step(RaftMessage(
            from: NodeID(1), to: NodeID(2), term: Term(3),
            kind: .append(prevIndex: LogIndex(2), prevTerm: Term(3), entries: [], commit: LogIndex(1))))
        #expect(follower.ready().messages.map(\.kind) == [.appendResponse(success: false, index: LogIndex(1), hintTerm: Term(2))])
        let replacement = [RaftEntry(term: Term(3), index: LogIndex(2), payload: .command([7]))]
        follower.step(RaftMessage(
            from: NodeID(1), to: NodeID(2), term: Term(3),
            kind: .append(prevIndex: LogIndex(1), prevTerm: Term(1), entries: replacement, commit: LogIndex(2))))
        let ready = follower.ready()
        #expect(ready.entries == replacement, "the conflicting suffix is replaced from index 2")
        #expect(follower.lastIndex == LogIndex(2))
        #expect(follower.entry(at: LogIndex(2)) == replacement[0])
        #expect(ready.messages.map(\.kind) == [.appendResponse(success: true, index: LogIndex(2), hintTerm: nil)])
    }

    // Raft §5.4.2 (Figure 8): a leader never commits an entry of an earlier term by counting
    // replicas; only entries of its own term commit that way (and carry earlier ones with them).
    @Test func earlierTermEntriesCommitOnlyWithACurrentTermEntry() {
        let configuration = RaftConfiguration(voters: (1...5).map { NodeID(Int32($0)) })
        let entries = [
            RaftEntry(term: Term(1), index: LogIndex(1), payload: .noop),
            RaftEntry(term: Term(2), index: LogIndex(2), payload: .command([2])),
        ]
        var leader = RaftStateMachine(
            id: NodeID(1), options: Self.quiet().raft, hardState: HardState(term: Term(3), commit: LogIndex(1)),
            entries: entries, initialConfiguration: configuration, seed: 1)
        // Win term 4 with the votes of S2 and S3 (S1 campaigns after its election timeout).
        for _ in 0..<40 where leader.role != .candidate {
            leader.tick()
            for message in leader.ready().messages {
                guard case .voteRequest(_, _, true, _) = message.kind, [2, 3].contains(message.to.rawValue) else { continue }
                leader.step(RaftMessage(from: message.to, to: NodeID(1), term: message.term, kind: .voteResponse(granted: true, preVote: true)))
            }
        }
        for voter in [NodeID(2), NodeID(3)] {
            leader.step(RaftMessage(from: voter, to: NodeID(1), term: leader.term, kind: .voteResponse(granted: true, preVote: false)))
        }
        #expect(leader.isLeader && leader.term == Term(4))
        let noop = leader.ready()
        leader.persisted(through: noop.entries.last!.index, term: noop.entries.last!.term)
        // S2 and S3 now hold index 2 (term 2): a majority with S1, but not of term 4.
        for follower in [NodeID(2), NodeID(3)] {
            leader.step(RaftMessage(from: follower, to: NodeID(1), term: Term(4), kind: .appendResponse(success: true, index: LogIndex(2), hintTerm: nil)))
        }
        #expect(leader.commitIndex == LogIndex(1), "index 2 is from term 2 and must not commit by replica count")
        for follower in [NodeID(2), NodeID(3)] {
            leader.step(RaftMessage(from: follower, to: NodeID(1), term: Term(4), kind: .appendResponse(success: true, index: LogIndex(3), hintTerm: nil)))
        }
        #expect(leader.commitIndex == LogIndex(3), "the term-4 entry commits, and index 2 with it")
    }

    // Raft §6 (thesis §4.1): single-server changes, one at a time; a new voter catches up and
    // counts, and a removed leader steps down once its removal commits.
    @Test func addAndRemoveVotersOneAtATime() {
        var cluster = Self.electedCluster(nodes: 4, voters: 3)
        let leader = cluster.leader!
        let added = cluster.proposeConfigurationChange(.addVoter(NodeID(4)), via: leader)
        #expect(added == .accepted(cluster.core(leader)!.lastIndex))
        let second = cluster.proposeConfigurationChange(.addVoter(NodeID(5)), via: leader)
        #expect(second == .configurationChangeInProgress)
        #expect(cluster.run(upTo: 300) { c in c.ids.allSatisfy { c.core($0)!.configuration.voters.count == 4 } && c.core(NodeID(4))!.commitIndex == c.core(leader)!.commitIndex })
        for i in 0..<10 { cluster.write("k", "v\(i)", via: cluster.leader!) }
        #expect(cluster.run(upTo: 100) { $0.store(NodeID(4))["k"] == "v9" })
        let removed = cluster.proposeConfigurationChange(.removeVoter(leader), via: leader)
        #expect(removed != .notLeader(nil))
        #expect(cluster.run(upTo: 400) { c in c.leader != nil && c.leader != leader && c.core(c.leader!)!.configuration.voters.count == 3 })
        #expect(cluster.core(leader)!.role == .follower)
        cluster.write("k", "after", via: cluster.leader!)
        #expect(cluster.run(upTo: 100) { $0.store(NodeID(4))["k"] == "after" })
        #expect(cluster.violations.isEmpty)
    }

    // Raft §7: a follower whose next entries were compacted away receives the snapshot.
    @Test func laggingFollowerCatchesUpFromASnapshot() {
        var cluster = Self.electedCluster()
        let leader = cluster.leader!
        let lagging = cluster.ids.first { $0 != leader }!
        cluster.network.isolate(lagging, among: cluster.ids)
        for i in 0..<60 {
            cluster.write("k\(i % 4)", "v\(i)", via: cluster.leader!)
            cluster.run(ticks: 2)
        }
        #expect(cluster.core(cluster.leader!)!.snapshotIndex > cluster.core(lagging)!.lastIndex, "the lagging entries were compacted")
        cluster.network.heal()
        #expect(cluster.run(upTo: 300) { $0.store(lagging) == $0.store($0.leader!) && $0.core(lagging)!.snapshotIndex > .zero })
        #expect(cluster.violations.isEmpty)
    }

    // Thesis §9.6: with pre-vote, a server cut off for a long time does not raise its term, so
    // rejoining does not depose a healthy leader.
    @Test func preVoteKeepsAnIsolatedServerFromDisruptingOnReturn() {
        var cluster = Self.electedCluster()
        let leader = cluster.leader!
        let term = cluster.core(leader)!.term
        let outsider = cluster.ids.first { $0 != leader }!
        cluster.network.isolate(outsider, among: cluster.ids)
        cluster.run(ticks: 500)
        #expect(cluster.core(outsider)!.term == term)
        cluster.network.heal()
        cluster.run(ticks: 100)
        #expect(cluster.leader == leader)
        #expect(cluster.core(leader)!.term == term)
    }

    // Thesis §4.2.3 with §9.6: a voter that heard from the dead leader a tick later than the
    // pre-candidate still holds its lease and drops the pre-vote without an answer. The
    // pre-candidate asks the silent voters again each heartbeat, so failover costs one election
    // timeout plus a tick, not two election timeouts.
    @Test func preCandidateAsksSilentVotersAgain() {
        let configuration = RaftConfiguration(voters: [NodeID(1), NodeID(2), NodeID(3)])
        var server = RaftStateMachine(id: NodeID(1), initialConfiguration: configuration, seed: 7)
        for _ in 0..<40 where server.role != .preCandidate { server.tick() }
        #expect(server.role == .preCandidate)
        #expect(Set(server.ready().messages.map(\.to)) == [NodeID(2), NodeID(3)])
        server.step(RaftMessage(from: NodeID(3), to: NodeID(1), term: .zero, kind: .voteResponse(granted: false, preVote: true)))
        server.tick()
        let again = server.ready().messages
        #expect(again.map(\.to) == [NodeID(2)], "only the voter that has not answered is asked again")
        #expect(again.map(\.kind) == [.voteRequest(lastIndex: .zero, lastTerm: .zero, preVote: true, transfer: false)])
        server.step(RaftMessage(from: NodeID(2), to: NodeID(1), term: Term(1), kind: .voteResponse(granted: true, preVote: true)))
        #expect(server.role == .candidate && server.term == Term(1))
    }

    // Thesis §6.2 (check-quorum): a leader that cannot reach a majority steps down, so it stops
    // accepting writes it could never commit; the majority elects a new leader meanwhile.
    @Test func isolatedLeaderStepsDown() {
        var cluster = Self.electedCluster(nodes: 5)
        let old = cluster.leader!
        cluster.network.isolate(old, among: cluster.ids)
        #expect(cluster.run(upTo: 100) { $0.core(old)!.role == .follower })
        #expect(cluster.run(upTo: 200) { c in c.leadersNow.contains { $0 != old } })
        let accepted = cluster.write("x", "1", via: old)
        #expect(!accepted, "the deposed leader refuses writes")
        #expect(cluster.violations.isEmpty)
    }

    // Thesis §3.10: leadership transfer hands over to an up-to-date voter.
    @Test func leadershipTransfer() {
        var cluster = Self.electedCluster()
        let leader = cluster.leader!
        let target = cluster.ids.first { $0 != leader }!
        let transfer = cluster.transferLeadership(from: leader, to: target)
        #expect(transfer != .notLeader(nil))
        #expect(cluster.run(upTo: 50) { $0.leader == target })
        #expect(cluster.violations.isEmpty)
    }

    // Thesis §6.4: a read is served only after a heartbeat round confirms leadership; a leader
    // cut off from the majority cannot confirm one.
    @Test func readIndexNeedsAQuorumRound() {
        var cluster = Self.electedCluster()
        let leader = cluster.leader!
        cluster.write("k", "v", via: leader)
        _ = cluster.run(upTo: 50) { $0.store(leader)["k"] == "v" }
        let first = cluster.read("k", via: leader)
        #expect(first)
        #expect(cluster.run(upTo: 20) { $0.history.last!.completedAt != nil })
        #expect(cluster.history.last!.kind == .read("v"))
        cluster.network.isolate(leader, among: cluster.ids)
        let second = cluster.read("k", via: leader)
        #expect(second)
        cluster.run(ticks: 30)
        #expect(cluster.history.last!.completedAt == nil, "no quorum, no read")
        #expect(cluster.linearizabilityViolation == nil)
    }
}
