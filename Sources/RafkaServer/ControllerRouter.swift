import KafkaProtocol
import Logging
import NIOCore
import RafkaCore
import RafkaStorage
import RaftCore

/// Rafka's own API keys on the controller listener (Kafka framing and request headers, keys
/// outside Kafka's range).
enum RafkaAPIKey {
    /// One Raft message between voters; no response.
    static let raftMessage = KafkaAPIKey(rawValue: 10001)
}

/// Serves the controller listener: Raft traffic between voters and the Kafka APIs that manage
/// the quorum (ApiVersions, DescribeQuorum, AddRaftVoter, RemoveRaftVoter), so that
/// `rafka-admin` and Kafka's own tools can talk to a controller directly.
struct ControllerRouter: FrameRouter {
    let controller: ControllerService

    static let supported: [(KafkaAPIKey, ClosedRange<Int16>)] = [
        (.apiVersions, 0...4),
        (.describeQuorum, 0...2),
        (.addRaftVoter, 0...0),
        (.removeRaftVoter, 0...0),
        (.metadata, 0...12),
        (.createTopics, 2...7),
        (.deleteTopics, 1...6),
        (.createPartitions, 0...3),
        (.describeConfigs, 1...4),
        (.alterConfigs, 0...2),
        (.incrementalAlterConfigs, 0...1),
        (.initProducerId, 0...4),
        (.describeCluster, 0...1),
        // Rafka's own, for data nodes (Kafka clients ignore keys they do not know).
        (RafkaAPIKey.registerNode, 0...0),
        (RafkaAPIKey.nodeHeartbeat, 0...0),
        (RafkaAPIKey.fetchMetadata, 0...1),
        (.rafkaDescribeNodes, 0...0),
        (.rafkaDescribeRing, 0...0),
    ]

    static let supportedByKey: [KafkaAPIKey: ClosedRange<Int16>] = Dictionary(uniqueKeysWithValues: supported)

    /// The controller's connections handle one request at a time anyway (Raft messages in order).
    func overlaps(_ frame: ByteBuffer) -> Bool { false }

    func handle(_ frame: ByteBuffer, on eventLoop: any EventLoop) -> EventLoopFuture<KafkaFrame?> {
        guard let prefix = KafkaHeaders.peekPrefix(frame) else {
            return eventLoop.makeFailedFuture(ConnectionFailure(reason: "request header is truncated"))
        }
        var body = frame
        let served = prefix.apiKey == RafkaAPIKey.raftMessage
            || Self.supportedByKey[prefix.apiKey].map { $0.contains(prefix.apiVersion) || prefix.apiKey == .apiVersions } == true
        guard served else {
            return eventLoop.makeFailedFuture(
                ConnectionFailure(reason: "\(prefix.apiKey) v\(prefix.apiVersion) is not served by a controller"))
        }
        let flexible = prefix.apiKey.isFlexibleRequest(prefix.apiVersion)
        let header: RequestHeader
        do {
            header = try RequestHeader(
                from: &body,
                version: KafkaHeaders.requestHeaderVersion(flexible: flexible, apiKey: prefix.apiKey, apiVersion: prefix.apiVersion))
        } catch {
            return eventLoop.makeFailedFuture(ConnectionFailure(reason: "malformed request header: \(error)"))
        }
        let controller = self.controller
        let context = RequestContext(
            apiKey: prefix.apiKey, apiVersion: prefix.apiVersion, correlationID: prefix.correlationID,
            clientID: header.clientId, eventLoop: eventLoop)
        let admin = controller.admin
        let logger = controller.logger
        switch prefix.apiKey {
        case RafkaAPIKey.raftMessage:
            let message: RaftMessage
            do {
                message = try RaftCodec.readMessage(&body)
            } catch {
                return eventLoop.makeFailedFuture(ConnectionFailure(reason: "malformed Raft message: \(error)"))
            }
            return eventLoop.makeFutureWithTask {
                await controller.quorum.step(message)
                return nil
            }
        case .apiVersions:
            var response = ApiVersionsResponse()
            response.apiKeys = Self.supported.map { .init(apiKey: $0.0.rawValue, minVersion: $0.1.lowerBound, maxVersion: $0.1.upperBound) }
            if prefix.apiVersion > 4 { response.errorCode = KafkaErrorCode.unsupportedVersion.rawValue }
            let version = min(prefix.apiVersion, 4)
            return eventLoop.makeSucceededFuture(
                RequestRouter.encode(response, apiKey: .apiVersions, version: prefix.apiVersion > 4 ? 0 : version, correlationID: prefix.correlationID))
        case .describeQuorum:
            return Self.serve(DescribeQuorumRequest.self, body, prefix, eventLoop) { _ in await controller.describeQuorum() }
        case .addRaftVoter:
            return Self.serve(AddRaftVoterRequest.self, body, prefix, eventLoop) { await controller.addVoter($0) }
        case .removeRaftVoter:
            return Self.serve(RemoveRaftVoterRequest.self, body, prefix, eventLoop) { await controller.removeVoter($0) }
        case RafkaAPIKey.registerNode:
            return Self.serve(RegisterNodeRequest.self, body, prefix, eventLoop) { await controller.registerNode($0) }
        case RafkaAPIKey.nodeHeartbeat:
            return Self.serve(NodeHeartbeatRequest.self, body, prefix, eventLoop) { await controller.heartbeat($0) }
        case RafkaAPIKey.fetchMetadata:
            return Self.serve(FetchMetadataRequest.self, body, prefix, eventLoop) { await controller.fetchMetadata($0) }
        case .describeCluster:
            return Self.serve(DescribeClusterRequest.self, body, prefix, eventLoop) { await controller.describeCluster($0) }
        case .rafkaDescribeNodes:
            return Self.serve(DescribeNodesRequest.self, body, prefix, eventLoop) { _ in await controller.describeNodes() }
        case .rafkaDescribeRing:
            return Self.serve(DescribeRingRequest.self, body, prefix, eventLoop) { _ in await controller.describeRing() }
        case .metadata:
            return Self.serve(MetadataRequest.self, body, prefix, eventLoop) { await controller.metadata($0, version: prefix.apiVersion) }
        case .createTopics: return RequestRouter.serve(CreateTopicsRequest.self, body, context, logger: logger, admin.createTopics)
        case .deleteTopics: return RequestRouter.serve(DeleteTopicsRequest.self, body, context, logger: logger, admin.deleteTopics)
        case .createPartitions:
            return RequestRouter.serve(CreatePartitionsRequest.self, body, context, logger: logger, admin.createPartitions)
        case .describeConfigs:
            return RequestRouter.serve(DescribeConfigsRequest.self, body, context, logger: logger, admin.describeConfigs)
        case .alterConfigs: return RequestRouter.serve(AlterConfigsRequest.self, body, context, logger: logger, admin.alterConfigs)
        case .incrementalAlterConfigs:
            return RequestRouter.serve(IncrementalAlterConfigsRequest.self, body, context, logger: logger, admin.incrementalAlterConfigs)
        case .initProducerId:
            return RequestRouter.serve(InitProducerIdRequest.self, body, context, logger: logger, admin.initProducerID)
        default:
            return eventLoop.makeFailedFuture(ConnectionFailure(reason: "API \(prefix.apiKey) is not served by a controller"))
        }
    }

    private static func serve<Request: KafkaRequestMessage, Response: KafkaResponseMessage>(
        _: Request.Type,
        _ body: ByteBuffer,
        _ prefix: (apiKey: KafkaAPIKey, apiVersion: Int16, correlationID: Int32),
        _ eventLoop: any EventLoop,
        _ handler: @escaping @Sendable (Request) async -> Response
    ) -> EventLoopFuture<KafkaFrame?> {
        var reader = body
        let request: Request
        do {
            request = try Request(from: &reader, version: prefix.apiVersion)
        } catch {
            return eventLoop.makeFailedFuture(ConnectionFailure(reason: "malformed \(prefix.apiKey) request: \(error)"))
        }
        return eventLoop.makeFutureWithTask {
            let response = await handler(request)
            return RequestRouter.encode(response, apiKey: prefix.apiKey, version: prefix.apiVersion, correlationID: prefix.correlationID)
        }
    }
}

/// A Raft message as a one-way request frame to a peer controller.
enum RaftFrames {
    static func frame(_ message: RaftMessage, correlationID: Int32) -> ByteBuffer {
        var frame = ByteBuffer()
        frame.writeInteger(Int32(0))
        RequestHeader(requestApiKey: RafkaAPIKey.raftMessage.rawValue, requestApiVersion: 0, correlationId: correlationID, clientId: "raft")
            .encode(into: &frame, version: 2)
        RaftCodec.writeMessage(message, into: &frame)
        frame.setInteger(Int32(frame.readableBytes - 4), at: 0)
        return frame
    }
}
