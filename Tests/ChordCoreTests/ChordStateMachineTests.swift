import ChordCore
import RafkaCore
import RafkaTestKit
import Testing

/// The Chord rules on small rings, citing the paper's sections (Stoica et al. 2001).
@Suite struct ChordStateMachineTests {
    static func options(nodes: Int, tokens: Int = 4) -> SimChordRing.Options {
        var options = SimChordRing.Options()
        options.nodes = nodes
        options.tokensPerNode = tokens
        return options
    }

    /// Chord §4.2: with correct successors, a lookup reaches the key's owner by closing in.
    @Test func lookupsFindTheOwner() {
        var ring = SimChordRing(seed: 1, options: Self.options(nodes: 50))
        let report = ring.checkLookups(count: 300)
        #expect(report.correct == 300, "wrong \(report.wrong), failed \(report.failed)")
        #expect(ring.inconsistentTokens().isEmpty)
    }

    /// Chord §4.4: a node that joins through any member finds its successors, and
    /// stabilize/notify splice it into the ring.
    @Test func aJoiningNodeIsSplicedIn() {
        var ring = SimChordRing(seed: 2, options: Self.options(nodes: 20))
        let node = ring.join()
        ring.run(ticks: 40)
        #expect(ring.inconsistentTokens().isEmpty, "every token's successor is right after the join")
        let report = ring.checkLookups(count: 200)
        #expect(report.correct == 200, "wrong \(report.wrong), failed \(report.failed)")
        #expect(ring.machines[node]!.view.allSatisfy { $0.predecessor != nil }, "the newcomer learnt its predecessors")
    }

    /// Chord §5.2: successor lists let the ring route around a failed node; the controllers
    /// fence it once a neighbour suspects it, and every node forgets it.
    @Test func aCrashedNodeIsRoutedAroundAndFenced() {
        var ring = SimChordRing(seed: 3, options: Self.options(nodes: 20))
        let victim = ring.randomRunningMember()
        ring.crash(victim)
        ring.run(ticks: 40)
        #expect(!ring.members.contains(victim), "suspected by a neighbour, confirmed and fenced")
        #expect(ring.inconsistentTokens().isEmpty)
        let report = ring.checkLookups(count: 200)
        #expect(report.correct == 200, "wrong \(report.wrong), failed \(report.failed)")
    }

    /// A controlled leave: the node's neighbours stop routing to it at once, without waiting
    /// for timeouts; once the controllers remove it, nobody refers to it.
    @Test func aLeavingNodeIsForgottenAtOnce() {
        var ring = SimChordRing(seed: 4, options: Self.options(nodes: 20))
        let leaver = ring.randomRunningMember()
        let others = { (ring: SimChordRing) in ring.machines.filter { $0.key != leaver && ring.running.contains($0.key) }.values }
        ring.leave(leaver)
        ring.run(ticks: 2)
        let stillSucceeding = others(ring).filter { machine in machine.view.contains { $0.successor.node == leaver } }
        #expect(stillSucceeding.isEmpty, "\(stillSucceeding.count) nodes still have the leaver as a token's successor")
        ring.run(ticks: ring.options.fenceDelayTicks)
        let stillKnowing = others(ring).filter { machine in
            machine.view.contains { $0.successors.contains { $0.node == leaver } || $0.predecessor?.node == leaver }
        }
        #expect(stillKnowing.isEmpty, "\(stillKnowing.count) nodes still refer to the leaver after it was removed")
        ring.run(ticks: 20)
        #expect(ring.inconsistentTokens().isEmpty)
    }

    /// A node the controllers fenced is not routed to, and its messages are ignored, until it
    /// is admitted again.
    @Test func fencedNodesAreIgnored() {
        var machine = ChordStateMachine(node: NodeID(1), tokens: [RingPosition(100)])
        let view = RingMap(tokens: [NodeID(1): [RingPosition(100)], NodeID(2): [RingPosition(200)]])
        machine.seed(view)
        #expect(machine.route(RingPosition(150)) == .owner(RingEntry(position: RingPosition(200), node: NodeID(2))))
        machine.fence(NodeID(2))
        #expect(machine.route(RingPosition(150)) == .owner(RingEntry(position: RingPosition(100), node: NodeID(1))))
        machine.receive(ChordMessage(from: NodeID(2), to: NodeID(1), kind: .ping(requestID: 9)))
        #expect(machine.ready().messages.isEmpty, "no answer to a fenced node")
        machine.admit(NodeID(2))
        machine.receive(ChordMessage(from: NodeID(2), to: NodeID(1), kind: .ping(requestID: 9)))
        #expect(machine.ready().messages.map(\.kind) == [.pong(requestID: 9)])
    }

    /// Hostile or stale input — answers nobody asked for, notifies naming someone else, tokens
    /// the node does not have — changes nothing.
    @Test func unsolicitedMessagesChangeNothing() {
        var machine = ChordStateMachine(node: NodeID(1), tokens: [RingPosition(100), RingPosition(500)])
        machine.seed(RingMap(tokens: [NodeID(1): [RingPosition(100), RingPosition(500)], NodeID(2): [RingPosition(300)]]))
        let before = machine.view.map(\.successor)
        let stranger = RingEntry(position: RingPosition(200), node: NodeID(3))
        machine.receive(ChordMessage(
            from: NodeID(3), to: NodeID(1),
            kind: .neighbors(requestID: 77, position: RingPosition(300), predecessor: stranger, successor: stranger, successors: [stranger])))
        machine.receive(ChordMessage(from: NodeID(3), to: NodeID(1), kind: .lookupStep(requestID: 78, answer: .owner(stranger))))
        machine.receive(ChordMessage(from: NodeID(3), to: NodeID(1), kind: .notify(position: RingPosition(100), candidate: RingEntry(position: RingPosition(50), node: NodeID(4)))))
        machine.receive(ChordMessage(from: NodeID(3), to: NodeID(1), kind: .getNeighbors(requestID: 79, position: RingPosition(999))))
        #expect(machine.view.map(\.successor) == before)
        #expect(machine.view.first!.predecessor?.node != NodeID(4), "a notify must come from the candidate itself")
        let ready = machine.ready()
        #expect(ready.messages.isEmpty && ready.lookups.isEmpty)
    }

    /// Heavy loss makes each node of a two-node ring suspect the other (neither is dead, so
    /// neither is fenced); once messages flow again they find each other and every lookup is
    /// right: a node cut off claims no arcs meanwhile and rejoins through the other.
    @Test(arguments: [UInt64(1), 2, 3])
    func aTwoNodeRingRecoversFromFalseSuspicion(seed: UInt64) {
        var options = SimChordRing.Options()
        options.nodes = 2
        options.tokensPerNode = 16
        options.messageLoss = 0.6
        var ring = SimChordRing(seed: seed, options: options)
        ring.run(ticks: 40)
        ring.options.messageLoss = 0
        ring.run(ticks: 80)
        #expect(ring.inconsistentTokens().isEmpty, "\(ring.inconsistentTokens().prefix(3))")
        #expect(ring.checkLookups(count: 200).correct == 200)
    }

    /// An answer is taken only from the node asked: a pong or a neighbours answer from another
    /// node, or of another kind under the same id, changes nothing.
    @Test func answersFromTheWrongNodeAreIgnored() {
        var machine = ChordStateMachine(node: NodeID(1), tokens: [RingPosition(100)])
        machine.seed(RingMap(tokens: [NodeID(1): [RingPosition(100)], NodeID(2): [RingPosition(200)], NodeID(3): [RingPosition(300)]]))
        for _ in 0..<4 { machine.tick() }
        let pings = machine.ready().messages.filter { if case .ping = $0.kind { return true } else { return false } }
        guard let ping = pings.first, case .ping(let id) = ping.kind else {
            Issue.record("no check-predecessor ping after four ticks")
            return
        }
        let awaited = machine.pendingRequestCount
        machine.receive(ChordMessage(from: NodeID(2), to: NodeID(1), kind: .pong(requestID: id)))  // not the one asked
        machine.receive(ChordMessage(from: ping.to, to: NodeID(1), kind: .lookupStep(requestID: id, answer: .unknown)))  // wrong kind
        #expect(machine.pendingRequestCount == awaited, "the ping is still awaited")
        machine.receive(ChordMessage(from: ping.to, to: NodeID(1), kind: .pong(requestID: id)))
        #expect(machine.pendingRequestCount == awaited - 1, "the right pong answers it")
    }
}
