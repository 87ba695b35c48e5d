import KafkaProtocol
import RafkaClient
import NIOCore
import RafkaCore

// The data nodes' request for moving a partition to its new leader, framed like the other
// Rafka requests (header v2, version 0, Kafka's compact types).

extension RafkaAPIKey {
    static let partitionHandoff = KafkaAPIKey(rawValue: 10008)
}

/// A node that leads a partition under ring epoch `ringEpoch` asks a node that may hold an
/// earlier leader's copy for it. The holder answers only once its own image is at that epoch
/// (so it no longer takes writes for the partition), stops serving its copy and says how far it
/// goes; the new leader then copies it with follower fetches. With `release`, the new leader
/// has its own copy now and the holder deletes its one. With `peek`, a joining node asks the
/// current leader how far its copy goes, to copy it before it is placed: nothing changes.
struct PartitionHandoffRequest: KafkaRequestMessage, Equatable {
    static let apiKey = RafkaAPIKey.partitionHandoff
    static let schemaVersions: ClosedRange<Int16> = 0...0
    static let firstFlexibleVersion: Int16? = 0
    var fromNode: Int32 = -1
    var ringEpoch: Int64 = 0
    var topicID: KafkaUUID = .zero
    var topic = ""
    var partition: Int32 = 0
    var release = false
    var peek = false

    init(fromNode: Int32, ringEpoch: Int64, topicID: KafkaUUID, topic: String, partition: Int32, release: Bool, peek: Bool = false) {
        self.peek = peek
        self.fromNode = fromNode
        self.ringEpoch = ringEpoch
        self.topicID = topicID
        self.topic = topic
        self.partition = partition
        self.release = release
    }

    init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.fromNode = try buffer.readKafkaInt32()
        self.ringEpoch = try buffer.readKafkaInt64()
        self.topicID = try buffer.readKafkaUUID()
        self.topic = try buffer.readKafkaString(compact: true)
        self.partition = try buffer.readKafkaInt32()
        self.release = try buffer.readKafkaBool()
        self.peek = try buffer.readKafkaBool()
    }

    func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt32(self.fromNode)
        buffer.writeKafkaInt64(self.ringEpoch)
        buffer.writeKafkaUUID(self.topicID)
        buffer.writeKafkaString(self.topic, compact: true)
        buffer.writeKafkaInt32(self.partition)
        buffer.writeKafkaBool(self.release)
        buffer.writeKafkaBool(self.peek)
    }
}

struct PartitionHandoffResponse: KafkaResponseMessage, Equatable {
    static let apiKey = RafkaAPIKey.partitionHandoff
    static let schemaVersions: ClosedRange<Int16> = 0...0
    static let firstFlexibleVersion: Int16? = 0
    /// UNKNOWN_LEADER_EPOCH: the holder's image is behind `ringEpoch` (ask again);
    /// FENCED_LEADER_EPOCH: the asker's is (the holder leads the partition under a later ring).
    var errorCode: Int16 = 0
    var errorMessage: String?
    var hasCopy = false
    /// The partition's leader epoch when the copy's node last became its leader.
    var leaderEpoch: Int32 = -1
    var logStartOffset: Int64 = -1
    var logEndOffset: Int64 = -1

    init(errorCode: Int16 = 0, errorMessage: String? = nil, hasCopy: Bool = false, leaderEpoch: Int32 = -1, logStartOffset: Int64 = -1, logEndOffset: Int64 = -1) {
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.hasCopy = hasCopy
        self.leaderEpoch = leaderEpoch
        self.logStartOffset = logStartOffset
        self.logEndOffset = logEndOffset
    }

    init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.errorCode = try buffer.readKafkaInt16()
        self.errorMessage = try buffer.readKafkaNullableString(compact: true)
        self.hasCopy = try buffer.readKafkaBool()
        self.leaderEpoch = try buffer.readKafkaInt32()
        self.logStartOffset = try buffer.readKafkaInt64()
        self.logEndOffset = try buffer.readKafkaInt64()
    }

    func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt16(self.errorCode)
        buffer.writeKafkaNullableString(self.errorMessage, compact: true)
        buffer.writeKafkaBool(self.hasCopy)
        buffer.writeKafkaInt32(self.leaderEpoch)
        buffer.writeKafkaInt64(self.logStartOffset)
        buffer.writeKafkaInt64(self.logEndOffset)
    }
}

extension PartitionHandoffRequest: KafkaRequestWithResponse { typealias Response = PartitionHandoffResponse }

extension RafkaAPIKey {
    static let partitionCopyAhead = KafkaAPIKey(rawValue: 10011)
}

/// A node about to leave the ring (controlled shutdown) asks the node that will lead one of its
/// partitions once it has left to copy that partition from it now, while it still serves it
/// (as a joining node copies before it is placed): the takeover after the leave then copies
/// only what was written since. Answered once the copy caught up with where the leaving node's
/// log was when the copy began, or with why it could not.
struct PartitionCopyAheadRequest: KafkaRequestMessage, Equatable {
    static let apiKey = RafkaAPIKey.partitionCopyAhead
    static let schemaVersions: ClosedRange<Int16> = 0...0
    static let firstFlexibleVersion: Int16? = 0
    var fromNode: Int32 = -1
    var topicID: KafkaUUID = .zero
    var topic = ""
    var partition: Int32 = 0

    init(fromNode: Int32, topicID: KafkaUUID, topic: String, partition: Int32) {
        self.fromNode = fromNode
        self.topicID = topicID
        self.topic = topic
        self.partition = partition
    }

    init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.fromNode = try buffer.readKafkaInt32()
        self.topicID = try buffer.readKafkaUUID()
        self.topic = try buffer.readKafkaString(compact: true)
        self.partition = try buffer.readKafkaInt32()
    }

    func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt32(self.fromNode)
        buffer.writeKafkaUUID(self.topicID)
        buffer.writeKafkaString(self.topic, compact: true)
        buffer.writeKafkaInt32(self.partition)
    }
}

struct PartitionCopyAheadResponse: KafkaResponseMessage, Equatable {
    static let apiKey = RafkaAPIKey.partitionCopyAhead
    static let schemaVersions: ClosedRange<Int16> = 0...0
    static let firstFlexibleVersion: Int16? = 0
    var errorCode: Int16 = 0
    var errorMessage: String?

    init(errorCode: Int16 = 0, errorMessage: String? = nil) {
        self.errorCode = errorCode
        self.errorMessage = errorMessage
    }

    init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.errorCode = try buffer.readKafkaInt16()
        self.errorMessage = try buffer.readKafkaNullableString(compact: true)
    }

    func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt16(self.errorCode)
        buffer.writeKafkaNullableString(self.errorMessage, compact: true)
    }
}

extension PartitionCopyAheadRequest: KafkaRequestWithResponse { typealias Response = PartitionCopyAheadResponse }
