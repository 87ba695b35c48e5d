import ChordCore
import KafkaProtocol
import RafkaCore

/// The ring as `ring describe` shows it: every data node's tokens, the arcs they own, and the
/// partitions placement gives each (computed here from the tokens and the topics, exactly as
/// the nodes compute it).
public struct RingReport: Sendable, Codable, Equatable {
    public struct Arc: Sendable, Codable, Equatable {
        /// The token, as 16 hex digits; it owns the keys in (previous token, token].
        public var token: String
        public var from: String
        /// The arc's share of the ring.
        public var share: Double
    }

    public struct Node: Sendable, Codable, Equatable {
        public var id: Int32
        /// `active` or `fenced`.
        public var state: String
        public var host: String
        public var port: Int32
        public var rack: String?
        /// The share of the ring the node owns as first replica (0 while fenced).
        public var ownership: Double
        /// Partitions whose first replica (leader) the node is.
        public var partitions: Int
        public var arcs: [Arc]
    }

    public var ringEpoch: Int64
    public var metadataOffset: Int64
    /// The node whose metadata image answered (-1: a controller).
    public var answeredBy: Int32
    public var partitions: Int
    public var nodes: [Node]
}

extension KafkaAdminClient {
    /// The ring from the connected node's metadata image, with placement over every topic.
    public func describeRing() async throws -> RingReport {
        guard self.connection.supports(DescribeRingRequest.self) else {
            throw KafkaClientError("this server does not describe a ring")
        }
        let response = try await self.connection.send(DescribeRingRequest())
        guard response.errorCode == 0 else {
            throw KafkaAdminError(code: KafkaErrorCode(rawValue: response.errorCode), message: nil, subject: "ring")
        }
        let topics = try await self.listTopics()
        return Self.report(response, topics: topics)
    }

    /// Arcs, ownership and partition leaders from the ring's tokens and the topics.
    static func report(_ response: DescribeRingResponse, topics: [TopicSummary]) -> RingReport {
        var serving: [NodeID: [RingPosition]] = [:]
        var racks: [NodeID: String] = [:]
        for node in response.nodes where !node.fenced && !node.tokens.isEmpty {
            serving[NodeID(node.id)] = node.tokens.map { RingPosition($0) }
            if let rack = node.rack { racks[NodeID(node.id)] = rack }
        }
        let ring = RingMap(tokens: serving, racks: racks)
        let ownership = ring.ownership()
        var leaders: [NodeID: Int] = [:]
        var partitionCount = 0
        if !ring.isEmpty {
            for topic in topics {
                guard let id = KafkaUUID(topic.id) else { continue }
                for partition in 0..<topic.partitions {
                    let key = RingHash.partitionKey(topicID: (id.high, id.low), partition: partition)
                    if let leader = ring.replicas(of: key, count: 1).first { leaders[leader, default: 0] += 1 }
                    partitionCount += 1
                }
            }
        }
        // Arcs are measured over every registered token: a fenced node keeps its place.
        let everyToken = response.nodes.flatMap { node in node.tokens.map { (token: $0, node: node.id) } }.sorted { $0.token < $1.token }
        var arcs: [Int32: [RingReport.Arc]] = [:]
        for (index, entry) in everyToken.enumerated() {
            let previous = everyToken[(index + everyToken.count - 1) % everyToken.count].token
            let length = everyToken.count == 1 ? UInt64.max : entry.token &- previous
            arcs[entry.node, default: []].append(
                .init(token: RingPosition(entry.token).description, from: RingPosition(previous).description,
                      share: Double(length) / 18_446_744_073_709_551_616.0))
        }
        return RingReport(
            ringEpoch: response.ringEpoch, metadataOffset: response.metadataOffset, answeredBy: response.answeredBy,
            partitions: partitionCount,
            nodes: response.nodes.sorted { $0.id < $1.id }.map { node in
                .init(
                    id: node.id, state: node.fenced ? "fenced" : "active", host: node.host, port: node.port, rack: node.rack,
                    ownership: ownership[NodeID(node.id)] ?? 0, partitions: leaders[NodeID(node.id)] ?? 0,
                    arcs: arcs[node.id] ?? [])
            })
    }
}
