import KafkaProtocol
import NIOCore
import NIOPosix
import Synchronization

/// A client connection to one Kafka-compatible broker: sends typed requests and matches
/// responses by correlation id. Negotiates versions with ApiVersions on connect.
///
/// Usage: `let connection = try await KafkaConnection.connect(host:port:)`, then
/// `try await connection.send(request)`; `close()` when done. Safe to share between tasks.
public final class KafkaConnection: Sendable, CustomStringConvertible {
    private let channel: any Channel
    private let handler: NIOLoopBound<ResponseMatcher>
    private let correlation = Atomic<Int32>(1)
    private let versions: Mutex<[Int16: ClosedRange<Int16>]>
    public let clientID: String
    /// `host:port` this connection went to.
    public let endpoint: String

    public var description: String { self.endpoint }

    private init(channel: any Channel, handler: ResponseMatcher, clientID: String, endpoint: String) {
        self.endpoint = endpoint
        self.channel = channel
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
        self.clientID = clientID
        self.versions = Mutex([:])
    }

    /// Connects and negotiates API versions. `group` defaults to NIO's singleton.
    public static func connect(
        host: String,
        port: Int,
        clientID: String = "rafka-client",
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        connectTimeout: TimeAmount = .seconds(10)
    ) async throws -> KafkaConnection {
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(KafkaFrameDecoder(frameBytesMax: 256 * 1024 * 1024, frameBytesMin: 4))
                    )
                    try channel.pipeline.syncOperations.addHandler(ResponseMatcher())
                }
            }
            .connect(host: host, port: port)
            .get()
        let connection = try await channel.eventLoop.submit {
            let matcher = try channel.pipeline.syncOperations.handler(type: ResponseMatcher.self)
            return KafkaConnection(channel: channel, handler: matcher, clientID: clientID, endpoint: "\(host):\(port)")
        }.get()
        do {
            try await connection.negotiate(timeout: connectTimeout)
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    private func negotiate(timeout: TimeAmount) async throws {
        // v3 is what librdkafka sends; a broker without it answers in v0 with its versions.
        var response = try await self.send(
            ApiVersionsRequest(clientSoftwareName: "rafka-admin", clientSoftwareVersion: "0.1"),
            version: 3,
            timeout: timeout
        )
        if response.errorCode == KafkaErrorCode.unsupportedVersion.rawValue {
            response = try await self.send(ApiVersionsRequest(), version: 0, timeout: timeout)
        }
        guard response.errorCode == 0 else {
            throw KafkaClientError("ApiVersions failed: \(KafkaErrorCode(rawValue: response.errorCode))")
        }
        self.versions.withLock { versions in
            for key in response.apiKeys { versions[key.apiKey] = key.minVersion...key.maxVersion }
        }
    }

    /// Whether the broker serves `Request` at all.
    public func supports<Request: KafkaRequestMessage>(_: Request.Type) -> Bool {
        self.versions.withLock { $0[Request.apiKey.rawValue] != nil }
    }

    /// The highest version of `Request` both sides speak, capped at `preferredMax`.
    public func version<Request: KafkaRequestMessage>(for _: Request.Type, preferredMax: Int16 = .max) throws -> Int16 {
        guard let broker = self.versions.withLock({ $0[Request.apiKey.rawValue] }) else {
            throw KafkaClientError("the broker does not support \(Request.apiKey)")
        }
        let ours = Request.schemaVersions
        let high = min(broker.upperBound, ours.upperBound, preferredMax)
        guard high >= max(broker.lowerBound, ours.lowerBound) else {
            throw KafkaClientError("no common version of \(Request.apiKey)")
        }
        return high
    }

    /// Sends `request` at `version` (negotiated when nil) and decodes the matching response.
    /// A request not answered within `timeout` fails, and the connection is closed (a peer that
    /// stopped answering cannot be trusted to answer later requests in order).
    public func send<Request: KafkaRequestMessage>(
        _ request: Request,
        version: Int16? = nil,
        preferredMax: Int16 = .max,
        timeout: TimeAmount = .seconds(30)
    ) async throws -> Request.Response where Request: KafkaRequestWithResponse {
        let version = try version ?? self.version(for: Request.self, preferredMax: preferredMax)
        return try await self.request(request, version: version, timeout: timeout).get()
    }

    /// The connection's event loop: `request` called on it sends without a thread hop, and
    /// its future completes there.
    public var eventLoop: any EventLoop { self.channel.eventLoop }

    /// `send` for callers that live on event loops: the response is decoded on the
    /// connection's loop, and nothing waits for a thread of the concurrency pool. Called on
    /// `eventLoop`, the request is written at once.
    public func request<Request: KafkaRequestMessage>(
        _ request: Request,
        version: Int16,
        timeout: TimeAmount = .seconds(30)
    ) -> EventLoopFuture<Request.Response> where Request: KafkaRequestWithResponse {
        let correlationID = self.correlation.add(1, ordering: .relaxed).newValue
        let frame = Self.frame(request, version: version, correlationID: correlationID, clientID: self.clientID)
        let loop = self.channel.eventLoop
        let promise = loop.makePromise(of: ByteBuffer.self)
        let handler = self.handler
        let channel = self.channel
        let write: @Sendable () -> Void = {
            handler.value.expect(correlationID, promise: promise)
            channel.writeFrame(frame).whenFailure { promise.fail($0) }
            let deadline = loop.scheduleTask(in: timeout) {
                guard let waiting = handler.value.cancel(correlationID) else { return }
                waiting.fail(
                    KafkaClientError("\(Request.apiKey) got no answer within \(timeout.nanoseconds / 1_000_000) ms")
                )
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in deadline.cancel() }
        }
        if loop.inEventLoop { write() } else { loop.execute(write) }
        return promise.futureResult.flatMapThrowing { body in
            var body = body
            let responseFlexible = Request.Response.isFlexible(version)
            if KafkaHeaders.responseHeaderVersion(flexible: responseFlexible, apiKey: Request.apiKey) >= 1 {
                let tags = try body.readKafkaUnsignedVarint()
                for _ in 0..<tags {
                    let tag = try body.readKafkaUnsignedVarint()
                    try body.skipKafkaTaggedField(tag: tag, size: try body.readKafkaUnsignedVarint())
                }
            }
            return try Request.Response.decodeWhole(body, version: version)
        }
    }

    /// Sends a request the broker does not answer (Produce with acks=0); returns once the
    /// frame is written to the socket.
    public func sendWithoutResponse<Request: KafkaRequestMessage>(
        _ request: Request,
        version: Int16? = nil
    ) async throws {
        let version = try version ?? self.version(for: Request.self)
        try await self.requestWithoutResponse(request, version: version).get()
    }

    /// `sendWithoutResponse` for callers on event loops.
    public func requestWithoutResponse<Request: KafkaRequestMessage>(
        _ request: Request,
        version: Int16
    ) -> EventLoopFuture<Void> {
        let correlationID = self.correlation.add(1, ordering: .relaxed).newValue
        return self.channel.writeFrame(
            Self.frame(request, version: version, correlationID: correlationID, clientID: self.clientID)
        )
    }

    /// A request frame: size prefix, header, body (large batches referenced, not copied).
    private static func frame<Request: KafkaRequestMessage>(
        _ request: Request,
        version: Int16,
        correlationID: Int32,
        clientID: String
    ) -> KafkaFrame {
        KafkaFrame.encode { frame in
            let flexible = Request.isFlexible(version)
            let header = RequestHeader(
                requestApiKey: Request.apiKey.rawValue,
                requestApiVersion: version,
                correlationId: correlationID,
                clientId: clientID
            )
            header.encode(
                into: &frame,
                version: KafkaHeaders.requestHeaderVersion(flexible: flexible, apiKey: Request.apiKey, apiVersion: version)
            )
            request.encode(into: &frame, version: version)
        }
    }

    public func close() {
        self.channel.close(promise: nil)
    }

    /// False once the connection closed (either side).
    public var isActive: Bool { self.channel.isActive }
}

/// Pairs each request message type with its response type.
public protocol KafkaRequestWithResponse: KafkaRequestMessage {
    associatedtype Response: KafkaResponseMessage
}

extension ApiVersionsRequest: KafkaRequestWithResponse { public typealias Response = ApiVersionsResponse }
extension MetadataRequest: KafkaRequestWithResponse { public typealias Response = MetadataResponse }
extension CreateTopicsRequest: KafkaRequestWithResponse { public typealias Response = CreateTopicsResponse }
extension DeleteTopicsRequest: KafkaRequestWithResponse { public typealias Response = DeleteTopicsResponse }
extension CreatePartitionsRequest: KafkaRequestWithResponse { public typealias Response = CreatePartitionsResponse }
extension DescribeConfigsRequest: KafkaRequestWithResponse { public typealias Response = DescribeConfigsResponse }
extension AlterConfigsRequest: KafkaRequestWithResponse { public typealias Response = AlterConfigsResponse }
extension IncrementalAlterConfigsRequest: KafkaRequestWithResponse {
    public typealias Response = IncrementalAlterConfigsResponse
}
extension DescribeClusterRequest: KafkaRequestWithResponse { public typealias Response = DescribeClusterResponse }
extension ProduceRequest: KafkaRequestWithResponse { public typealias Response = ProduceResponse }
extension FetchRequest: KafkaRequestWithResponse { public typealias Response = FetchResponse }
extension ListOffsetsRequest: KafkaRequestWithResponse { public typealias Response = ListOffsetsResponse }
extension OffsetForLeaderEpochRequest: KafkaRequestWithResponse { public typealias Response = OffsetForLeaderEpochResponse }
extension InitProducerIdRequest: KafkaRequestWithResponse { public typealias Response = InitProducerIdResponse }
extension DescribeQuorumRequest: KafkaRequestWithResponse { public typealias Response = DescribeQuorumResponse }
extension AddRaftVoterRequest: KafkaRequestWithResponse { public typealias Response = AddRaftVoterResponse }
extension RemoveRaftVoterRequest: KafkaRequestWithResponse { public typealias Response = RemoveRaftVoterResponse }
extension DescribeNodesRequest: KafkaRequestWithResponse { public typealias Response = DescribeNodesResponse }
extension DescribeRingRequest: KafkaRequestWithResponse { public typealias Response = DescribeRingResponse }
extension DescribeCacheRequest: KafkaRequestWithResponse { public typealias Response = DescribeCacheResponse }

/// A client-side failure: connection, negotiation or decoding.
public struct KafkaClientError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { self.message }
}

/// Delivers response frames to the promise waiting for their correlation id.
final class ResponseMatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var waiting: [Int32: EventLoopPromise<ByteBuffer>] = [:]

    func expect(_ correlationID: Int32, promise: EventLoopPromise<ByteBuffer>) {
        self.waiting[correlationID] = promise
    }

    /// Stops waiting for `correlationID` (its request timed out); its promise, if still waiting.
    func cancel(_ correlationID: Int32) -> EventLoopPromise<ByteBuffer>? {
        self.waiting.removeValue(forKey: correlationID)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = Self.unwrapInboundIn(data)
        guard let correlationID = frame.readInteger(endianness: .big, as: Int32.self),
            let promise = self.waiting.removeValue(forKey: correlationID)
        else {
            context.fireErrorCaught(KafkaClientError("response with an unknown correlation id"))
            return
        }
        promise.succeed(frame)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.failAll(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failAll(KafkaClientError("the broker closed the connection"))
        context.fireChannelInactive()
    }

    private func failAll(_ error: any Error) {
        let waiting = self.waiting
        self.waiting.removeAll()
        for promise in waiting.values { promise.fail(error) }
    }
}

@available(*, unavailable)
extension ResponseMatcher: Sendable {}
