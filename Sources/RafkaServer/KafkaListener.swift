import KafkaProtocol
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The Kafka client listener: accepts connections and gives each a frame decoder and a
/// `KafkaConnectionHandler`. Connections beyond `connectionsMax` are closed at accept.
public final class KafkaListener: Sendable {
    public let channel: any Channel
    private let connections: ConnectionCounter

    private init(channel: any Channel, connections: ConnectionCounter) {
        self.channel = channel
        self.connections = connections
    }

    /// The bound address (with the real port when 0 was asked for).
    public var localAddress: SocketAddress? { self.channel.localAddress }

    public static func bind(broker: Broker) async throws -> KafkaListener {
        let router = RequestRouter(apis: KafkaAPIs(broker: broker))
        let logger = broker.logger
        let frameBytesMax = broker.config.requestBytesMax
        let counter = ConnectionCounter(limit: broker.config.connectionsMax)
        let budget = MemoryBudget(capacityBytes: broker.config.requestMemoryBytesMax)
        let frameTimeout = TimeAmount.milliseconds(broker.config.requestFrameTimeoutMilliseconds)
        let writeTimeout = TimeAmount.milliseconds(broker.config.responseWriteTimeoutMilliseconds)
        let metrics = broker.requestMetrics
        let channel = try await ServerBootstrap(group: broker.group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            // Reads are driven by the connection handler's backpressure.
            .childChannelOption(.autoRead, value: true)
            .childChannelInitializer { channel in
                guard counter.tryAcquire() else {
                    metrics.connectionRefused()
                    logger.warning("refusing connection: max-connections reached", metadata: ["peer": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"])
                    return channel.close()
                }
                metrics.connectionAccepted()
                channel.closeFuture.whenComplete { _ in
                    counter.release()
                    metrics.connectionClosed()
                }
                return channel.eventLoop.makeCompletedFuture {
                    let memory = ConnectionMemory(budget: budget)
                    let operations = channel.pipeline.syncOperations
                    try operations.addHandler(
                        RequestMemoryGate(memory: memory, frameBytesMax: frameBytesMax, frameTimeout: frameTimeout))
                    try operations.addHandler(ByteToMessageHandler(KafkaFrameDecoder(frameBytesMax: frameBytesMax)))
                    let handler = KafkaConnectionHandler(
                        router: router, memory: memory, logger: logger, writeTimeout: writeTimeout, metrics: metrics)
                    try operations.addHandler(handler)
                }
            }
            .bind(host: broker.config.listen.host, port: broker.config.listen.port)
            .get()
        logger.info("listening for Kafka clients", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        return KafkaListener(channel: channel, connections: counter)
    }

    public func close() async {
        try? await self.channel.close()
    }
}

/// Open-connection count against a limit, shared by all event loops.
final class ConnectionCounter: Sendable {
    private let open = Atomic<Int>(0)
    let limit: Int

    init(limit: Int) { self.limit = limit }

    func tryAcquire() -> Bool {
        let now = self.open.add(1, ordering: .relaxed).newValue
        if now > self.limit {
            self.open.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func release() {
        self.open.subtract(1, ordering: .relaxed)
    }
}
