import ChordCore
import RafkaCore
import RafkaTestKit
import Testing

@Suite struct RingPlacementTests {
    @Test func arcsWrapAroundTheRing() {
        let high = RingPosition(UInt64.max - 10)
        let low = RingPosition(5)
        #expect(RingPosition(2).isIn(after: high, through: low), "the arc (max-10, 5] wraps through zero")
        #expect(low.isIn(after: high, through: low), "the arc includes its end")
        #expect(!high.isIn(after: high, through: low), "and excludes its start")
        #expect(!RingPosition(100).isIn(after: high, through: low))
        #expect(RingPosition(100).isIn(after: low, through: low), "(a, a] is the whole ring")
        #expect(!low.isStrictly(after: high, before: low))
        #expect(high.distance(to: low) == 16)
    }

    @Test func replicasAreTheFirstDistinctNodesClockwise() {
        let ring = RingMap(tokens: [
            NodeID(1): [RingPosition(100), RingPosition(110)],
            NodeID(2): [RingPosition(200)],
            NodeID(3): [RingPosition(300)],
        ])
        #expect(ring.replicas(of: RingPosition(50), count: 3) == [NodeID(1), NodeID(2), NodeID(3)], "node 1's second token is skipped")
        #expect(ring.replicas(of: RingPosition(150), count: 2) == [NodeID(2), NodeID(3)])
        #expect(ring.replicas(of: RingPosition(301), count: 2) == [NodeID(1), NodeID(2)], "past the last token, the ring wraps")
        #expect(ring.replicas(of: RingPosition(200), count: 1) == [NodeID(2)], "a token owns its own position")
        #expect(ring.replicas(of: RingPosition(50), count: 5).count == 3, "never more replicas than nodes")
    }

    @Test func replicasSpreadOverRacksFirst() {
        let ring = RingMap(
            tokens: [
                NodeID(1): [RingPosition(100)], NodeID(2): [RingPosition(200)], NodeID(3): [RingPosition(300)],
                NodeID(4): [RingPosition(400)],
            ],
            racks: [NodeID(1): "a", NodeID(2): "a", NodeID(3): "b", NodeID(4): "b"])
        #expect(ring.replicas(of: RingPosition(50), count: 2) == [NodeID(1), NodeID(3)], "node 2 shares node 1's rack")
        #expect(ring.replicas(of: RingPosition(50), count: 3) == [NodeID(1), NodeID(3), NodeID(2)], "then the passed-over nodes, in ring order")
        #expect(ring.replicas(of: RingPosition(250), count: 4) == [NodeID(3), NodeID(1), NodeID(4), NodeID(2)])
    }

    @Test func partitionKeysAndTokensAreStable() {
        // Persisted and compared between nodes: these values must never change.
        #expect(RingHash.partitionKey(topicID: (1, 2), partition: 0) == RingHash.partitionKey(topicID: (1, 2), partition: 0))
        #expect(RingHash.partitionKey(topicID: (1, 2), partition: 0) != RingHash.partitionKey(topicID: (1, 2), partition: 1))
        #expect(RingHash.tokens(node: NodeID(7), count: 8) == RingHash.tokens(node: NodeID(7), count: 8))
        #expect(RingHash.tokens(node: NodeID(7), count: 8).count == 8)
    }

    /// The allocator gives a newcomer its fair share, taken from the most loaded members.
    @Test func allocatedTokensKeepOwnershipEven() {
        let ring = RingStatistics.ring(nodes: 50, tokensPerNode: 8, allocated: true)
        let shares = ring.ownership().values
        #expect(abs(shares.reduce(0, +) - 1) < 1e-9)
        #expect(shares.max()! / (1.0 / 50) < 1.1, "the largest share is within 10% of the mean: \(shares.max()! * 50)")
        #expect(ring.entries.count == 400 && Set(ring.entries.map(\.position)).count == 400, "tokens are distinct")
        var allocator = TokenAllocator(ring: ring)
        let tokens = allocator.allocate(for: NodeID(51), count: 8)
        var after = ring.entries.reduce(into: [NodeID: [RingPosition]]()) { $0[$1.node, default: []].append($1.position) }
        after[NodeID(51)] = tokens
        let joined = RingMap(tokens: after)
        let share = joined.ownership()[NodeID(51)]!
        #expect(abs(share - 1.0 / 51) < 0.001, "the newcomer owns 1/51: \(share)")
    }

    /// A join moves the newcomer's share of leaders, and about as much of the replicas.
    @Test func aJoinMovesOnlyTheNewcomersShare() {
        let before = RingStatistics.ring(nodes: 40, tokensPerNode: 16, allocated: true)
        let after = RingStatistics.ring(nodes: 41, tokensPerNode: 16, allocated: true)
        let keys = RingStatistics.partitionKeys(count: 20_000, seed: 3)
        let moved = RingStatistics.movement(from: before, to: after, keys: keys, replicationFactor: 3)
        #expect(moved.leaders <= 1.2 / 40, "leaders moved: \(moved.leaders)")
        #expect(moved.replicas <= 1.2 / 40, "replicas moved: \(moved.replicas)")
    }
}
