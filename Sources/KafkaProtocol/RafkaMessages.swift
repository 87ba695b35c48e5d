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
        /// Asked to leave (controlled shutdown): its partitions pass to the next nodes.
        public var leaving: Bool
        /// New, copying what it will lead before it is placed.
        public var joining: Bool
        /// Ring positions, as unsigned 64-bit values.
        public var tokens: [UInt64]
        /// Partitions the answering node's placement gives this node to lead.
        public var leaderPartitions: Int32

        public init(
            id: Int32, host: String, port: Int32, rack: String?, fenced: Bool, leaving: Bool = false, joining: Bool = false, tokens: [UInt64],
            leaderPartitions: Int32 = 0
        ) {
            self.joining = joining
            self.id = id
            self.host = host
            self.port = port
            self.rack = rack
            self.fenced = fenced
            self.leaving = leaving
            self.tokens = tokens
            self.leaderPartitions = leaderPartitions
        }
    }

    /// One of the answering node's tokens with its predecessor and successor as the node's Chord
    /// sees them (node -1: none known).
    public struct TokenView: Sendable, Equatable {
        public var token: UInt64
        public var predecessorNode: Int32
        public var predecessorToken: UInt64
        public var successorNode: Int32
        public var successorToken: UInt64

        public init(token: UInt64, predecessorNode: Int32, predecessorToken: UInt64, successorNode: Int32, successorToken: UInt64) {
            self.token = token
            self.predecessorNode = predecessorNode
            self.predecessorToken = predecessorToken
            self.successorNode = successorNode
            self.successorToken = successorToken
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
    /// Partitions of every topic.
    public var partitions: Int32 = 0
    /// What the answering data node itself serves, and its Chord view (empty elsewhere).
    public var servedPartitions: Int32 = 0
    public var servedBytes: Int64 = 0
    public var views: [TokenView] = []

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
            let leaving = try buffer.readKafkaBool()
            let joining = try buffer.readKafkaBool()
            let tokenCount = try buffer.readKafkaArrayCount(compact: true) ?? 0
            guard tokenCount <= Self.tokensPerNodeMax, buffer.readableBytes >= tokenCount * 8 else {
                throw KafkaDecodingError(.lengthExceedsBuffer, "ring node with \(tokenCount) tokens")
            }
            let tokens = (0..<tokenCount).map { _ in buffer.readInteger(as: UInt64.self)! }
            let leaderPartitions = try buffer.readKafkaInt32()
            self.nodes.append(
                Node(
                    id: id, host: host, port: port, rack: rack, fenced: fenced, leaving: leaving, joining: joining, tokens: tokens,
                    leaderPartitions: leaderPartitions))
        }
        self.partitions = try buffer.readKafkaInt32()
        self.servedPartitions = try buffer.readKafkaInt32()
        self.servedBytes = try buffer.readKafkaInt64()
        let viewCount = try buffer.readKafkaArrayCount(compact: true) ?? 0
        guard viewCount <= Self.tokensPerNodeMax, buffer.readableBytes >= viewCount * 32 else {
            throw KafkaDecodingError(.lengthExceedsBuffer, "ring view of \(viewCount) tokens")
        }
        for _ in 0..<viewCount {
            self.views.append(
                TokenView(
                    token: buffer.readInteger()!, predecessorNode: buffer.readInteger()!, predecessorToken: buffer.readInteger()!,
                    successorNode: buffer.readInteger()!, successorToken: buffer.readInteger()!))
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
            buffer.writeKafkaBool(node.leaving)
            buffer.writeKafkaBool(node.joining)
            buffer.writeKafkaArrayCount(node.tokens.count, compact: true)
            for token in node.tokens { buffer.writeInteger(token) }
            buffer.writeKafkaInt32(node.leaderPartitions)
        }
        buffer.writeKafkaInt32(self.partitions)
        buffer.writeKafkaInt32(self.servedPartitions)
        buffer.writeKafkaInt64(self.servedBytes)
        buffer.writeKafkaArrayCount(self.views.count, compact: true)
        for view in self.views {
            buffer.writeInteger(view.token)
            buffer.writeInteger(view.predecessorNode)
            buffer.writeInteger(view.predecessorToken)
            buffer.writeInteger(view.successorNode)
            buffer.writeInteger(view.successorToken)
        }
    }
}

extension KafkaAPIKey {
    /// The answering node's hot cache: budget, contents, hits, misses and evictions.
    public static let rafkaDescribeCache = KafkaAPIKey(rawValue: 10010)
}

/// Asks a data node or standalone broker how its hot cache is doing.
public struct DescribeCacheRequest: KafkaRequestMessage {
    public static let apiKey = KafkaAPIKey.rafkaDescribeCache
    public static let schemaVersions: ClosedRange<Int16> = 0...0
    public static let firstFlexibleVersion: Int16? = 0

    public init() {}

    public init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {}

    public func encode(into buffer: inout ByteBuffer, version: Int16) {}
}

/// The counters are since the node started.
public struct DescribeCacheResponse: KafkaResponseMessage, Equatable {
    public static let apiKey = KafkaAPIKey.rafkaDescribeCache
    public static let schemaVersions: ClosedRange<Int16> = 0...0
    public static let firstFlexibleVersion: Int16? = 0

    public var errorCode: Int16 = 0
    public var nodeID: Int32 = -1
    public var bytesMax: Int64 = 0
    public var maxAgeMilliseconds: Int64 = 0
    public var bytes: Int64 = 0
    public var batches: Int64 = 0
    public var partitions: Int32 = 0
    public var hits: Int64 = 0
    public var hitBytes: Int64 = 0
    public var misses: Int64 = 0
    public var missBytes: Int64 = 0
    public var evictedForBytes: Int64 = 0
    public var evictedForAge: Int64 = 0

    public init() {}

    public init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {
        self.errorCode = try buffer.readKafkaInt16()
        self.nodeID = try buffer.readKafkaInt32()
        self.bytesMax = try buffer.readKafkaInt64()
        self.maxAgeMilliseconds = try buffer.readKafkaInt64()
        self.bytes = try buffer.readKafkaInt64()
        self.batches = try buffer.readKafkaInt64()
        self.partitions = try buffer.readKafkaInt32()
        self.hits = try buffer.readKafkaInt64()
        self.hitBytes = try buffer.readKafkaInt64()
        self.misses = try buffer.readKafkaInt64()
        self.missBytes = try buffer.readKafkaInt64()
        self.evictedForBytes = try buffer.readKafkaInt64()
        self.evictedForAge = try buffer.readKafkaInt64()
    }

    public func encode(into buffer: inout ByteBuffer, version: Int16) {
        buffer.writeKafkaInt16(self.errorCode)
        buffer.writeKafkaInt32(self.nodeID)
        buffer.writeKafkaInt64(self.bytesMax)
        buffer.writeKafkaInt64(self.maxAgeMilliseconds)
        buffer.writeKafkaInt64(self.bytes)
        buffer.writeKafkaInt64(self.batches)
        buffer.writeKafkaInt32(self.partitions)
        buffer.writeKafkaInt64(self.hits)
        buffer.writeKafkaInt64(self.hitBytes)
        buffer.writeKafkaInt64(self.misses)
        buffer.writeKafkaInt64(self.missBytes)
        buffer.writeKafkaInt64(self.evictedForBytes)
        buffer.writeKafkaInt64(self.evictedForAge)
    }
}
