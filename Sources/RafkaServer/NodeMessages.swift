import KafkaProtocol
import NIOCore
import RafkaCore
import RafkaStorage
import RaftCore

// Rafka's own requests between data nodes and controllers, framed like Kafka requests (header
// v2) so one connection and decoder serve both. Version 0 of each; fields in order, Kafka's
// compact types.

extension RafkaAPIKey {
    static let registerNode = KafkaAPIKey(rawValue: 10003)
    static let nodeHeartbeat = KafkaAPIKey(rawValue: 10004)
    static let fetchMetadata = KafkaAPIKey(rawValue: 10005)
}

/// A data node asks the controller leader to register it (again) and assign an incarnation.
struct RegisterNodeRequest: KafkaRequestMessage {
    static let apiKey = RafkaAPIKey.registerNode
    static let schemaVersions: ClosedRange<Int16> = 0...0
    static let firstFlexibleVersion: Int16? = 0
    var nodeID: Int32 = 0
    var host = ""
    var port: Int32 = 0
    var rack: String?

    init(nodeID: Int32, host: String, port: Int32, rack: String?) {
        self.nodeID = nodeID
        self.host = host
        self.port = port
        self.rack = rack
    }

    init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.nodeID = try buffer.readKafkaInt32()
        self.host = try buffer.readKafkaString(compact: true)
        self.port = try buffer.readKafkaInt32()
        self.rack = try buffer.readKafkaNullableString(compact: true)
    }

    func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt32(self.nodeID)
        buffer.writeKafkaString(self.host, compact: true)
        buffer.writeKafkaInt32(self.port)
        buffer.writeKafkaNullableString(self.rack, compact: true)
    }
}

struct RegisterNodeResponse: KafkaResponseMessage {
    static let apiKey = RafkaAPIKey.registerNode
    static let schemaVersions: ClosedRange<Int16> = 0...0
    static let firstFlexibleVersion: Int16? = 0
    var errorCode: Int16 = 0
    var errorMessage: String?
    var incarnation: Int64 = -1

    init(errorCode: Int16 = 0, errorMessage: String? = nil, incarnation: Int64 = -1) {
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.incarnation = incarnation
    }

    init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.errorCode = try buffer.readKafkaInt16()
        self.errorMessage = try buffer.readKafkaNullableString(compact: true)
        self.incarnation = try buffer.readKafkaInt64()
    }

    func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt16(self.errorCode)
        buffer.writeKafkaNullableString(self.errorMessage, compact: true)
        buffer.writeKafkaInt64(self.incarnation)
    }
}

/// A data node's periodic liveness report to the controller leader. A node that stops sending
/// them for the session timeout is fenced (its incarnation), and must register again.
struct NodeHeartbeatRequest: KafkaRequestMessage, Equatable {
    static let apiKey = RafkaAPIKey.nodeHeartbeat
    static let schemaVersions: ClosedRange<Int16> = 0...0
    static let firstFlexibleVersion: Int16? = 0
    var nodeID: Int32 = 0
    var incarnation: Int64 = 0
    /// The metadata offset the node has applied.
    var appliedOffset: Int64 = 0
    /// The node is shutting down and asks to leave the ring first (KRaft's WantShutDown).
    var wantsToLeave = false
    /// Data nodes this one's ring neighbours stopped answering (Chord failure suspicion).
    var suspects: [Int32] = []
    /// A joining node has copied the partitions it will lead and asks to be placed.
    var caughtUp = false
    /// Suspects a heartbeat may carry.
    static let suspectsMax = 1024

    init(nodeID: Int32, incarnation: Int64, appliedOffset: Int64, wantsToLeave: Bool = false, suspects: [Int32] = [], caughtUp: Bool = false) {
        self.caughtUp = caughtUp
        self.nodeID = nodeID
        self.incarnation = incarnation
        self.appliedOffset = appliedOffset
        self.wantsToLeave = wantsToLeave
        self.suspects = suspects
    }

    init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.nodeID = try buffer.readKafkaInt32()
        self.incarnation = try buffer.readKafkaInt64()
        self.appliedOffset = try buffer.readKafkaInt64()
        self.wantsToLeave = try buffer.readKafkaBool()
        let count = try buffer.readKafkaArrayCount(compact: true) ?? 0
        guard count <= Self.suspectsMax, buffer.readableBytes >= count * 4 else {
            throw KafkaDecodingError(.lengthExceedsBuffer, "heartbeat with \(count) suspects")
        }
        self.suspects = try (0..<count).map { _ throws(KafkaDecodingError) in try buffer.readKafkaInt32() }
        self.caughtUp = try buffer.readKafkaBool()
    }

    func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt32(self.nodeID)
        buffer.writeKafkaInt64(self.incarnation)
        buffer.writeKafkaInt64(self.appliedOffset)
        buffer.writeKafkaBool(self.wantsToLeave)
        buffer.writeKafkaArrayCount(self.suspects.count, compact: true)
        for suspect in self.suspects { buffer.writeKafkaInt32(suspect) }
        buffer.writeKafkaBool(self.caughtUp)
    }
}

struct NodeHeartbeatResponse: KafkaResponseMessage {
    static let apiKey = RafkaAPIKey.nodeHeartbeat
    static let schemaVersions: ClosedRange<Int16> = 0...0
    static let firstFlexibleVersion: Int16? = 0
    /// NONE; STALE_BROKER_EPOCH when the incarnation is fenced or unknown (register again);
    /// NOT_CONTROLLER when this controller does not lead.
    var errorCode: Int16 = 0

    init(errorCode: Int16 = 0) { self.errorCode = errorCode }

    init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.errorCode = try buffer.readKafkaInt16()
    }

    func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt16(self.errorCode)
    }
}

/// A data node follows the metadata log (like a KRaft broker fetching __cluster_metadata):
/// committed entries after `fromOffset`, or the snapshot when those were compacted away. From
/// v1 it long-polls: with nothing committed after `fromOffset`, the controller answers when
/// something is, or after `maxWaitMs`, so that every node learns a change (a join, a leave)
/// within a round trip of its commit rather than at its next poll.
struct FetchMetadataRequest: KafkaRequestMessage, Equatable {
    static let apiKey = RafkaAPIKey.fetchMetadata
    static let schemaVersions: ClosedRange<Int16> = 0...1
    static let firstFlexibleVersion: Int16? = 0
    var fromOffset: Int64 = 0
    var maxEntries: Int32 = 1000
    /// v1+: how long the controller may wait for an entry after `fromOffset` (0: answer at once).
    var maxWaitMs: Int32 = 0

    init(fromOffset: Int64, maxEntries: Int32 = 1000, maxWaitMs: Int32 = 0) {
        self.fromOffset = fromOffset
        self.maxEntries = maxEntries
        self.maxWaitMs = maxWaitMs
    }

    init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.fromOffset = try buffer.readKafkaInt64()
        self.maxEntries = try buffer.readKafkaInt32()
        if version >= 1 { self.maxWaitMs = try buffer.readKafkaInt32() }
    }

    func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt64(self.fromOffset)
        buffer.writeKafkaInt32(self.maxEntries)
        if version >= 1 { buffer.writeKafkaInt32(self.maxWaitMs) }
    }
}

struct FetchMetadataResponse: KafkaResponseMessage {
    static let apiKey = RafkaAPIKey.fetchMetadata
    static let schemaVersions: ClosedRange<Int16> = 0...0
    static let firstFlexibleVersion: Int16? = 0
    var errorCode: Int16 = 0
    /// The controller's commit index (what the node is catching up to).
    var commitIndex: Int64 = 0
    /// When the requested entries were compacted: a SQLite image to start from.
    var snapshot: ByteBuffer?
    var entries: [RaftEntry] = []

    init(errorCode: Int16 = 0, commitIndex: Int64 = 0, snapshot: ByteBuffer? = nil, entries: [RaftEntry] = []) {
        self.errorCode = errorCode
        self.commitIndex = commitIndex
        self.snapshot = snapshot
        self.entries = entries
    }

    init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.errorCode = try buffer.readKafkaInt16()
        self.commitIndex = try buffer.readKafkaInt64()
        self.snapshot = try buffer.readKafkaNullableBytes(compact: true)
        let count = try buffer.readKafkaArrayCount(compact: true) ?? 0
        self.entries.reserveCapacity(min(count, 1024))
        for _ in 0..<count {
            var entry = try buffer.readKafkaBytes(compact: true)
            self.entries.append(try RaftCodec.readEntry(&entry))
        }
    }

    func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt16(self.errorCode)
        buffer.writeKafkaInt64(self.commitIndex)
        buffer.writeKafkaNullableBytes(self.snapshot, compact: true)
        buffer.writeKafkaArrayCount(self.entries.count, compact: true)
        for entry in self.entries {
            var bytes = ByteBuffer()
            RaftCodec.writeEntry(entry, into: &bytes)
            buffer.writeKafkaBytes(bytes, compact: true)
        }
    }

    static func == (lhs: FetchMetadataResponse, rhs: FetchMetadataResponse) -> Bool {
        lhs.errorCode == rhs.errorCode && lhs.commitIndex == rhs.commitIndex && lhs.snapshot == rhs.snapshot && lhs.entries == rhs.entries
    }
}
