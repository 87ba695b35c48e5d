import NIOCore
import Testing

@testable import KafkaProtocol

@Suite struct KafkaFrameTests {
    /// A frame with large batches left in place is, joined, byte for byte the frame with every
    /// batch copied, in every version: the size prefix counts the spliced bytes, and compact
    /// (flexible) and plain length prefixes both precede them.
    @Test(arguments: [Int16(3), 8, 9, 10])
    func splicedFramesEqualCopiedFrames(version: Int16) throws {
        let large = ByteBuffer(repeating: 0xAB, count: KafkaFrame.spliceBytesMin + 5)
        let small = ByteBuffer(repeating: 0xCD, count: 100)
        var request = ProduceRequest(acks: 1, timeoutMs: 30_000)
        request.topicData = [
            .init(
                name: "t",
                partitionData: [
                    .init(index: 0, records: large), .init(index: 1, records: small), .init(index: 2, records: nil),
                    .init(index: 3, records: large),
                ])
        ]
        let frame = KafkaFrame.encode { request.encode(into: &$0, version: version) }
        var copied = ByteBuffer()
        copied.writeInteger(Int32(0))
        request.encode(into: &copied, version: version)
        copied.setInteger(Int32(copied.readableBytes - 4), at: 0)

        #expect(frame.joined == copied)
        #expect(frame.readableBytes == copied.readableBytes)
        // Both large batches are parts of their own, the small one was copied; flexible versions
        // end with tagged fields after the last batch.
        #expect(frame.parts.filter { $0 == large }.count == 2)
        #expect(frame.parts.count == (ProduceRequest.isFlexible(version) ? 5 : 4))
        var whole = frame.joined
        #expect(whole.readInteger(as: Int32.self) == Int32(whole.readableBytes))
        #expect(try ProduceRequest(from: &whole, version: version) == request)
    }

    /// A fetch response (the broker's side) splices the same way, topic IDs and tagged fields
    /// of flexible versions included.
    @Test(arguments: [Int16(4), 11, 12, 13])
    func splicedFetchResponsesEqualCopiedOnes(version: Int16) throws {
        let large = ByteBuffer(repeating: 0x5A, count: 3 * KafkaFrame.spliceBytesMin)
        var partition = FetchResponse.PartitionData()
        partition.records = large
        partition.highWatermark = 42
        var other = FetchResponse.PartitionData()
        other.partitionIndex = 1
        other.records = ByteBuffer(repeating: 1, count: 10)
        let response = FetchResponse(
            responses: [.init(topic: "t", topicId: KafkaUUID(high: 1, low: 2), partitions: [partition, other])])
        let frame = KafkaFrame.encode { response.encode(into: &$0, version: version) }
        var copied = ByteBuffer()
        copied.writeInteger(Int32(0))
        response.encode(into: &copied, version: version)
        copied.setInteger(Int32(copied.readableBytes - 4), at: 0)
        #expect(frame.joined == copied)
        #expect(frame.parts.count == 3 && frame.parts[1] == large)
    }

    /// Outside `KafkaFrame.encode`, and for a frame without large batches, records are copied:
    /// one buffer, as before.
    @Test func recordsAreCopiedOutsideAFrame() {
        let large = ByteBuffer(repeating: 0xAB, count: KafkaFrame.spliceBytesMin)
        var buffer = ByteBuffer()
        buffer.writeKafkaRecords(large, compact: false)
        #expect(buffer.readableBytes == 4 + large.readableBytes)
        let frame = KafkaFrame.encode { $0.writeKafkaRecords(ByteBuffer(repeating: 1, count: 10), compact: true) }
        #expect(frame.parts.count == 1 && frame.readableBytes == 4 + 1 + 10)
    }
}
