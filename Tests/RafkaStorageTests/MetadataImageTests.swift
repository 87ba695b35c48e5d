import ChordCore
import KafkaProtocol
import RafkaCore
import RafkaStorage
import RaftCore
import Testing

/// Node registrations carry their ring tokens through the metadata log and snapshots.
@Suite struct MetadataImageTests {
    static func registration(_ id: Int32, fenced: Bool = false, rack: String? = nil) -> NodeRegistration {
        NodeRegistration(
            id: NodeID(id), host: "127.0.0.1", port: 9000 + id, rack: rack, incarnation: Int64(id) * 10, fenced: fenced,
            tokens: RingHash.tokens(node: NodeID(id), count: 4))
    }

    @Test func registrationRoundTripsWithTokens() throws {
        let change = MetadataChange.registerNode(Self.registration(3, rack: "a"))
        #expect(try MetadataChange(encoded: change.encoded()) == change)
        var joining = Self.registration(4)
        joining.joining = true
        for change in [
            MetadataChange.registerNode(joining), .activateNode(id: NodeID(4), incarnation: 40), .nodeLeaving(id: NodeID(4), incarnation: 40),
            .trackLeaderEpochs,
        ] {
            #expect(try MetadataChange(encoded: change.encoded()) == change)
        }
    }

    /// A token count larger than the bytes that follow is refused, not allocated.
    @Test func lyingTokenCountIsRefused() {
        var bytes = MetadataChange.registerNode(Self.registration(3)).encoded()
        bytes.removeLast(8 * 4 + 1)
        bytes.append(0xFF)
        bytes.append(0x7F)  // compact count 16,383 with no tokens after it
        #expect(throws: KafkaDecodingError.self) { try MetadataChange(encoded: bytes) }
    }

    @Test func snapshotKeepsTokens() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var image = MetadataImage(clusterID: "c")
        MetadataChange.registerNode(Self.registration(1, rack: "r1")).apply(to: &image, at: LogIndex(1))
        MetadataChange.registerNode(Self.registration(2, fenced: true)).apply(to: &image, at: LogIndex(2))
        MetadataChange.registerNode(Self.registration(3)).apply(to: &image, at: LogIndex(3))
        MetadataChange.nodeLeaving(id: NodeID(3), incarnation: 30).apply(to: &image, at: LogIndex(4))
        #expect(image.nodes[NodeID(3)]?.leaving == true)
        var joining = Self.registration(4)
        joining.joining = true
        MetadataChange.registerNode(joining).apply(to: &image, at: LogIndex(5))
        let bytes = try MetadataSnapshotCodec.encode(image, scratchDirectory: directory.path)
        let restored = try MetadataSnapshotCodec.decode(bytes, scratchDirectory: directory.path)
        #expect(restored == image)
        #expect(restored.nodes[NodeID(1)]?.tokens == Self.registration(1).tokens)
    }

    /// The serving ring leaves fenced nodes out; the allocation ring keeps their places.
    @Test func ringLeavesOutFencedNodes() {
        var image = MetadataImage(clusterID: "c")
        for id in Int32(1)...3 { MetadataChange.registerNode(Self.registration(id)).apply(to: &image, at: LogIndex(UInt64(id))) }
        MetadataChange.fenceNode(id: NodeID(2), incarnation: 20).apply(to: &image, at: LogIndex(4))
        #expect(Set(image.ring.entries.map(\.node)) == [NodeID(1), NodeID(3)])
        #expect(image.allTokens.entries.count == 12)
        #expect(image.ringEpoch == 4)
    }

    /// Placement: the first registered node clockwise leads; a fenced leader keeps its
    /// partitions (offline) unless the topic allows an unclean takeover; a leaving node gives
    /// them to the next node at once; a new registration takes them back.
    @Test func placementFollowsMembership() throws {
        var image = MetadataImage(clusterID: "c")
        for id in Int32(1)...4 { MetadataChange.registerNode(Self.registration(id)).apply(to: &image, at: LogIndex(UInt64(id))) }
        let strict = TopicMetadata(name: "s", id: KafkaUUID(high: 1, low: 2), partitionCount: 200, replicationFactor: 1, configs: [:])
        let unclean = TopicMetadata(
            name: "u", id: KafkaUUID(high: 3, low: 4), partitionCount: 200, replicationFactor: 1,
            configs: ["unclean.leader.election.enable": "true"])
        func leaders(_ topic: TopicMetadata, _ image: MetadataImage) -> [PartitionPlacement.Leader] {
            let placement = PartitionPlacement(image: image)
            return (0..<topic.partitionCount).map { placement.leader(of: topic, partition: $0) }
        }
        let before = leaders(strict, image)
        #expect(Set(before) == Set((1...4).map { PartitionPlacement.Leader.node(NodeID($0)) }))
        #expect((0..<strict.partitionCount).map { PartitionPlacement(image: image).leaderEpoch(of: strict, partition: $0) }.max() == 4)

        var fenced = image
        MetadataChange.fenceNode(id: NodeID(2), incarnation: 20).apply(to: &fenced, at: LogIndex(5))
        for (old, new) in zip(before, leaders(strict, fenced)) {
            #expect(new == (old == .node(NodeID(2)) ? .offline(fencedLeader: NodeID(2)) : old))
        }
        for (old, new) in zip(leaders(unclean, image), leaders(unclean, fenced)) {
            if old == .node(NodeID(2)) { #expect(new != old && new != .offline(fencedLeader: NodeID(2))) } else { #expect(new == old) }
        }

        var leaving = image
        MetadataChange.nodeLeaving(id: NodeID(3), incarnation: 30).apply(to: &leaving, at: LogIndex(5))
        let handed = leaders(strict, leaving)
        for (old, new) in zip(before, handed) {
            if old == .node(NodeID(3)) { #expect(new != old) } else { #expect(new == old) }
        }
        // The nodes asked for a leaving leader's copies include it: it still runs.
        let placement = PartitionPlacement(image: leaving)
        let index = try #require(before.firstIndex(of: .node(NodeID(3))))
        guard case .node(let heir) = handed[index] else { Issue.record("no heir"); return }
        #expect(placement.nodes(after: heir, topic: strict, partition: Int32(index), count: 8).contains(NodeID(3)))

        var back = leaving
        var again = Self.registration(3)
        again.incarnation = 60
        MetadataChange.registerNode(again).apply(to: &back, at: LogIndex(6))
        #expect(leaders(strict, back) == before)

        // A joining node leads nothing until activated; the placement "as if activated" says
        // what it copies meanwhile, and is what activation gives it.
        var joining = image
        var newcomer = Self.registration(5)
        newcomer.joining = true
        MetadataChange.registerNode(newcomer).apply(to: &joining, at: LogIndex(5))
        #expect(leaders(strict, joining) == before)
        let future = PartitionPlacement(image: joining, activating: NodeID(5))
        let promised = (0..<strict.partitionCount).map { future.leader(of: strict, partition: $0) }
        #expect(promised.contains(.node(NodeID(5))))
        MetadataChange.activateNode(id: NodeID(5), incarnation: 50).apply(to: &joining, at: LogIndex(6))
        #expect(leaders(strict, joining) == promised)
        for (old, new) in zip(before, promised) where new != .node(NodeID(5)) { #expect(new == old) }
    }
}
