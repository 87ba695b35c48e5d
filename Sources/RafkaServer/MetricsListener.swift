import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves `GET /metrics` (Prometheus text format) on `metrics-listen`; every other path is 404.
public final class MetricsListener: Sendable {
    public let channel: any Channel

    private init(channel: any Channel) { self.channel = channel }

    public var localAddress: SocketAddress? { self.channel.localAddress }

    public static func bind(broker: Broker, address: HostPort) async throws -> MetricsListener {
        let metrics = BrokerMetrics(
            registry: broker.metricsRegistry, replicas: broker.replicas, readMemory: broker.readMemory, stalls: broker.stalls)
        let channel = try await ServerBootstrap(group: broker.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(metrics: metrics))
                }
            }
            .bind(host: address.host, port: address.port)
            .get()
        broker.logger.info("serving metrics", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        return MetricsListener(channel: channel)
    }

    public func close() async {
        try? await self.channel.close()
    }
}

final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let metrics: BrokerMetrics
    private var head: HTTPRequestHead?

    init(metrics: BrokerMetrics) { self.metrics = metrics }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            let found = head.method == .GET && (head.uri == "/metrics" || head.uri.hasPrefix("/metrics?"))
            let body = found ? ByteBuffer(bytes: self.metrics.render()) : ByteBuffer(string: "not found: try /metrics\n")
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
            headers.add(name: "Content-Length", value: String(body.readableBytes))
            let response = HTTPResponseHead(version: head.version, status: found ? .ok : .notFound, headers: headers)
            context.write(self.wrapOutboundOut(.head(response)), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            let keepAlive = head.isKeepAlive
            let channel = context.channel
            context.writeAndFlush(self.wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }
}

@available(*, unavailable) extension MetricsHTTPHandler: Sendable {}
