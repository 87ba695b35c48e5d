import ChordCore
import Foundation
import KafkaProtocol
import RafkaCore
@testable import RafkaStorage
import RaftCore
import Testing

/// Per-partition leader epochs: a membership change gives a new epoch to the partitions whose
/// leader it changes and to no other, the same whether an image is replayed or restored.
@Suite struct LeaderEpochMapTests {
    static let strict = TopicMetadata(name: "s", id: KafkaUUID(high: 1, low: 2), partitionCount: 300, replicationFactor: 1, configs: [:])
    static let unclean = TopicMetadata(
        name: "u", id: KafkaUUID(high: 3, low: 4), partitionCount: 300, replicationFactor: 1,
        configs: ["unclean.leader.election.enable": "true"])

    /// Every partition of both topics: its leader (with the leader's incarnation) and epoch.
    static func leadership(_ image: MetadataImage) -> [String: (PartitionPlacement.Leader, Int64?, Int32)] {
        let placement = PartitionPlacement(image: image)
        var result: [String: (PartitionPlacement.Leader, Int64?, Int32)] = [:]
        for topic in [Self.strict, Self.unclean] {
            for partition in 0..<topic.partitionCount {
                let leader = placement.leader(of: topic, partition: partition)
                var incarnation: Int64?
                if case .node(let node) = leader { incarnation = image.nodes[node]?.incarnation }
                result["\(topic.name)-\(partition)"] = (leader, incarnation, placement.leaderEpoch(of: topic, partition: partition))
            }
        }
        return result
    }

    static func registration(_ id: Int32, incarnation: Int64? = nil, joining: Bool = false) -> NodeRegistration {
        var registration = MetadataImageTests.registration(id)
        if let incarnation { registration.incarnation = incarnation }
        registration.joining = joining
        return registration
    }

    /// Joins, leaves, fencings and restarts: after each, exactly the partitions whose leader
    /// (or its incarnation) changed have the new ring epoch; every other keeps its epoch.
    @Test func onlyPartitionsWhoseLeaderChangedGetANewEpoch() throws {
        var image = MetadataImage(clusterID: "c", topics: [Self.strict, Self.unclean])
        var offset: UInt64 = 0
        var steps: [(String, MetadataChange)] = [("tracking starts", .trackLeaderEpochs)]
        steps += (1...4).map { ("node \($0) registers", .registerNode(Self.registration($0))) }
        steps += [
            ("node 5 registers, joining", .registerNode(Self.registration(5, joining: true))),
            ("node 5 is activated", .activateNode(id: NodeID(5), incarnation: 50)),
            ("node 3 leaves", .nodeLeaving(id: NodeID(3), incarnation: 30)),
            ("node 3 is unregistered", .unregisterNode(id: NodeID(3))),
            ("node 2 is fenced", .fenceNode(id: NodeID(2), incarnation: 20)),
            ("node 2 comes back restarted", .registerNode(Self.registration(2, incarnation: 99))),
            ("node 3 comes back", .registerNode(Self.registration(3, incarnation: 120))),
            ("node 4 is fenced", .fenceNode(id: NodeID(4), incarnation: 40)),
            ("node 4 is unfenced", .unfenceNode(id: NodeID(4), incarnation: 40)),
        ]
        var moved = 0
        var kept = 0
        for (step, change) in steps {
            let before = Self.leadership(image)
            offset += 1
            change.apply(to: &image, at: LogIndex(offset))
            let after = Self.leadership(image)
            for (partition, (leader, incarnation, epoch)) in after {
                let (oldLeader, oldIncarnation, oldEpoch) = before[partition]!
                #expect(epoch >= oldEpoch, "\(step): \(partition)'s epoch went back")
                if leader != oldLeader || incarnation != oldIncarnation {
                    #expect(epoch == Int32(image.ringEpoch), "\(step): \(partition) moved (\(oldLeader) → \(leader)) without a new epoch")
                    moved += 1
                } else if case .node = leader {
                    #expect(epoch == oldEpoch, "\(step): \(partition) stayed on \(leader) but its epoch changed")
                    kept += 1
                }
            }
        }
        // The walk moved some partitions at every step and left most alone.
        #expect(moved > 300 && kept > moved, "moved \(moved), kept \(kept)")
        // A joining registration changes no leader and no epoch.
        var joined = image
        let epochs = Self.leadership(image).mapValues(\.2)
        MetadataChange.registerNode(Self.registration(6, joining: true)).apply(to: &joined, at: LogIndex(offset + 1))
        #expect(joined.ringEpoch == image.ringEpoch + 1)
        #expect(Self.leadership(joined).mapValues(\.2) == epochs)
    }

    /// A snapshot keeps the map (a node that starts from one agrees with the nodes that replayed
    /// the log); a snapshot from before the map starts every partition at its ring epoch.
    @Test func snapshotsKeepEpochs() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var image = MetadataImage(clusterID: "c", topics: [Self.strict])
        let changes: [MetadataChange] =
            [.trackLeaderEpochs] + (1...3).map { .registerNode(Self.registration($0)) }
            + [.fenceNode(id: NodeID(1), incarnation: 10), .registerNode(Self.registration(4))]
        for (index, change) in changes.enumerated() { change.apply(to: &image, at: LogIndex(UInt64(index + 1))) }
        #expect(try #require(image.leaderEpochs).arcs.count > 1)
        let bytes = try MetadataSnapshotCodec.encode(image, scratchDirectory: directory.path)
        let restored = try MetadataSnapshotCodec.decode(bytes, scratchDirectory: directory.path)
        #expect(restored == image)

        let path = directory.path + "/old.db"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let database = try SQLiteDatabase(path: path, journal: false)
        try database.execute("DROP TABLE leader_epochs")
        database.close()
        let old = try MetadataSnapshotCodec.decode(Array(try Data(contentsOf: URL(fileURLWithPath: path))), scratchDirectory: directory.path)
        #expect(old.leaderEpochs == nil)
        #expect(Set(Self.leadership(old).values.map(\.2)) == [Int32(image.ringEpoch)])
    }

    /// A cluster begun by a version without per-partition epochs reported the ring epoch for
    /// every partition; tracking starts there, so no partition's epoch goes back, and from then
    /// on only moved partitions get new ones.
    @Test func trackingStartsAtTheRingEpoch() {
        var image = MetadataImage(clusterID: "c", topics: [Self.strict])
        for id in Int32(1)...3 { MetadataChange.registerNode(Self.registration(id)).apply(to: &image, at: LogIndex(UInt64(id))) }
        #expect(image.leaderEpochs == nil && Set(Self.leadership(image).values.map(\.2)) == [3])
        MetadataChange.trackLeaderEpochs.apply(to: &image, at: LogIndex(4))
        #expect(image.leaderEpochs == LeaderEpochMap(uniform: 3) && Set(Self.leadership(image).values.map(\.2)) == [3])
        MetadataChange.trackLeaderEpochs.apply(to: &image, at: LogIndex(5))
        #expect(image.leaderEpochs == LeaderEpochMap(uniform: 3), "a second start changes nothing")
        MetadataChange.registerNode(Self.registration(4)).apply(to: &image, at: LogIndex(6))
        #expect(Set(Self.leadership(image).values.map(\.2)) == [3, 4])
    }

    /// Piece boundaries, one token per node: keys up to and including a token are its node's,
    /// and the keys past the last token wrap to the first one.
    @Test func arcsEndAtTokensAndWrap() throws {
        func node(_ id: Int32, at token: UInt64) -> NodeRegistration {
            NodeRegistration(id: NodeID(id), host: "h", port: 1, rack: nil, incarnation: Int64(id), fenced: false, tokens: [RingPosition(token)])
        }
        var image = MetadataImage(clusterID: "c")
        MetadataChange.trackLeaderEpochs.apply(to: &image, at: LogIndex(1))
        MetadataChange.registerNode(node(1, at: 100)).apply(to: &image, at: LogIndex(2))
        let map = try #require(image.leaderEpochs)
        #expect(map == LeaderEpochMap(uniform: 1), "the first node takes the whole ring")
        MetadataChange.registerNode(node(2, at: 50)).apply(to: &image, at: LogIndex(3))
        // Node 2 takes (100, max] and [0, 50]; node 1 keeps (50, 100].
        let epochs = try #require(image.leaderEpochs)
        let expected: [(UInt64, Int64)] = [(0, 2), (50, 2), (51, 1), (100, 1), (101, 2), (UInt64.max, 2)]
        for (key, epoch) in expected { #expect(epochs.epoch(at: RingPosition(key)) == epoch, "key \(key)") }
        // Node 1 fenced: its stretch gets the stand-in (node 2), the rest keeps epoch 2.
        MetadataChange.fenceNode(id: NodeID(1), incarnation: 1).apply(to: &image, at: LogIndex(4))
        let fenced = try #require(image.leaderEpochs)
        for (key, epoch) in [(UInt64(50), Int64(2)), (51, 3), (100, 3), (101, 2)] { #expect(fenced.epoch(at: RingPosition(key)) == epoch, "key \(key)") }
    }

    /// Past its bound the map raises its oldest epochs to the next oldest: fewer arcs, no epoch
    /// lower than before.
    @Test func coarseningOnlyRaisesEpochs() throws {
        let ends: [UInt64] = [10, 20, 30, 40, 50, UInt64.max]
        let epochs: [Int64] = [1, 5, 2, 5, 3, 9]
        var map = try #require(LeaderEpochMap(arcs: zip(ends, epochs).map { .init(end: RingPosition($0), epoch: $1) }))
        let keys = (0...60).map { RingPosition(UInt64($0)) } + [RingPosition(UInt64.max)]
        let before = keys.map { map.epoch(at: $0) }
        #expect(before[10] == 1 && before[11] == 5 && before[55] == 9)
        map.coarsen(toAtMost: 3)
        #expect(map.arcs.count <= 3)
        #expect(map.arcs.map(\.epoch) == [5, 9])
        for (key, old) in zip(keys, before) { #expect(map.epoch(at: key) >= old) }
        #expect(LeaderEpochMap(arcs: [.init(end: RingPosition(5), epoch: 1)]) == nil, "must reach the ring's end")
        #expect(LeaderEpochMap(arcs: [.init(end: RingPosition(5), epoch: 1), .init(end: RingPosition(5), epoch: 2)]) == nil)
    }
}
