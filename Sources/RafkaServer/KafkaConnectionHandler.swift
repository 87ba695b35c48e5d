import DequeModule
import KafkaProtocol
import Logging
import NIOCore
import RafkaCore

/// Serves Kafka requests on one client connection.
///
/// Frames arrive from `KafkaFrameDecoder`. Up to `Limits.inFlightRequestsPerConnection` are
/// handled concurrently; the rest wait in arrival order, and the socket is not read while the
/// limit is reached or the client is not reading its responses — memory per connection stays
/// bounded by what was already received. Responses leave in request order (`ResponseSequencer`).
/// Any protocol violation closes the connection with one log line.
///
/// Isolation: the channel's event loop.
final class KafkaConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = IOData

    private let router: any FrameRouter
    private let memory: ConnectionMemory
    private var logger: Logger
    private var sequencer = ResponseSequencer<KafkaFrame>()
    private var waiting = Deque<ByteBuffer>()
    private var readHeld = false
    private var closing = false
    private let inFlightMax: Int
    /// How long a response sent from files may wait to be written (`response-write-timeout-ms`).
    private let writeTimeout: TimeAmount

    init(
        router: any FrameRouter,
        memory: ConnectionMemory,
        logger: Logger,
        inFlightMax: Int = Limits.inFlightRequestsPerConnectionMax,
        writeTimeout: TimeAmount = .milliseconds(Limits.responseWriteTimeoutMillisecondsDefault)
    ) {
        self.router = router
        self.memory = memory
        self.logger = logger
        self.inFlightMax = inFlightMax
        self.writeTimeout = writeTimeout
    }

    func channelActive(context: ChannelHandlerContext) {
        self.logger[metadataKey: "peer"] = "\(context.remoteAddress.map { "\($0)" } ?? "?")"
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.closing else { return }
        self.waiting.append(Self.unwrapInboundIn(data))
        self.startWaiting(context: context)
    }

    private func startWaiting(context: ChannelHandlerContext) {
        while !self.closing, self.sequencer.inFlight < self.inFlightMax, let frame = self.waiting.popFirst() {
            self.start(frame, context: context)
        }
    }

    private func start(_ frame: ByteBuffer, context: ChannelHandlerContext) {
        let sequence = self.sequencer.begin()
        let frameBytes = frame.readableBytes + 4
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.router.handle(frame, on: context.eventLoop).hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = loopBound.value
            // The request is answered: its frame's bytes go back to the shared budget.
            handler.memory.release(frameBytes)
            switch result {
            case .success(let response):
                handler.finish(sequence, response: response, context: context)
            case .failure(let error):
                handler.close(context: context, reason: "\(error)")
            }
        }
    }

    private func finish(_ sequence: UInt64, response: KafkaFrame?, context: ChannelHandlerContext) {
        guard !self.closing else { return }
        let ready = self.sequencer.finish(sequence, response: response)
        for frame in ready {
            for part in frame.parts.dropLast() { context.write(Self.wrapOutboundOut(part), promise: nil) }
            let written = frame.leases.isEmpty ? nil : self.holdLeases(of: frame, context: context)
            context.write(Self.wrapOutboundOut(frame.parts[frame.parts.count - 1]), promise: written)
        }
        if !ready.isEmpty { context.flush() }
        self.startWaiting(context: context)
        self.resumeReadingIfPossible(context: context)
    }

    /// The files a frame sends from stay open until NIO is done with them, written or failed;
    /// a client that does not read the frame within `writeTimeout` is disconnected, so that it
    /// cannot keep a deleted segment's blocks from being freed.
    private func holdLeases(of frame: KafkaFrame, context: ChannelHandlerContext) -> EventLoopPromise<Void> {
        let written = context.eventLoop.makePromise(of: Void.self)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let timeout = self.writeTimeout
        let deadline = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = loopBound.value
            handler.close(context: context, reason: "a response sent from segment files was not read within \(timeout)")
        }
        written.futureResult.whenComplete { _ in
            deadline.cancel()
            withExtendedLifetime(frame.leases) {}
        }
        return written
    }

    private func close(context: ChannelHandlerContext, reason: String) {
        guard !self.closing else { return }
        self.closing = true
        self.waiting.removeAll()
        self.logger.notice("closing connection: \(reason)")
        context.close(promise: nil)
    }

    private var canRead: Bool {
        self.sequencer.inFlight < self.inFlightMax && self.waiting.isEmpty
    }

    private func resumeReadingIfPossible(context: ChannelHandlerContext) {
        if self.readHeld && self.canRead && context.channel.isWritable {
            self.readHeld = false
            context.read()
        }
    }

    // Outbound `read` is where backpressure is applied: hold it while we are saturated.
    func read(context: ChannelHandlerContext) {
        if self.canRead && context.channel.isWritable {
            context.read()
        } else {
            self.readHeld = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.resumeReadingIfPossible(context: context)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let channelError = error as? ChannelError, channelError == .ioOnClosedChannel { return }
        self.close(context: context, reason: "\(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closing = true
        self.waiting.removeAll()
        self.memory.releaseAll()
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension KafkaConnectionHandler: Sendable {}
