import NIOCore

// Rafka's own APIs that clients use too (the controller-internal ones live with the server).
// Keys from 10000 up, framed like Kafka requests (header v2), version 0, fields in order with
// Kafka's compact types.

extension KafkaAPIKey {
    /// The data nodes the metadata image registers, with what the controller leader knows of
    /// their liveness.
    public static let rafkaDescribeNodes = KafkaAPIKey(rawValue: 10006)
}

/// Asks a controller for every registered data node.
public struct DescribeNodesRequest: KafkaRequestMessage {
    public static let apiKey = KafkaAPIKey.rafkaDescribeNodes
    public static let schemaVersions: ClosedRange<Int16> = 0...0
    public static let firstFlexibleVersion: Int16? = 0

    public init() {}

    public init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {}

    public func encode(into buffer: inout ByteBuffer, version: Int16) {}
}

public struct DescribeNodesResponse: KafkaResponseMessage {
    public static let apiKey = KafkaAPIKey.rafkaDescribeNodes
    public static let schemaVersions: ClosedRange<Int16> = 0...0
    public static let firstFlexibleVersion: Int16? = 0

    public struct Node: Sendable, Equatable {
        public var id: Int32
        public var host: String
        public var port: Int32
        public var rack: String?
        /// The registration's incarnation epoch (a restarted node gets a new one).
        public var incarnation: Int64
        public var fenced: Bool
        /// The metadata offset the node last reported applying (-1: not known to this controller).
        public var appliedOffset: Int64
        /// Milliseconds since the controller leader last heard from the node (-1: not known).
        public var lastHeartbeatAgeMs: Int64

        public init(
            id: Int32, host: String, port: Int32, rack: String?, incarnation: Int64, fenced: Bool, appliedOffset: Int64 = -1,
            lastHeartbeatAgeMs: Int64 = -1
        ) {
            self.id = id
            self.host = host
            self.port = port
            self.rack = rack
            self.incarnation = incarnation
            self.fenced = fenced
            self.appliedOffset = appliedOffset
            self.lastHeartbeatAgeMs = lastHeartbeatAgeMs
        }
    }

    public var errorCode: Int16 = 0
    /// Whether the answering controller leads (only the leader knows liveness).
    public var fromLeader = false
    public var nodes: [Node] = []

    public init(errorCode: Int16 = 0, fromLeader: Bool = false, nodes: [Node] = []) {
        self.errorCode = errorCode
        self.fromLeader = fromLeader
        self.nodes = nodes
    }

    public init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.errorCode = try buffer.readKafkaInt16()
        self.fromLeader = try buffer.readKafkaBool()
        let count = try buffer.readKafkaArrayCount(compact: true) ?? 0
        self.nodes.reserveCapacity(min(count, 1024))
        for _ in 0..<count {
            self.nodes.append(
                Node(
                    id: try buffer.readKafkaInt32(), host: try buffer.readKafkaString(compact: true), port: try buffer.readKafkaInt32(),
                    rack: try buffer.readKafkaNullableString(compact: true), incarnation: try buffer.readKafkaInt64(),
                    fenced: try buffer.readKafkaBool(), appliedOffset: try buffer.readKafkaInt64(),
                    lastHeartbeatAgeMs: try buffer.readKafkaInt64()))
        }
    }

    public func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt16(self.errorCode)
        buffer.writeKafkaBool(self.fromLeader)
        buffer.writeKafkaArrayCount(self.nodes.count, compact: true)
        for node in self.nodes {
            buffer.writeKafkaInt32(node.id)
            buffer.writeKafkaString(node.host, compact: true)
            buffer.writeKafkaInt32(node.port)
            buffer.writeKafkaNullableString(node.rack, compact: true)
            buffer.writeKafkaInt64(node.incarnation)
            buffer.writeKafkaBool(node.fenced)
            buffer.writeKafkaInt64(node.appliedOffset)
            buffer.writeKafkaInt64(node.lastHeartbeatAgeMs)
        }
    }
}

extension KafkaAPIKey {
    /// The ring as the answering node's metadata image has it: epoch, every registered data
    /// node and its tokens.
    public static let rafkaDescribeRing = KafkaAPIKey(rawValue: 10007)
}

/// Asks any node (data node, standalone or controller) for the ring its metadata image holds.
public struct DescribeRingRequest: KafkaRequestMessage {
    public static let apiKey = KafkaAPIKey.rafkaDescribeRing
    public static let schemaVersions: ClosedRange<Int16> = 0...0
    public static let firstFlexibleVersion: Int16? = 0

    public init() {}

    public init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {}

    public func encode(into buffer: inout ByteBuffer, version: Int16) {}
}

public struct DescribeRingResponse: KafkaResponseMessage {
    public static let apiKey = KafkaAPIKey.rafkaDescribeRing
    public static let schemaVersions: ClosedRange<Int16> = 0...0
    public static let firstFlexibleVersion: Int16? = 0
    /// Tokens per node a response may carry (the configuration's maximum).
    public static let tokensPerNodeMax = 1024

    public struct Node: Sendable, Equatable {
        public var id: Int32
        public var host: String
        public var port: Int32
        public var rack: String?
        public var fenced: Bool
        /// Ring positions, as unsigned 64-bit values.
        public var tokens: [UInt64]

        public init(id: Int32, host: String, port: Int32, rack: String?, fenced: Bool, tokens: [UInt64]) {
            self.id = id
            self.host = host
            self.port = port
            self.rack = rack
            self.fenced = fenced
            self.tokens = tokens
        }
    }

    public var errorCode: Int16 = 0
    /// Bumped by every membership change the metadata log commits.
    public var ringEpoch: Int64 = 0
    /// The metadata offset of the image answered from.
    public var metadataOffset: Int64 = 0
    /// The node that answered (-1 for a controller's own answer when it is not a data node).
    public var answeredBy: Int32 = -1
    public var nodes: [Node] = []

    public init(errorCode: Int16 = 0, ringEpoch: Int64 = 0, metadataOffset: Int64 = 0, answeredBy: Int32 = -1, nodes: [Node] = []) {
        self.errorCode = errorCode
        self.ringEpoch = ringEpoch
        self.metadataOffset = metadataOffset
        self.answeredBy = answeredBy
        self.nodes = nodes
    }

    public init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.errorCode = try buffer.readKafkaInt16()
        self.ringEpoch = try buffer.readKafkaInt64()
        self.metadataOffset = try buffer.readKafkaInt64()
        self.answeredBy = try buffer.readKafkaInt32()
        let count = try buffer.readKafkaArrayCount(compact: true) ?? 0
        self.nodes.reserveCapacity(min(count, 1024))
        for _ in 0..<count {
            let id = try buffer.readKafkaInt32()
            let host = try buffer.readKafkaString(compact: true)
            let port = try buffer.readKafkaInt32()
            let rack = try buffer.readKafkaNullableString(compact: true)
            let fenced = try buffer.readKafkaBool()
            let tokenCount = try buffer.readKafkaArrayCount(compact: true) ?? 0
            guard tokenCount <= Self.tokensPerNodeMax, buffer.readableBytes >= tokenCount * 8 else {
                throw KafkaDecodingError(.lengthExceedsBuffer, "ring node with \(tokenCount) tokens")
            }
            let tokens = (0..<tokenCount).map { _ in buffer.readInteger(as: UInt64.self)! }
            self.nodes.append(Node(id: id, host: host, port: port, rack: rack, fenced: fenced, tokens: tokens))
        }
    }

    public func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt16(self.errorCode)
        buffer.writeKafkaInt64(self.ringEpoch)
        buffer.writeKafkaInt64(self.metadataOffset)
        buffer.writeKafkaInt32(self.answeredBy)
        buffer.writeKafkaArrayCount(self.nodes.count, compact: true)
        for node in self.nodes {
            buffer.writeKafkaInt32(node.id)
            buffer.writeKafkaString(node.host, compact: true)
            buffer.writeKafkaInt32(node.port)
            buffer.writeKafkaNullableString(node.rack, compact: true)
            buffer.writeKafkaBool(node.fenced)
            buffer.writeKafkaArrayCount(node.tokens.count, compact: true)
            for token in node.tokens { buffer.writeInteger(token) }
        }
    }
}
