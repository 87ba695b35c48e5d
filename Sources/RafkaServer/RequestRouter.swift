import ChordCore
import KafkaProtocol
import Logging
import NIOCore

/// What the router knows about one request after reading its header.
struct RequestContext: Sendable {
    var apiKey: KafkaAPIKey
    var apiVersion: Int16
    var correlationID: Int32
    var clientID: String?
    /// The connection's event loop; handlers return futures on it.
    var eventLoop: any EventLoop
}

/// The request could not be served and the connection must close (Kafka closes on malformed
/// requests, unknown API keys and unsupported versions of anything but ApiVersions).
struct ConnectionFailure: Error, CustomStringConvertible {
    var reason: String
    var description: String { self.reason }
}

/// Turns one request frame into the response frame to send back (nil: none is due). A failed
/// future with `ConnectionFailure` means: log and close the connection.
protocol FrameRouter: Sendable {
    func handle(_ frame: ByteBuffer, on eventLoop: any EventLoop) -> EventLoopFuture<KafkaFrame?>

    /// Whether the request in `frame` may be handled while another of its connection for which
    /// this is false is (see `KafkaConnectionHandler`).
    func overlaps(_ frame: ByteBuffer) -> Bool
}

/// Decodes each request frame, dispatches it to `KafkaAPIs` and encodes the response with the
/// right header. Stateless; one per broker.
struct RequestRouter: FrameRouter {
    let apis: KafkaAPIs

    /// The APIs and versions Rafka serves (ApiVersions advertises exactly these).
    static let supported: [(KafkaAPIKey, ClosedRange<Int16>)] = [
        (.produce, 3...10),
        (.fetch, 4...16),
        (.listOffsets, 1...7),
        (.offsetForLeaderEpoch, 0...4),
        (.metadata, 0...12),
        (.apiVersions, 0...4),
        (.createTopics, 2...7),
        (.deleteTopics, 1...6),
        (.initProducerId, 0...4),
        (.describeConfigs, 1...4),
        (.alterConfigs, 0...2),
        (.createPartitions, 0...3),
        (.incrementalAlterConfigs, 0...1),
        (.describeCluster, 0...1),
        (.describeQuorum, 0...2),
        // Rafka's own (Kafka clients ignore keys they do not know).
        (.rafkaDescribeRing, 0...0),
        (.rafkaDescribeCache, 0...0),
        (RafkaAPIKey.partitionHandoff, 0...0),
        (RafkaAPIKey.partitionCopyAhead, 0...0),
        (RafkaAPIKey.chordMessage, 0...0),
    ]

    static let supportedByKey: [KafkaAPIKey: ClosedRange<Int16>] = Dictionary(uniqueKeysWithValues: supported)

    /// The requests a connection may have in flight beside others: produce and fetch (the data
    /// path, whose answers are small or bounded by `max-read-memory-bytes`), and the ring's
    /// messages between nodes. Every other request waits for the one before it, as Kafka handles
    /// every request of a connection: their answers can be far larger than what asked for them
    /// (30 bytes of Metadata v1 for a topic of 10,000 partitions take 260 KB), and 64 at once
    /// kept ~75 MiB per connection whose client read none of them.
    static let overlapping: Set<KafkaAPIKey> = [
        .produce, .fetch, RafkaAPIKey.chordMessage, RafkaAPIKey.partitionHandoff, RafkaAPIKey.partitionCopyAhead,
    ]

    func overlaps(_ frame: ByteBuffer) -> Bool { Self.overlaps(frame) }

    static func overlaps(_ frame: ByteBuffer) -> Bool {
        KafkaHeaders.peekPrefix(frame).map { Self.overlapping.contains($0.apiKey) } ?? false
    }

    /// Handles one frame. The future's value is the encoded response frame, or nil when none is
    /// due (acks=0). A failed future with `ConnectionFailure` means: log and close.
    func handle(_ frame: ByteBuffer, on eventLoop: any EventLoop) -> EventLoopFuture<KafkaFrame?> {
        var body = frame
        let context: RequestContext
        do {
            context = try self.readHeader(&body, eventLoop: eventLoop)
        } catch let failure as ConnectionFailure {
            return eventLoop.makeFailedFuture(failure)
        } catch {
            return eventLoop.makeFailedFuture(ConnectionFailure(reason: "malformed request header: \(error)"))
        }
        switch context.apiKey {
        case .produce: return self.serve(ProduceRequest.self, body, context, self.apis.produce)
        case .fetch:
            return Self.serveEncoding(FetchRequest.self, body, context, logger: self.apis.logger, self.apis.fetch)
        case .listOffsets: return self.serve(ListOffsetsRequest.self, body, context, self.apis.listOffsets)
        case .offsetForLeaderEpoch:
            return self.serve(OffsetForLeaderEpochRequest.self, body, context, self.apis.offsetForLeaderEpoch)
        case .metadata: return self.serve(MetadataRequest.self, body, context, self.apis.metadata)
        case .apiVersions: return self.serve(ApiVersionsRequest.self, body, context, self.apis.apiVersions)
        case .createTopics: return self.serve(CreateTopicsRequest.self, body, context, self.apis.admin.createTopics)
        case .deleteTopics: return self.serve(DeleteTopicsRequest.self, body, context, self.apis.admin.deleteTopics)
        case .initProducerId: return self.serve(InitProducerIdRequest.self, body, context, self.apis.admin.initProducerID)
        case .describeConfigs: return self.serve(DescribeConfigsRequest.self, body, context, self.apis.admin.describeConfigs)
        case .alterConfigs: return self.serve(AlterConfigsRequest.self, body, context, self.apis.admin.alterConfigs)
        case .createPartitions: return self.serve(CreatePartitionsRequest.self, body, context, self.apis.admin.createPartitions)
        case .incrementalAlterConfigs:
            return self.serve(IncrementalAlterConfigsRequest.self, body, context, self.apis.admin.incrementalAlterConfigs)
        case .describeCluster: return self.serve(DescribeClusterRequest.self, body, context, self.apis.describeCluster)
        case .describeQuorum: return self.serve(DescribeQuorumRequest.self, body, context, self.apis.describeQuorum)
        case .rafkaDescribeRing: return self.serve(DescribeRingRequest.self, body, context, self.apis.describeRing)
        case .rafkaDescribeCache: return self.serve(DescribeCacheRequest.self, body, context, self.apis.describeCache)
        case RafkaAPIKey.partitionHandoff: return self.serve(PartitionHandoffRequest.self, body, context, self.apis.partitionHandoff)
        case RafkaAPIKey.partitionCopyAhead:
            return self.serve(PartitionCopyAheadRequest.self, body, context, self.apis.partitionCopyAhead)
        case RafkaAPIKey.chordMessage:
            // One-way: nothing is sent back.
            guard let chord = self.apis.broker.chord else {
                return eventLoop.makeFailedFuture(ConnectionFailure(reason: "Chord messages go to data nodes"))
            }
            let message: ChordMessage
            do {
                message = try ChordCodec.read(from: &body)
            } catch {
                return eventLoop.makeFailedFuture(ConnectionFailure(reason: "malformed Chord message: \(error)"))
            }
            return eventLoop.makeFutureWithTask {
                await chord.receive(message)
                return nil
            }
        default:
            return eventLoop.makeFailedFuture(ConnectionFailure(reason: "API \(context.apiKey) is not supported"))
        }
    }

    /// Reads the request header (v1 or v2), checking the key and version are served. An
    /// ApiVersions request of a version we do not know is answered, not refused (KIP-511).
    private func readHeader(_ body: inout ByteBuffer, eventLoop: any EventLoop) throws -> RequestContext {
        guard let prefix = KafkaHeaders.peekPrefix(body) else {
            throw ConnectionFailure(reason: "request header is truncated")
        }
        guard let versions = Self.supportedByKey[prefix.apiKey] else {
            throw ConnectionFailure(reason: "unknown or unsupported API key \(prefix.apiKey.rawValue)")
        }
        let isApiVersions = prefix.apiKey == .apiVersions
        guard versions.contains(prefix.apiVersion) || (isApiVersions && prefix.apiVersion > versions.upperBound) else {
            throw ConnectionFailure(
                reason: "\(prefix.apiKey) v\(prefix.apiVersion) is not supported (\(versions.lowerBound)-\(versions.upperBound))")
        }
        let flexible = Self.isFlexible(prefix.apiKey, prefix.apiVersion)
        let headerVersion = KafkaHeaders.requestHeaderVersion(
            flexible: flexible, apiKey: prefix.apiKey, apiVersion: prefix.apiVersion)
        let header = try RequestHeader(from: &body, version: headerVersion)
        return RequestContext(
            apiKey: prefix.apiKey, apiVersion: prefix.apiVersion, correlationID: header.correlationId,
            clientID: header.clientId, eventLoop: eventLoop)
    }

    static func isFlexible(_ key: KafkaAPIKey, _ version: Int16) -> Bool {
        key.isFlexibleRequest(version)
    }

    private func serve<Request: KafkaRequestMessage, Response: KafkaResponseMessage>(
        _ type: Request.Type,
        _ body: ByteBuffer,
        _ context: RequestContext,
        _ handler: (Request, RequestContext) -> EventLoopFuture<Response?>
    ) -> EventLoopFuture<KafkaFrame?> {
        if context.apiKey == .apiVersions && context.apiVersion > Self.supportedByKey[.apiVersions]!.upperBound {
            // The body may be in a format we do not know: do not parse it. Answer in v0.
            let response = self.apis.apiVersionsTable(error: .unsupportedVersion)
            return context.eventLoop.makeSucceededFuture(
                Self.encode(response, apiKey: .apiVersions, version: 0, correlationID: context.correlationID))
        }
        return Self.serve(type, body, context, logger: self.apis.logger, handler)
    }

    /// Decodes a request body, runs `handler`, encodes its response with the right header.
    static func serve<Request: KafkaRequestMessage, Response: KafkaResponseMessage>(
        _ type: Request.Type,
        _ body: ByteBuffer,
        _ context: RequestContext,
        logger: Logger,
        _ handler: (Request, RequestContext) -> EventLoopFuture<Response?>
    ) -> EventLoopFuture<KafkaFrame?> {
        Self.serveEncoding(type, body, context, logger: logger) { request, context in
            handler(request, context).map { response in
                response.map {
                    Self.encode(
                        $0, apiKey: context.apiKey, version: context.apiVersion, correlationID: context.correlationID)
                }
            }
        }
    }

    /// Decodes a request body and runs `handler`, which encodes its own response (`encode`): a
    /// fetch's may send records from segment files.
    static func serveEncoding<Request: KafkaRequestMessage>(
        _: Request.Type,
        _ body: ByteBuffer,
        _ context: RequestContext,
        logger: Logger,
        _ handler: (Request, RequestContext) -> EventLoopFuture<KafkaFrame?>
    ) -> EventLoopFuture<KafkaFrame?> {
        let request: Request
        do {
            // Bytes after the message are ignored, as Kafka does: librdkafka 2.16 sends Metadata
            // v12 with three extra bytes, and a broker that refused it would refuse librdkafka.
            var reader = body
            request = try Request(from: &reader, version: context.apiVersion)
            if reader.readableBytes > 0 {
                logger.debug(
                    "ignored bytes after a request",
                    metadata: [
                        "api": "\(context.apiKey) v\(context.apiVersion)", "client": "\(context.clientID ?? "")",
                        "bytes": "\(reader.readableBytesView.map { String($0, radix: 16) }.joined(separator: " "))",
                    ])
            }
        } catch {
            return context.eventLoop.makeFailedFuture(
                ConnectionFailure(reason: "malformed \(context.apiKey) v\(context.apiVersion) request: \(error)"))
        }
        return handler(request, context)
    }

    /// A whole response frame: size, header (v0 or v1), body, in a buffer of `sizeHint` bytes to
    /// start with (a fetch's records are known: its buffer is allocated once, not regrown).
    /// Large record batches are not copied into it, and the n-th `records` field is sent from
    /// `fileRecords[n]` when that is given (`KafkaFrame.encode`).
    static func encode<Response: KafkaResponseMessage>(
        _ response: Response,
        apiKey: KafkaAPIKey,
        version: Int16,
        correlationID: Int32,
        sizeHint: Int = 256,
        fileRecords: [KafkaFrame.FileRecords?] = [],
        leases: [any Sendable & AnyObject] = []
    ) -> KafkaFrame {
        KafkaFrame.encode(capacity: sizeHint, fileRecords: fileRecords, leases: leases) { buffer in
            buffer.writeInteger(correlationID)
            let flexible = Response.isFlexible(version)
            if KafkaHeaders.responseHeaderVersion(flexible: flexible, apiKey: apiKey) >= 1 {
                buffer.writeKafkaUnsignedVarint(0)  // no tagged fields in the header
            }
            response.encode(into: &buffer, version: version)
        }
    }
}
