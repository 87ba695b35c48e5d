import KafkaProtocol
import NIOCore
@testable import RafkaServer
import Testing

/// The data nodes' own requests survive the wire; every truncation and a lying count are
/// refused without a crash or a large allocation.
@Suite struct NodeMessageTests {
    static func roundTrip<M: KafkaRequestMessage & Equatable>(_ message: M, version: Int16 = 0) throws {
        var buffer = ByteBuffer()
        message.encode(into: &buffer, version: version)
        var reader = buffer
        #expect(try M(from: &reader, version: version) == message)
        #expect(reader.readableBytes == 0)
        for length in 0..<buffer.readableBytes {
            var prefix = buffer.getSlice(at: 0, length: length)!
            #expect(throws: KafkaDecodingError.self) { try M(from: &prefix, version: version) }
        }
    }

    /// v1 carries the long poll's wait; v0 (an older node) has none, and waits for nothing.
    @Test func metadataFetchRoundTripsInBothVersions() throws {
        try Self.roundTrip(FetchMetadataRequest(fromOffset: 41, maxEntries: 1000, maxWaitMs: 500), version: 1)
        try Self.roundTrip(FetchMetadataRequest(fromOffset: 41, maxEntries: 1000), version: 0)
        var buffer = ByteBuffer()
        FetchMetadataRequest(fromOffset: 41, maxWaitMs: 500).encode(into: &buffer, version: 0)
        #expect(try FetchMetadataRequest(from: &buffer, version: 0).maxWaitMs == 0)
    }

    @Test func handoffCopyAheadAndHeartbeatRoundTrip() throws {
        try Self.roundTrip(
            PartitionHandoffRequest(fromNode: 106, ringEpoch: 9, topicID: KafkaUUID(high: 1, low: 2), topic: "spread", partition: 7, release: true))
        try Self.roundTrip(NodeHeartbeatRequest(nodeID: 101, incarnation: 3, appliedOffset: 40, wantsToLeave: true, suspects: [102, 104]))
        try Self.roundTrip(PartitionCopyAheadRequest(fromNode: 102, topicID: KafkaUUID(high: 3, low: 4), topic: "spread", partition: 11))
        var refusal = ByteBuffer()
        let refused = PartitionCopyAheadResponse(errorCode: KafkaErrorCode.unknownServerError.rawValue, errorMessage: "the copy failed")
        refused.encode(into: &refusal, version: 0)
        #expect(try PartitionCopyAheadResponse(from: &refusal, version: 0) == refused)
        var response = ByteBuffer()
        let answer = PartitionHandoffResponse(hasCopy: true, leaderEpoch: 4, logStartOffset: 10, logEndOffset: 99)
        answer.encode(into: &response, version: 0)
        #expect(try PartitionHandoffResponse(from: &response, version: 0) == answer)
    }

    @Test func aLyingSuspectCountIsRefused() {
        var buffer = ByteBuffer()
        NodeHeartbeatRequest(nodeID: 101, incarnation: 3, appliedOffset: 40).encode(into: &buffer, version: 0)
        buffer.moveWriterIndex(to: buffer.writerIndex - 2)  // the empty suspect list and the caught-up flag
        buffer.writeKafkaArrayCount(1000, compact: true)  // 1,000 suspects announced, none sent
        buffer.writeKafkaBool(false)
        #expect(throws: KafkaDecodingError.self) { try NodeHeartbeatRequest(from: &buffer, version: 0) }
    }
}
