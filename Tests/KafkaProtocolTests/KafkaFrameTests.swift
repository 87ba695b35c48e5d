#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import Testing

@testable import KafkaProtocol

@Suite struct KafkaFrameTests {
    /// The frame `encode` makes with every batch copied into one buffer.
    static func copied(_ encode: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var copied = ByteBuffer()
        copied.writeInteger(Int32(0))
        encode(&copied)
        copied.setInteger(Int32(copied.readableBytes - 4), at: 0)
        return copied
    }

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
        let copied = Self.copied { request.encode(into: &$0, version: version) }

        #expect(frame.joined == copied)
        #expect(frame.readableBytes == copied.readableBytes)
        // Both large batches are parts of their own, the small one was copied; flexible versions
        // end with tagged fields after the last batch.
        #expect(frame.parts.filter { $0 == .byteBuffer(large) }.count == 2)
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
        let copied = Self.copied { response.encode(into: &$0, version: version) }
        #expect(frame.joined == copied)
        #expect(frame.parts.count == 3 && frame.parts[1] == .byteBuffer(large))
    }

    /// Records given as a file region take the place of the n-th records field, whatever its size
    /// and whatever the message holds there (here an empty placeholder and a null): joined, the
    /// frame is byte for byte the response holding those bytes, and the region is a part of its
    /// own, written from the file.
    @Test(arguments: [Int16(4), 11, 12, 13])
    func fileRecordsTakeTheirFieldsPlace(version: Int16) throws {
        let first = ByteBuffer(repeating: 0x5A, count: 3 * KafkaFrame.spliceBytesMin)
        let third = ByteBuffer(repeating: 0x3C, count: 100)
        let file = try TemporaryFile(contents: [ByteBuffer(repeating: 0, count: 7), first, third])
        var partitions = (0..<3).map { index -> FetchResponse.PartitionData in
            var partition = FetchResponse.PartitionData()
            partition.partitionIndex = Int32(index)
            partition.highWatermark = 42
            return partition
        }
        partitions[0].records = ByteBuffer()
        partitions[1].records = ByteBuffer(repeating: 1, count: 10)
        partitions[2].records = nil
        let placeholders = FetchResponse(
            responses: [.init(topic: "t", topicId: KafkaUUID(high: 1, low: 2), partitions: partitions)])
        let files: [KafkaFrame.FileRecords?] = [
            file.records(from: 7, length: first.readableBytes), nil,
            file.records(from: 7 + first.readableBytes, length: third.readableBytes),
        ]
        let frame = KafkaFrame.encode(fileRecords: files) { placeholders.encode(into: &$0, version: version) }

        var expected = placeholders
        expected.responses[0].partitions[0].records = first
        expected.responses[0].partitions[2].records = third
        let copied = Self.copied { expected.encode(into: &$0, version: version) }
        #expect(frame.joined == copied)
        #expect(frame.readableBytes == copied.readableBytes)
        #expect(frame.parts.filter { if case .fileRegion = $0 { true } else { false } }.count == 2)
        #expect(frame.leases.count == 2)
    }

    /// A file of `contents`, removed (and its handle closed) when the last region's lease goes.
    final class TemporaryFile: Sendable {
        let path: String
        let handle: NIOFileHandle

        init(contents: [ByteBuffer]) throws {
            self.path = "/tmp/rafka-frame-test-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
            let descriptor = open(self.path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
            try #require(descriptor >= 0)
            for part in contents {
                let written = part.withUnsafeReadableBytes { write(descriptor, $0.baseAddress, $0.count) }
                try #require(written == part.readableBytes)
            }
            self.handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: descriptor)
        }

        func records(from position: Int, length: Int) -> KafkaFrame.FileRecords {
            let region = FileRegion(fileHandle: self.handle, readerIndex: position, endIndex: position + length)
            return .init(region: region, lease: self)
        }

        deinit {
            try? self.handle.close()
            unlink(self.path)
        }
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
