import DequeModule
import KafkaProtocol
import Logging
import NIOCore
import RafkaCore

/// Serves Kafka requests on one client connection.
///
/// Frames arrive from `KafkaFrameDecoder`. Up to `Limits.inFlightRequestsPerConnection` are
/// handled concurrently, but of those the router does not let overlap (all but produce and
/// fetch: `FrameRouter.overlaps`) one at a time, as Kafka handles every request; the rest wait
/// in arrival order. While a request waits, or the client is not reading its responses (the
/// channel is not writable), the socket is not read and no waiting request starts: a client
/// that pipelines many small requests whose answers are large (Metadata of many partitions)
/// and reads nothing holds one such answer beside what its socket holds, and fetches bounded by
/// `max-read-memory-bytes`. Responses leave in request order (`ResponseSequencer`).
/// A client that reads nothing of its responses for `response-write-timeout-ms` is
/// disconnected. Any protocol violation closes the connection with one log line. Each request
/// answered is counted in `metrics` once its response is written (`RequestMetrics`).
///
/// Isolation: the channel's event loop.
final class KafkaConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = IOData

    private let router: any FrameRouter
    private let memory: ConnectionMemory
    private let metrics: RequestMetrics?
    private var logger: Logger
    private var sequencer = ResponseSequencer<Answer>()
    /// Frames read and not started yet, with when they were read.
    private var waiting = Deque<(frame: ByteBuffer, read: NIODeadline)>()
    private var readHeld = false
    private var closing = false
    /// A request the router does not let overlap is in flight.
    private var aloneInFlight = false
    private let inFlightMax: Int
    /// How long a client may read nothing of its responses (`response-write-timeout-ms`).
    private let writeTimeout: TimeAmount
    /// Frames with leases handed to NIO and not yet written, and those written so far.
    private var leasedFramesUnwritten = 0
    private var leasedFramesWritten = 0
    /// While such frames are unwritten or the channel is not writable: the check of the
    /// client's progress, what it last saw, and how many checks in a row saw no more.
    private var writeCheck: RepeatedTask?
    private var progressAtLastCheck = WriteProgress(framesWritten: 0, bufferedBytes: 0)
    private var checksWithoutProgress = 0

    /// A response to write, and what the metrics need of its request.
    private struct Answer {
        var frame: KafkaFrame
        var request: RequestFacts
    }

    private struct RequestFacts {
        var api: KafkaAPIKey?
        var bytes: Int
        var read: NIODeadline

        func record(into metrics: RequestMetrics?, responseBytes: Int, at now: NIODeadline) {
            guard let metrics, let api = self.api else { return }
            let nanoseconds = (now - self.read).nanoseconds
            metrics.record(api, requestBytes: self.bytes, responseBytes: responseBytes, nanoseconds: nanoseconds)
        }
    }

    private struct WriteProgress: Equatable {
        var framesWritten: Int
        var bufferedBytes: Int
    }

    init(
        router: any FrameRouter,
        memory: ConnectionMemory,
        logger: Logger,
        inFlightMax: Int = Limits.inFlightRequestsPerConnectionMax,
        writeTimeout: TimeAmount = .milliseconds(Limits.responseWriteTimeoutMillisecondsDefault),
        metrics: RequestMetrics? = nil
    ) {
        self.router = router
        self.memory = memory
        self.metrics = metrics
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
        self.waiting.append((Self.unwrapInboundIn(data), context.eventLoop.now))
        self.startWaiting(context: context)
    }

    private func startWaiting(context: ChannelHandlerContext) {
        while !self.closing, self.sequencer.inFlight < self.inFlightMax, context.channel.isWritable,
            let (frame, read) = self.waiting.first
        {
            let overlaps = self.router.overlaps(frame)
            if !overlaps && self.aloneInFlight { return }
            self.waiting.removeFirst()
            self.start(frame, read: read, alone: !overlaps, context: context)
        }
    }

    private func start(_ frame: ByteBuffer, read: NIODeadline, alone: Bool, context: ChannelHandlerContext) {
        let sequence = self.sequencer.begin()
        let frameBytes = frame.readableBytes + 4
        let request = RequestFacts(api: KafkaHeaders.peekPrefix(frame)?.apiKey, bytes: frameBytes, read: read)
        if alone { self.aloneInFlight = true }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.router.handle(frame, on: context.eventLoop).hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = loopBound.value
            // The request is answered: its frame's bytes go back to the shared budget.
            handler.memory.release(frameBytes)
            if alone { handler.aloneInFlight = false }
            switch result {
            case .success(let response):
                if response == nil { request.record(into: handler.metrics, responseBytes: 0, at: context.eventLoop.now) }
                handler.finish(sequence, answer: response.map { Answer(frame: $0, request: request) }, context: context)
            case .failure(let error):
                handler.close(context: context, reason: "\(error)")
            }
        }
    }

    private func finish(_ sequence: UInt64, answer: Answer?, context: ChannelHandlerContext) {
        guard !self.closing else { return }
        let ready = self.sequencer.finish(sequence, response: answer)
        for answer in ready {
            let frame = answer.frame
            for part in frame.parts.dropLast() { context.write(Self.wrapOutboundOut(part), promise: nil) }
            let written = frame.leases.isEmpty && self.metrics == nil ? nil : context.eventLoop.makePromise(of: Void.self)
            if let written {
                if !frame.leases.isEmpty { self.holdLeases(of: frame, until: written.futureResult, context: context) }
                if let metrics = self.metrics {
                    // The loop's clock, which a test's embedded loop moves by hand.
                    let loop = context.eventLoop
                    written.futureResult.whenSuccess {
                        answer.request.record(into: metrics, responseBytes: frame.readableBytes, at: loop.now)
                    }
                }
            }
            context.write(Self.wrapOutboundOut(frame.parts[frame.parts.count - 1]), promise: written)
        }
        if !ready.isEmpty { context.flush() }
        if self.writeCheck != nil && self.checksWithoutProgress == 0 {
            self.progressAtLastCheck = self.writeProgress(context: context)
        }
        self.startWaiting(context: context)
        self.resumeReadingIfPossible(context: context)
    }

    /// A frame's leases (the files it sends from, the memory its records hold) are kept until
    /// NIO is done with it, written or failed, and the client's progress is watched meanwhile.
    private func holdLeases(of frame: KafkaFrame, until written: EventLoopFuture<Void>, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.leasedFramesUnwritten += 1
        self.watchWrites(context: context)
        written.whenComplete { _ in
            withExtendedLifetime(frame.leases) {}
            let handler = loopBound.value
            handler.leasedFramesUnwritten -= 1
            handler.leasedFramesWritten += 1
        }
    }

    /// While frames with leases are unwritten or the channel is not writable, the client's
    /// progress (frames written, NIO's buffered bytes) is checked every quarter of
    /// `writeTimeout`: a client that read nothing for four checks in a row is disconnected, so
    /// that it cannot keep a deleted segment's blocks from being freed, the broker's read memory
    /// spent, or the responses it asked for in memory; one that reads, however slowly, is not.
    /// The check stops itself once there is nothing to watch.
    private func watchWrites(context: ChannelHandlerContext) {
        guard self.writeCheck == nil else { return }
        self.checksWithoutProgress = 0
        self.progressAtLastCheck = self.writeProgress(context: context)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let period = TimeAmount.nanoseconds(self.writeTimeout.nanoseconds / Int64(Self.writeChecks))
        self.writeCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
            let (handler, context) = loopBound.value
            handler.checkWriteProgress(context: context)
        }
    }

    /// Checks of a client's progress per `writeTimeout`.
    private static let writeChecks = 4

    private func writeProgress(context: ChannelHandlerContext) -> WriteProgress {
        let buffered = (try? context.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
        return WriteProgress(framesWritten: self.leasedFramesWritten, bufferedBytes: buffered)
    }

    private func checkWriteProgress(context: ChannelHandlerContext) {
        guard self.leasedFramesUnwritten > 0 || !context.channel.isWritable else {
            self.writeCheck?.cancel()
            self.writeCheck = nil
            return
        }
        let progress = self.writeProgress(context: context)
        if progress != self.progressAtLastCheck {
            self.progressAtLastCheck = progress
            self.checksWithoutProgress = 0
            return
        }
        self.checksWithoutProgress += 1
        guard self.checksWithoutProgress >= Self.writeChecks else { return }
        let reason = "the client read nothing of its responses for \(self.writeTimeout)"
        self.close(context: context, reason: reason)
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
        if context.channel.isWritable {
            // The client read: the checks without progress start over.
            self.checksWithoutProgress = 0
            self.progressAtLastCheck = self.writeProgress(context: context)
            self.startWaiting(context: context)
        } else {
            self.watchWrites(context: context)
        }
        self.resumeReadingIfPossible(context: context)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let channelError = error as? ChannelError, channelError == .ioOnClosedChannel { return }
        self.close(context: context, reason: "\(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.writeCheck?.cancel()
        self.writeCheck = nil
        self.closing = true
        self.waiting.removeAll()
        self.memory.releaseAll()
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension KafkaConnectionHandler: Sendable {}
