import ChordCore
import KafkaProtocol
import NIOCore
import RafkaCore

/// Chord messages between data nodes on the wire: one kind byte, then the fields in order with
/// Kafka's primitive types (big-endian integers, compact arrays). Every count is checked
/// against the bytes present before anything is allocated.
enum ChordCodec {
    private enum Kind: UInt8 {
        case getNeighbors = 1, neighbors, notify, findSuccessor, lookupStep, ping, pong, leaving
    }

    /// Successor lists a message may carry (the longest a node keeps is far below this).
    static let successorsMax = 64

    static func write(_ message: ChordMessage, into buffer: inout ByteBuffer) {
        buffer.writeKafkaInt32(message.from.rawValue)
        buffer.writeKafkaInt32(message.to.rawValue)
        switch message.kind {
        case .getNeighbors(let requestID, let position):
            buffer.writeInteger(Kind.getNeighbors.rawValue)
            buffer.writeInteger(requestID)
            buffer.writeInteger(position.rawValue)
        case .neighbors(let requestID, let position, let predecessor, let successor, let successors):
            buffer.writeInteger(Kind.neighbors.rawValue)
            buffer.writeInteger(requestID)
            buffer.writeInteger(position.rawValue)
            buffer.writeKafkaBool(predecessor != nil)
            if let predecessor { Self.write(predecessor, into: &buffer) }
            Self.write(successor, into: &buffer)
            buffer.writeKafkaArrayCount(successors.count, compact: true)
            for entry in successors { Self.write(entry, into: &buffer) }
        case .notify(let position, let candidate):
            buffer.writeInteger(Kind.notify.rawValue)
            buffer.writeInteger(position.rawValue)
            Self.write(candidate, into: &buffer)
        case .findSuccessor(let requestID, let key):
            buffer.writeInteger(Kind.findSuccessor.rawValue)
            buffer.writeInteger(requestID)
            buffer.writeInteger(key.rawValue)
        case .lookupStep(let requestID, let answer):
            buffer.writeInteger(Kind.lookupStep.rawValue)
            buffer.writeInteger(requestID)
            switch answer {
            case .owner(let entry):
                buffer.writeInteger(UInt8(1))
                Self.write(entry, into: &buffer)
            case .closer(let entry):
                buffer.writeInteger(UInt8(2))
                Self.write(entry, into: &buffer)
            case .unknown:
                buffer.writeInteger(UInt8(0))
            }
        case .ping(let requestID):
            buffer.writeInteger(Kind.ping.rawValue)
            buffer.writeInteger(requestID)
        case .pong(let requestID):
            buffer.writeInteger(Kind.pong.rawValue)
            buffer.writeInteger(requestID)
        case .leaving:
            buffer.writeInteger(Kind.leaving.rawValue)
        }
    }

    static func read(from buffer: inout ByteBuffer) throws(KafkaDecodingError) -> ChordMessage {
        let from = NodeID(try buffer.readKafkaInt32())
        let to = NodeID(try buffer.readKafkaInt32())
        guard let kind = Kind(rawValue: try Self.integer(&buffer, as: UInt8.self)) else {
            throw KafkaDecodingError(.unknownAPIKey, "chord message kind")
        }
        let body: ChordMessage.Kind
        switch kind {
        case .getNeighbors:
            body = .getNeighbors(requestID: try Self.integer(&buffer), position: try Self.position(&buffer))
        case .neighbors:
            let requestID: UInt64 = try Self.integer(&buffer)
            let position = try Self.position(&buffer)
            let predecessor = try buffer.readKafkaBool() ? try Self.entry(&buffer) : nil
            let successor = try Self.entry(&buffer)
            let count = try buffer.readKafkaArrayCount(compact: true) ?? 0
            guard count <= Self.successorsMax, buffer.readableBytes >= count * 12 else {
                throw KafkaDecodingError(.lengthExceedsBuffer, "chord successor list of \(count)")
            }
            var successors: [RingEntry] = []
            for _ in 0..<count { successors.append(try Self.entry(&buffer)) }
            body = .neighbors(requestID: requestID, position: position, predecessor: predecessor, successor: successor, successors: successors)
        case .notify:
            body = .notify(position: try Self.position(&buffer), candidate: try Self.entry(&buffer))
        case .findSuccessor:
            body = .findSuccessor(requestID: try Self.integer(&buffer), key: try Self.position(&buffer))
        case .lookupStep:
            let requestID: UInt64 = try Self.integer(&buffer)
            let answer: LookupAnswer
            switch try Self.integer(&buffer, as: UInt8.self) {
            case 0: answer = .unknown
            case 1: answer = .owner(try Self.entry(&buffer))
            case 2: answer = .closer(try Self.entry(&buffer))
            default: throw KafkaDecodingError(.unknownAPIKey, "chord lookup answer")
            }
            body = .lookupStep(requestID: requestID, answer: answer)
        case .ping:
            body = .ping(requestID: try Self.integer(&buffer))
        case .pong:
            body = .pong(requestID: try Self.integer(&buffer))
        case .leaving:
            body = .leaving
        }
        return ChordMessage(from: from, to: to, kind: body)
    }

    private static func write(_ entry: RingEntry, into buffer: inout ByteBuffer) {
        buffer.writeInteger(entry.position.rawValue)
        buffer.writeKafkaInt32(entry.node.rawValue)
    }

    private static func entry(_ buffer: inout ByteBuffer) throws(KafkaDecodingError) -> RingEntry {
        let position = try Self.position(&buffer)
        return RingEntry(position: position, node: NodeID(try buffer.readKafkaInt32()))
    }

    private static func position(_ buffer: inout ByteBuffer) throws(KafkaDecodingError) -> RingPosition {
        RingPosition(try Self.integer(&buffer, as: UInt64.self))
    }

    private static func integer<T: FixedWidthInteger>(_ buffer: inout ByteBuffer, as: T.Type = T.self) throws(KafkaDecodingError) -> T {
        guard let value = buffer.readInteger(as: T.self) else { throw KafkaDecodingError(.truncated, "chord message") }
        return value
    }
}

extension RafkaAPIKey {
    /// One Chord message between data nodes; no response.
    static let chordMessage = KafkaAPIKey(rawValue: 10009)
}

enum ChordFrames {
    static func frame(_ message: ChordMessage, correlationID: Int32) -> ByteBuffer {
        var frame = ByteBuffer()
        frame.writeInteger(Int32(0))
        RequestHeader(requestApiKey: RafkaAPIKey.chordMessage.rawValue, requestApiVersion: 0, correlationId: correlationID, clientId: "chord")
            .encode(into: &frame, version: 2)
        ChordCodec.write(message, into: &frame)
        frame.setInteger(Int32(frame.readableBytes - 4), at: 0)
        return frame
    }
}
