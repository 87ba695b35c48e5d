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
}
