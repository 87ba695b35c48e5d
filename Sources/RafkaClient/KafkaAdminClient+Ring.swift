import ChordCore
import KafkaProtocol
import NIOCore
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

    /// One of a node's tokens with its ring neighbours as that node's Chord sees them, each as
    /// "node@token" ("-" when none is known).
    public struct TokenView: Sendable, Codable, Equatable {
        public var token: String
        public var predecessor: String
        public var successor: String
    }

    public struct Node: Sendable, Codable, Equatable {
        public var id: Int32
        /// `active`, `fenced` (its partitions wait for it, or pass on if the topic allows an
        /// unclean takeover), `joining` (new: copying what it will lead before it is placed) or
        /// `leaving` (controlled shutdown: its partitions pass on).
        public var state: String
        public var host: String
        public var port: Int32
        public var rack: String?
        /// The share of the ring the node owns as first replica (0 unless active).
        public var ownership: Double
        /// Partitions whose leader the node is, by placement.
        public var partitions: Int
        public var arcs: [Arc]
        /// Asked of the node itself (nil when it did not answer): the partitions it serves now,
        /// their bytes, and its view of its tokens' neighbours.
        public var served: Int?
        public var bytes: Int64?
        public var view: [TokenView]?
    }

    public var ringEpoch: Int64
    public var metadataOffset: Int64
    /// The node whose metadata image answered (-1: a controller).
    public var answeredBy: Int32
    public var partitions: Int
    public var nodes: [Node]
}

extension KafkaAdminClient {
    /// The ring from the connected node's metadata image with placement over every topic; then
    /// each running data node is asked what it serves and how its Chord sees its tokens'
    /// neighbours.
    public func describeRing() async throws -> RingReport {
        guard self.connection.supports(DescribeRingRequest.self) else {
            throw KafkaClientError("this server does not describe a ring")
        }
        let response = try await self.connection.send(DescribeRingRequest())
        guard response.errorCode == 0 else {
            throw KafkaAdminError(code: KafkaErrorCode(rawValue: response.errorCode), message: nil, subject: "ring")
        }
        var report = Self.report(response)
        for index in report.nodes.indices where report.nodes[index].state != "fenced" {
            let node = report.nodes[index]
            let own: DescribeRingResponse
            if node.id == response.answeredBy {
                own = response
            } else {
                guard let answer = await Self.ask(host: node.host, port: node.port, DescribeRingRequest()) else { continue }
                own = answer
            }
            report.nodes[index].served = Int(own.servedPartitions)
            report.nodes[index].bytes = own.servedBytes
            report.nodes[index].view = own.views.map { view in
                let name = { (node: Int32, token: UInt64) in node < 0 ? "-" : "\(node)@\(RingPosition(token))" }
                return .init(
                    token: RingPosition(view.token).description, predecessor: name(view.predecessorNode, view.predecessorToken),
                    successor: name(view.successorNode, view.successorToken))
            }
        }
        return report
    }

    /// Sends `request` on a connection of its own to another node: nil when the node cannot be
    /// reached within 2 s or does not answer within 5 s (a report then leaves it out).
    static func ask<Request: KafkaRequestWithResponse>(host: String, port: Int32, _ request: Request) async -> Request.Response? {
        guard
            let connection = try? await KafkaConnection.connect(
                host: host, port: Int(port), clientID: "rafka-admin", connectTimeout: .seconds(2))
        else { return nil }
        defer { connection.close() }
        return try? await connection.send(request, timeout: .seconds(5))
    }

    /// Arcs and ownership from the ring's tokens; partition leaders as the answering node's
    /// placement gives them.
    static func report(_ response: DescribeRingResponse) -> RingReport {
        var serving: [NodeID: [RingPosition]] = [:]
        var racks: [NodeID: String] = [:]
        for node in response.nodes where !node.fenced && !node.leaving && !node.joining && !node.tokens.isEmpty {
            serving[NodeID(node.id)] = node.tokens.map { RingPosition($0) }
            if let rack = node.rack { racks[NodeID(node.id)] = rack }
        }
        let ownership = RingMap(tokens: serving, racks: racks).ownership()
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
            partitions: Int(response.partitions),
            nodes: response.nodes.sorted { $0.id < $1.id }.map { node in
                .init(
                    id: node.id, state: node.fenced ? "fenced" : node.leaving ? "leaving" : node.joining ? "joining" : "active", host: node.host, port: node.port,
                    rack: node.rack, ownership: ownership[NodeID(node.id)] ?? 0, partitions: Int(node.leaderPartitions),
                    arcs: arcs[node.id] ?? [], served: nil, bytes: nil, view: nil)
            })
    }
}
