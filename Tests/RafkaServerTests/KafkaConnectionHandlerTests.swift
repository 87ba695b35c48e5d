#if canImport(Glibc)
import Glibc
#endif
import KafkaProtocol
import Logging
import NIOCore
import NIOEmbedded
import Prometheus
@testable import RafkaServer
import Synchronization
import Testing

@Suite struct KafkaConnectionHandlerTests {
    /// A file whose bytes responses send, and a count of the leases on it still alive.
    final class SentFile: Sendable {
        let handle: NIOFileHandle
        let leases = Atomic<Int>(0)
        let path = "/tmp/rafka-handler-test-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"

        init() throws {
            let descriptor = open(self.path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
            try #require(descriptor >= 0)
            let bytes = [UInt8](repeating: 0x42, count: 100_000)
            try #require(write(descriptor, bytes, bytes.count) == bytes.count)
            self.handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: descriptor)
        }

        deinit {
            try? self.handle.close()
            unlink(self.path)
        }

        final class Lease: Sendable {
            let file: SentFile
            init(_ file: SentFile) {
                self.file = file
                file.leases.add(1, ordering: .relaxed)
            }
            deinit { self.file.leases.subtract(1, ordering: .relaxed) }
        }
    }

    /// Answers every request with a frame whose records are the file's first 100,000 bytes.
    struct FileRouter: FrameRouter {
        let file: SentFile

        func handle(_ frame: ByteBuffer, on eventLoop: any EventLoop) -> EventLoopFuture<KafkaFrame?> {
            let records = KafkaFrame.FileRecords(
                region: FileRegion(fileHandle: self.file.handle, readerIndex: 0, endIndex: 100_000),
                lease: SentFile.Lease(self.file))
            let response = KafkaFrame.encode(fileRecords: [records]) {
                $0.writeInteger(Int32(7))  // a correlation id
                $0.writeKafkaRecords(ByteBuffer(), compact: false)
            }
            return eventLoop.makeSucceededFuture(response)
        }

        func overlaps(_ frame: ByteBuffer) -> Bool { true }
    }

    /// Answers every request with 100,000 bytes from memory (as Metadata of many partitions
    /// does, from a few bytes asked), counting the requests it was given.
    final class LargeAnswerRouter: FrameRouter, Sendable {
        let handled = Atomic<Int>(0)

        func handle(_ frame: ByteBuffer, on eventLoop: any EventLoop) -> EventLoopFuture<KafkaFrame?> {
            self.handled.add(1, ordering: .relaxed)
            let answer = KafkaFrame.encode { $0.writeRepeatingByte(0x42, count: 100_000) }
            return eventLoop.makeSucceededFuture(answer)
        }

        func overlaps(_ frame: ByteBuffer) -> Bool { true }
    }

    /// Answers when the test says so. Requests whose first byte is 1 may overlap others (as
    /// produce and fetch do); the rest may not (as Metadata).
    final class HeldAnswerRouter: FrameRouter, Sendable {
        let held = Mutex<[(first: UInt8, answer: EventLoopPromise<KafkaFrame?>)]>([])

        func handle(_ frame: ByteBuffer, on eventLoop: any EventLoop) -> EventLoopFuture<KafkaFrame?> {
            let answer = eventLoop.makePromise(of: KafkaFrame?.self)
            self.held.withLock { $0.append((frame.getInteger(at: frame.readerIndex)!, answer)) }
            return answer.futureResult
        }

        func overlaps(_ frame: ByteBuffer) -> Bool { frame.getInteger(at: frame.readerIndex, as: UInt8.self) == 1 }

        /// The first bytes of the requests started so far, in order.
        var started: [UInt8] { self.held.withLock { $0.map(\.first) } }

        func answer(_ index: Int) {
            self.held.withLock { $0[index].answer }.succeed(KafkaFrame.encode { $0.writeInteger(Int32(index)) })
        }

        /// Answers with no response, as a produce with acks=0.
        func answerNothing(_ index: Int) {
            self.held.withLock { $0[index].answer }.succeed(nil)
        }
    }

    /// A client that reads nothing: writes reach it but never complete, until the channel closes.
    final class UnreadSocket: ChannelOutboundHandler {
        typealias OutboundIn = IOData
        private var pending: [EventLoopPromise<Void>] = []

        /// The client reads one more response.
        func readOldest() {
            self.pending.removeFirst().succeed()
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if let promise { self.pending.append(promise) }
        }

        func flush(context: ChannelHandlerContext) {}

        func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
            for promise in self.pending { promise.fail(ChannelError.ioOnClosedChannel) }
            self.pending.removeAll()
            context.close(mode: mode, promise: promise)
        }
    }

    static func channel(_ file: SentFile, unread: UnreadSocket?) throws -> EmbeddedChannel {
        try Self.channel(router: FileRouter(file: file), unread: unread)
    }

    static func channel(
        router: any FrameRouter, unread: UnreadSocket?, metrics: RequestMetrics? = nil
    ) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        if let unread { try channel.pipeline.syncOperations.addHandler(unread) }
        let memory = ConnectionMemory(budget: MemoryBudget(capacityBytes: 1 << 20))
        let handler = KafkaConnectionHandler(
            router: router, memory: memory, logger: Logger(label: "test"), writeTimeout: .seconds(120), metrics: metrics)
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9092)).wait()
        return channel
    }

    /// What NIO does when the bytes it holds for the socket cross its marks: the client stopped
    /// reading (not writable), or read again.
    static func setWritable(_ channel: EmbeddedChannel, _ writable: Bool) {
        channel.isWritable = writable
        channel.pipeline.fireChannelWritabilityChanged()
    }

    /// A response sent from a file goes out as the file's region, and its lease on the file is
    /// let go once written; the write deadline is then cancelled.
    @Test func aWrittenResponseLetsItsFileGo() throws {
        let file = try SentFile()
        let channel = try Self.channel(file, unread: nil)
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 0]))
        var parts: [IOData] = []
        while let part = try channel.readOutbound(as: IOData.self) { parts.append(part) }
        #expect(parts.count == 2)
        #expect(parts.last?.readableBytes == 100_000)
        if case .fileRegion(let region) = parts.last {
            #expect(region.endIndex == 100_000)
        } else {
            Issue.record("not a file region")
        }
        #expect(file.leases.load(ordering: .relaxed) == 0)
        channel.embeddedEventLoop.advanceTime(by: .seconds(300))
        #expect(channel.isActive)
        _ = try channel.finish()
    }

    /// A client that reads nothing of a response sent from a file for the write timeout is
    /// disconnected, and the file is let go: it cannot keep a deleted segment's blocks.
    @Test func anUnreadResponseFromAFileClosesItsConnection() throws {
        let file = try SentFile()
        let channel = try Self.channel(file, unread: UnreadSocket())
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 0]))
        #expect(file.leases.load(ordering: .relaxed) == 1)
        channel.embeddedEventLoop.advanceTime(by: .seconds(119))
        #expect(channel.isActive && file.leases.load(ordering: .relaxed) == 1)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
        #expect(file.leases.load(ordering: .relaxed) == 0)
    }

    /// A client that reads, however slowly, is kept: each response it finishes starts the
    /// timeout over, and it is disconnected only once it stops.
    @Test func aSlowReaderIsKept() throws {
        let file = try SentFile()
        let socket = UnreadSocket()
        let channel = try Self.channel(file, unread: socket)
        for _ in 0..<3 { try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 0])) }
        #expect(file.leases.load(ordering: .relaxed) == 3)
        for read in 1...2 {
            channel.embeddedEventLoop.advanceTime(by: .seconds(100))
            socket.readOldest()
            #expect(channel.isActive && file.leases.load(ordering: .relaxed) == 3 - read)
        }
        channel.embeddedEventLoop.advanceTime(by: .seconds(100))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(100))
        #expect(!channel.isActive && file.leases.load(ordering: .relaxed) == 0)
    }

    /// Requests that arrived while the client reads none of its answers (the channel is not
    /// writable) wait unstarted: their answers are not made and held. They start once it reads.
    @Test func requestsWaitWhileTheClientReadsNothing() throws {
        let router = LargeAnswerRouter()
        let channel = try Self.channel(router: router, unread: UnreadSocket())
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 0]))
        #expect(router.handled.load(ordering: .relaxed) == 1)
        Self.setWritable(channel, false)
        for _ in 0..<5 { try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 0])) }
        #expect(router.handled.load(ordering: .relaxed) == 1)
        Self.setWritable(channel, true)
        #expect(router.handled.load(ordering: .relaxed) == 6)
        _ = try? channel.finish()
    }

    /// Requests that may not overlap start one after another, each once the one before it is
    /// answered, and hold back those behind them (they start in the order they came); requests
    /// that may overlap start at once beside them.
    @Test func requestsThatMayNotOverlapStartOneAtATime() throws {
        let router = HeldAnswerRouter()
        let channel = try Self.channel(router: router, unread: nil)
        for first: UInt8 in [1, 0, 1, 0, 1, 0] {
            try channel.writeInbound(ByteBuffer(bytes: [first, 0, 0, 0, 0, 0, 0, 0]))
        }
        #expect(router.started == [1, 0, 1])
        router.answer(0)
        #expect(router.started == [1, 0, 1])
        router.answer(1)
        #expect(router.started == [1, 0, 1, 0, 1])
        router.answer(3)
        #expect(router.started == [1, 0, 1, 0, 1, 0])
        for index in [2, 4, 5] { router.answer(index) }
        var answers = 0
        while try channel.readOutbound(as: IOData.self) != nil { answers += 1 }
        #expect(answers == 6)
        _ = try channel.finish()
    }

    /// Of the broker's requests only produce, fetch and the nodes' own messages overlap others.
    @Test func onlyTheDataPathOverlaps() throws {
        func frame(_ key: KafkaAPIKey) -> ByteBuffer {
            var frame = ByteBuffer()
            frame.writeInteger(key.rawValue)
            frame.writeInteger(Int16(0))
            frame.writeInteger(Int32(1))
            return frame
        }
        let overlapping = RequestRouter.supported.map(\.0).filter { RequestRouter.overlaps(frame($0)) }
        #expect(
            Set(overlapping) == [
                .produce, .fetch, RafkaAPIKey.chordMessage, RafkaAPIKey.partitionHandoff, RafkaAPIKey.partitionCopyAhead,
            ])
        #expect(!RequestRouter.overlaps(ByteBuffer(bytes: [0])))
    }

    /// A client that reads nothing of answers held in memory is disconnected after the write
    /// timeout too, as one that reads nothing of answers sent from files.
    @Test func aClientThatReadsNothingIsDisconnected() throws {
        let channel = try Self.channel(router: LargeAnswerRouter(), unread: UnreadSocket())
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 0]))
        Self.setWritable(channel, false)
        channel.embeddedEventLoop.advanceTime(by: .seconds(119))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
    }

    /// Once the client reads again, nothing is watched and the connection stays, however long.
    @Test func aClientThatReadsAgainIsKept() throws {
        let channel = try Self.channel(router: LargeAnswerRouter(), unread: UnreadSocket())
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 0]))
        Self.setWritable(channel, false)
        channel.embeddedEventLoop.advanceTime(by: .seconds(100))
        Self.setWritable(channel, true)
        channel.embeddedEventLoop.advanceTime(by: .seconds(600))
        #expect(channel.isActive)
        _ = try? channel.finish()
    }

    /// A client that reads in bursts, further apart than the write timeout's checks, is kept:
    /// each time it reads (the channel turns writable), the checks without progress start over.
    @Test func aClientThatReadsInBurstsIsKept() throws {
        let channel = try Self.channel(router: LargeAnswerRouter(), unread: UnreadSocket())
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 0]))
        Self.setWritable(channel, false)
        channel.embeddedEventLoop.advanceTime(by: .seconds(100))
        // It reads, and the next answers fill its socket again at once.
        Self.setWritable(channel, true)
        Self.setWritable(channel, false)
        channel.embeddedEventLoop.advanceTime(by: .seconds(100))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(40))
        #expect(!channel.isActive)
    }

    /// A request is counted under its API once its response is written (the socket took it):
    /// with its bytes, its response's, and the time from its last byte read to then. One
    /// answered with no response (acks=0) is counted once handled.
    @Test func requestsAreCountedOnceTheirResponsesAreWritten() throws {
        let registry = PrometheusCollectorRegistry()
        let router = HeldAnswerRouter()
        let socket = UnreadSocket()
        let channel = try Self.channel(router: router, unread: socket, metrics: RequestMetrics(registry: registry))
        func scraped(_ series: String) -> Double? {
            for line in registry.emitToString().split(separator: "\n") where line.hasPrefix(series + " ") {
                return Double(line.dropFirst(series.count + 1))
            }
            return nil
        }
        // Produce (key 0) v9, correlation id 1; then Fetch (key 1).
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 9, 0, 0, 0, 1]))
        try channel.writeInbound(ByteBuffer(bytes: [0, 1, 0, 12, 0, 0, 0, 2]))
        router.answer(0)
        #expect(scraped(#"rafka_requests_total{api="Produce"}"#) == nil)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(20))
        socket.readOldest()
        #expect(scraped(#"rafka_requests_total{api="Produce"}"#) == 1)
        #expect(scraped(#"rafka_request_bytes_total{api="Produce"}"#) == 12)
        #expect(scraped(#"rafka_response_bytes_total{api="Produce"}"#) == 8)
        #expect(scraped(#"rafka_request_duration_seconds_count{api="Produce"}"#) == 1)
        #expect(scraped(#"rafka_request_duration_seconds_sum{api="Produce"}"#) == 0.02)
        #expect(scraped(#"rafka_request_duration_seconds_bucket{api="Produce",le="0.01"}"#) == 0)
        #expect(scraped(#"rafka_request_duration_seconds_bucket{api="Produce",le="0.025"}"#) == 1)
        #expect(scraped(#"rafka_requests_total{api="Fetch"}"#) == nil)
        router.answerNothing(1)
        #expect(scraped(#"rafka_requests_total{api="Fetch"}"#) == 1)
        #expect(scraped(#"rafka_response_bytes_total{api="Fetch"}"#) == 0)
        _ = try? channel.finish()
    }
}
