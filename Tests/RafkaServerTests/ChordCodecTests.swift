import ChordCore
import KafkaProtocol
import NIOCore
import RafkaCore
@testable import RafkaServer
import Testing

/// Chord messages survive the wire, and hostile bytes are refused without a crash or a large
/// allocation.
@Suite struct ChordCodecTests {
    static let a = RingEntry(position: RingPosition(1), node: NodeID(1))
    static let b = RingEntry(position: RingPosition(UInt64.max), node: NodeID(2))

    static let kinds: [ChordMessage.Kind] = [
        .getNeighbors(requestID: 1, position: RingPosition(7)),
        .neighbors(requestID: 2, position: RingPosition(7), predecessor: a, successor: b, successors: [b, a]),
        .neighbors(requestID: 3, position: RingPosition(0), predecessor: nil, successor: a, successors: []),
        .notify(position: RingPosition(9), candidate: a),
        .findSuccessor(requestID: 4, key: RingPosition(1 << 63)),
        .lookupStep(requestID: 5, answer: .owner(b)),
        .lookupStep(requestID: 6, answer: .closer(a)),
        .lookupStep(requestID: 8, answer: .unknown),
        .ping(requestID: 7),
        .pong(requestID: UInt64.max),
        .leaving,
    ]

    @Test func everyKindRoundTrips() throws {
        for kind in Self.kinds {
            let message = ChordMessage(from: NodeID(3), to: NodeID(4), kind: kind)
            var buffer = ByteBuffer()
            ChordCodec.write(message, into: &buffer)
            #expect(try ChordCodec.read(from: &buffer) == message)
            #expect(buffer.readableBytes == 0)
        }
    }

    /// Every proper prefix of every message is refused.
    @Test func truncatedMessagesAreRefused() {
        for kind in Self.kinds {
            var whole = ByteBuffer()
            ChordCodec.write(ChordMessage(from: NodeID(3), to: NodeID(4), kind: kind), into: &whole)
            for length in 0..<whole.readableBytes {
                var prefix = whole.getSlice(at: 0, length: length)!
                #expect(throws: KafkaDecodingError.self) { try ChordCodec.read(from: &prefix) }
            }
        }
    }

    @Test func lyingCountsAndUnknownKindsAreRefused() {
        var lying = ByteBuffer()
        ChordCodec.write(
            ChordMessage(from: NodeID(3), to: NodeID(4), kind: .neighbors(requestID: 1, position: RingPosition(1), predecessor: nil, successor: Self.a, successors: [])),
            into: &lying)
        lying.moveWriterIndex(to: lying.writerIndex - 1)
        lying.writeKafkaArrayCount(60, compact: true)  // 60 entries announced, none sent
        #expect(throws: KafkaDecodingError.self) { try ChordCodec.read(from: &lying) }
        var unknown = ByteBuffer()
        unknown.writeInteger(Int32(3))
        unknown.writeInteger(Int32(4))
        unknown.writeInteger(UInt8(200))
        #expect(throws: KafkaDecodingError.self) { try ChordCodec.read(from: &unknown) }
    }
}
