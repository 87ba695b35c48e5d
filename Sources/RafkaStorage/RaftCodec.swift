import KafkaProtocol
import NIOCore
import RafkaCore
import RaftCore

/// Binary encodings of Raft entries and messages, shared by the metadata log on disk
/// (`RaftLogStore`) and the controllers' wire protocol: one format, one piece of code.
public enum RaftCodec {
    // MARK: Entries

    /// An entry body (without the log file's length and CRC framing): u64 term, u64 index,
    /// u8 kind, payload.
    public static func writeEntry(_ entry: RaftEntry, into buffer: inout ByteBuffer) {
        buffer.writeInteger(entry.term.rawValue)
        buffer.writeInteger(entry.index.rawValue)
        switch entry.payload {
        case .noop:
            buffer.writeInteger(UInt8(0))
        case .command(let bytes):
            buffer.writeInteger(UInt8(1))
            buffer.writeBytes(bytes)
        case .configuration(let configuration):
            buffer.writeInteger(UInt8(2))
            Self.writeConfiguration(configuration, into: &buffer)
        }
    }

    /// Reads an entry body that spans the whole of `body`.
    public static func readEntry(_ body: inout ByteBuffer) throws(KafkaDecodingError) -> RaftEntry {
        guard let term = body.readInteger(as: UInt64.self), let index = body.readInteger(as: UInt64.self),
            let kind = body.readInteger(as: UInt8.self)
        else { throw KafkaDecodingError(.truncated, "raft entry") }
        let payload: RaftEntry.Payload
        switch kind {
        case 0:
            payload = .noop
        case 1:
            payload = .command(Array(body.readableBytesView))
            body.moveReaderIndex(to: body.writerIndex)
        case 2:
            payload = .configuration(try Self.readConfiguration(&body))
        default:
            throw KafkaDecodingError(.unknownAPIKey, "raft entry kind \(kind)")
        }
        return RaftEntry(term: Term(term), index: LogIndex(index), payload: payload)
    }

    public static func writeConfiguration(_ configuration: RaftConfiguration, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt16(configuration.voters.count))
        for voter in configuration.voters { buffer.writeInteger(voter.rawValue) }
    }

    public static func readConfiguration(_ buffer: inout ByteBuffer) throws(KafkaDecodingError) -> RaftConfiguration {
        guard let count = buffer.readInteger(as: UInt16.self), Int(count) * 4 <= buffer.readableBytes else {
            throw KafkaDecodingError(.lengthExceedsBuffer, "raft configuration")
        }
        return RaftConfiguration(voters: (0..<count).map { _ in NodeID(buffer.readInteger(as: Int32.self)!) })
    }

    // MARK: Messages

    private enum Kind: UInt8 {
        case voteRequest = 1, voteResponse, append, appendResponse, heartbeat, heartbeatResponse, installSnapshot, timeoutNow
    }

    /// A Raft message on the wire: from, to, term, kind, fields.
    public static func writeMessage(_ message: RaftMessage, into buffer: inout ByteBuffer) {
        buffer.writeInteger(message.from.rawValue)
        buffer.writeInteger(message.to.rawValue)
        buffer.writeInteger(message.term.rawValue)
        switch message.kind {
        case .voteRequest(let lastIndex, let lastTerm, let preVote, let transfer):
            buffer.writeInteger(Kind.voteRequest.rawValue)
            buffer.writeInteger(lastIndex.rawValue)
            buffer.writeInteger(lastTerm.rawValue)
            buffer.writeKafkaBool(preVote)
            buffer.writeKafkaBool(transfer)
        case .voteResponse(let granted, let preVote):
            buffer.writeInteger(Kind.voteResponse.rawValue)
            buffer.writeKafkaBool(granted)
            buffer.writeKafkaBool(preVote)
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            buffer.writeInteger(Kind.append.rawValue)
            buffer.writeInteger(prevIndex.rawValue)
            buffer.writeInteger(prevTerm.rawValue)
            buffer.writeInteger(commit.rawValue)
            buffer.writeInteger(UInt32(entries.count))
            for entry in entries {
                let lengthAt = buffer.writerIndex
                buffer.writeInteger(UInt32(0))
                Self.writeEntry(entry, into: &buffer)
                buffer.setInteger(UInt32(buffer.writerIndex - lengthAt - 4), at: lengthAt)
            }
        case .appendResponse(let success, let index, let hintTerm):
            buffer.writeInteger(Kind.appendResponse.rawValue)
            buffer.writeKafkaBool(success)
            buffer.writeInteger(index.rawValue)
            buffer.writeInteger(hintTerm?.rawValue ?? UInt64.max)
        case .heartbeat(let commit, let readRound):
            buffer.writeInteger(Kind.heartbeat.rawValue)
            buffer.writeInteger(commit.rawValue)
            buffer.writeInteger(readRound)
        case .heartbeatResponse(let readRound):
            buffer.writeInteger(Kind.heartbeatResponse.rawValue)
            buffer.writeInteger(readRound)
        case .installSnapshot(let snapshot):
            buffer.writeInteger(Kind.installSnapshot.rawValue)
            buffer.writeInteger(snapshot.index.rawValue)
            buffer.writeInteger(snapshot.term.rawValue)
            Self.writeConfiguration(snapshot.configuration, into: &buffer)
            buffer.writeInteger(UInt32(snapshot.data.count))
            buffer.writeBytes(snapshot.data)
        case .timeoutNow:
            buffer.writeInteger(Kind.timeoutNow.rawValue)
        }
    }

    public static func readMessage(_ buffer: inout ByteBuffer) throws(KafkaDecodingError) -> RaftMessage {
        let from = NodeID(try buffer.readKafkaInt32())
        let to = NodeID(try buffer.readKafkaInt32())
        let term = Term(UInt64(bitPattern: try buffer.readKafkaInt64()))
        guard let kind = Kind(rawValue: UInt8(bitPattern: try buffer.readKafkaInt8())) else {
            throw KafkaDecodingError(.unknownAPIKey, "raft message kind")
        }
        func u64() throws(KafkaDecodingError) -> UInt64 { UInt64(bitPattern: try buffer.readKafkaInt64()) }
        let body: RaftMessage.Kind
        switch kind {
        case .voteRequest:
            body = .voteRequest(
                lastIndex: LogIndex(try u64()), lastTerm: Term(try u64()), preVote: try buffer.readKafkaBool(),
                transfer: try buffer.readKafkaBool())
        case .voteResponse:
            body = .voteResponse(granted: try buffer.readKafkaBool(), preVote: try buffer.readKafkaBool())
        case .append:
            let prevIndex = LogIndex(try u64())
            let prevTerm = Term(try u64())
            let commit = LogIndex(try u64())
            let count = try buffer.readKafkaUInt32()
            guard Int(count) <= buffer.readableBytes / 21 + 1 else { throw KafkaDecodingError(.lengthExceedsBuffer, "raft entries") }
            var entries: [RaftEntry] = []
            entries.reserveCapacity(Int(count))
            for _ in 0..<count {
                let length = try buffer.readKafkaUInt32()
                guard var entryBytes = buffer.readSlice(length: Int(length)) else {
                    throw KafkaDecodingError(.lengthExceedsBuffer, "raft entry")
                }
                entries.append(try Self.readEntry(&entryBytes))
            }
            body = .append(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        case .appendResponse:
            let success = try buffer.readKafkaBool()
            let index = LogIndex(try u64())
            let hint = try u64()
            body = .appendResponse(success: success, index: index, hintTerm: hint == UInt64.max ? nil : Term(hint))
        case .heartbeat:
            body = .heartbeat(commit: LogIndex(try u64()), readRound: try u64())
        case .heartbeatResponse:
            body = .heartbeatResponse(readRound: try u64())
        case .installSnapshot:
            let index = LogIndex(try u64())
            let snapshotTerm = Term(try u64())
            let configuration = try Self.readConfiguration(&buffer)
            let size = try buffer.readKafkaUInt32()
            guard let data = buffer.readBytes(length: Int(size)) else { throw KafkaDecodingError(.lengthExceedsBuffer, "snapshot") }
            body = .installSnapshot(RaftSnapshot(index: index, term: snapshotTerm, configuration: configuration, data: data))
        case .timeoutNow:
            body = .timeoutNow
        }
        return RaftMessage(from: from, to: to, term: term, kind: body)
    }
}
