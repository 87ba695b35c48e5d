import KafkaProtocol
import NIOCore

/// The controller quorum as `cluster describe` shows it.
public struct QuorumReport: Sendable, Codable, Equatable {
    public struct Voter: Sendable, Codable, Equatable {
        public var id: Int32
        /// The voter's last log index as the leader last heard it (-1: unknown).
        public var matchIndex: Int64
        /// How far behind the leader's commit index (-1: unknown).
        public var lag: Int64
    }

    public struct DataNode: Sendable, Codable, Equatable {
        public var id: Int32
        /// `active` or `fenced`.
        public var state: String
        /// The node's Kafka listener and rack, as registered (nil when only DescribeQuorum answered).
        public var host: String?
        public var port: Int32?
        public var rack: String?
        /// The registration's incarnation epoch.
        public var incarnation: Int64?
        /// The metadata offset the node last reported applying (-1: unknown).
        public var appliedOffset: Int64
        /// Milliseconds since the controller leader last heard from the node (-1: unknown).
        public var lastHeartbeatAgeMs: Int64
    }

    public struct Controller: Sendable, Codable, Equatable {
        public var id: Int32
        public var host: String
        public var port: Int
    }

    public var leaderId: Int32
    public var term: Int64
    public var commitIndex: Int64
    public var voters: [Voter]
    public var nodes: [DataNode]
    /// The controller that answered.
    public var answeredBy: String
    /// The controllers' listeners, as the answering node knows them.
    public var controllers: [Controller] = []

    var leaderEndpoint: Controller? { self.controllers.first { $0.id == self.leaderId } }
}

extension KafkaAdminClient {
    /// The metadata quorum, asked of the leader (found through whichever node answers first).
    public func describeQuorum() async throws -> QuorumReport {
        var report = try await Self.describeQuorum(self.connection)
        report.answeredBy = "\(self.connection)"
        // Only the leader knows every voter's progress and when each data node last reported.
        let needsLeader = report.voters.count > 1 && report.leaderEndpoint != nil
            && (report.voters.contains { $0.matchIndex < 0 } || report.nodes.contains { $0.lastHeartbeatAgeMs < 0 && $0.state == "active" })
        if needsLeader, let leader = report.leaderEndpoint {
            let leaderConnection = try await KafkaConnection.connect(host: leader.host, port: leader.port, clientID: "rafka-admin")
            defer { leaderConnection.close() }
            report = try await Self.describeQuorum(leaderConnection)
            report.answeredBy = "\(leader.host):\(leader.port)"
        }
        return report
    }

    private static func describeQuorum(_ connection: KafkaConnection) async throws -> QuorumReport {
        guard connection.supports(DescribeQuorumRequest.self) else {
            throw KafkaClientError("this server does not describe a controller quorum")
        }
        let response = try await connection.send(
            DescribeQuorumRequest(topics: [.init(topicName: "__cluster_metadata", partitions: [.init(partitionIndex: 0)])]))
        guard response.errorCode == 0, let partition = response.topics.first?.partitions.first else {
            throw KafkaAdminError(code: KafkaErrorCode(rawValue: response.errorCode), message: response.errorMessage, subject: "quorum")
        }
        guard partition.errorCode == 0 else {
            throw KafkaAdminError(code: KafkaErrorCode(rawValue: partition.errorCode), message: partition.errorMessage, subject: "quorum")
        }
        var report = QuorumReport(
            leaderId: partition.leaderId, term: Int64(partition.leaderEpoch), commitIndex: partition.highWatermark,
            voters: partition.currentVoters.map {
                .init(id: $0.replicaId, matchIndex: $0.logEndOffset, lag: $0.logEndOffset < 0 ? -1 : max(0, partition.highWatermark - $0.logEndOffset))
            },
            nodes: partition.observers.map {
                .init(id: $0.replicaId, state: "active", appliedOffset: $0.logEndOffset, lastHeartbeatAgeMs: -1)
            },
            answeredBy: "")
        report.controllers = response.nodes.compactMap { node in
            node.listeners.first.map { QuorumReport.Controller(id: node.nodeId, host: $0.host, port: Int($0.port)) }
        }
        if connection.supports(DescribeNodesRequest.self) {
            // A controller lists fenced nodes too, with listeners, racks and incarnations.
            let described = try await connection.send(DescribeNodesRequest())
            if described.errorCode == 0 {
                report.nodes = described.nodes.map {
                    .init(
                        id: $0.id, state: $0.fenced ? "fenced" : "active", host: $0.host, port: $0.port, rack: $0.rack,
                        incarnation: $0.incarnation, appliedOffset: $0.appliedOffset, lastHeartbeatAgeMs: $0.lastHeartbeatAgeMs)
                }
            }
        }
        return report
    }

    /// Adds controller `id` (listening at `host:port`) to the quorum, through the leader.
    public func addController(id: Int32, host: String, port: Int) async throws {
        let leader = try await self.leaderConnection()
        defer { if leader !== self.connection { leader.close() } }
        let response = try await leader.send(
            AddRaftVoterRequest(timeoutMs: 30_000, voterId: id, listeners: [.init(name: "CONTROLLER", host: host, port: UInt16(port))]))
        guard response.errorCode == 0 else {
            throw KafkaAdminError(code: KafkaErrorCode(rawValue: response.errorCode), message: response.errorMessage, subject: "controller \(id)")
        }
    }

    /// Removes controller `id` from the quorum, through the leader.
    public func removeController(id: Int32) async throws {
        let leader = try await self.leaderConnection()
        defer { if leader !== self.connection { leader.close() } }
        let response = try await leader.send(RemoveRaftVoterRequest(voterId: id))
        guard response.errorCode == 0 else {
            throw KafkaAdminError(code: KafkaErrorCode(rawValue: response.errorCode), message: response.errorMessage, subject: "controller \(id)")
        }
    }

    func leaderConnection() async throws -> KafkaConnection {
        let report = try await Self.describeQuorum(self.connection)
        guard let leader = report.leaderEndpoint else {
            if report.leaderId >= 0 { return self.connection }
            throw KafkaClientError("the controller quorum has no leader now")
        }
        return try await KafkaConnection.connect(host: leader.host, port: leader.port, clientID: "rafka-admin")
    }
}

