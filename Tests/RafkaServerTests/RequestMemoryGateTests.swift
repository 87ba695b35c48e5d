import NIOCore
import NIOEmbedded
@testable import RafkaServer
import Testing

@Suite struct RequestMemoryGateTests {
    static func frame(bodyBytes: Int, fill: UInt8) -> ByteBuffer {
        var frame = ByteBuffer()
        frame.writeInteger(Int32(bodyBytes))
        frame.writeRepeatingByte(fill, count: bodyBytes)
        return frame
    }

    static func channel(frameBytesMax: Int = 1 << 20) throws -> (EmbeddedChannel, MemoryBudget) {
        let (channel, budget, _) = try Self.gated(frameBytesMax: frameBytesMax)
        return (channel, budget)
    }

    static func gated(frameBytesMax: Int = 1 << 20) throws -> (EmbeddedChannel, MemoryBudget, RequestMemoryGate) {
        let budget = MemoryBudget(capacityBytes: 1 << 20)
        let gate = RequestMemoryGate(
            memory: ConnectionMemory(budget: budget), frameBytesMax: frameBytesMax, frameTimeout: .seconds(60))
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(gate)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9092)).wait()  // active, as a client's
        return (channel, budget, gate)
    }

    /// Frames cut anywhere across reads, or several in one read, come out whole, one per
    /// buffer, each buffer holding that frame and nothing else (no larger than the power of two
    /// ByteBufferAllocator rounds a copy of it up to), and each reserved from the budget.
    @Test func framesComeOutWholeInBuffersOfTheirOwn() throws {
        let (channel, budget) = try Self.channel()
        let frames = [
            Self.frame(bodyBytes: 10, fill: 1), Self.frame(bodyBytes: 70_000, fill: 2), Self.frame(bodyBytes: 0, fill: 3),
            Self.frame(bodyBytes: 300, fill: 4), Self.frame(bodyBytes: 20, fill: 5), Self.frame(bodyBytes: 20, fill: 6),
        ]
        var stream = ByteBuffer()
        for var frame in frames { stream.writeBuffer(&frame) }
        // Cut inside the first prefix, the second body and the third prefix; the last read holds
        // the end of the fourth frame and two whole ones.
        for cut in [2, 100, 30_000, 70_020, 70_100] {
            try channel.writeInbound(stream.readSlice(length: cut - stream.readerIndex)!)
        }
        try channel.writeInbound(stream.readSlice(length: stream.readableBytes)!)
        var received: [ByteBuffer] = []
        while let frame = try channel.readInbound(as: ByteBuffer.self) { received.append(frame) }
        #expect(received == frames)
        for frame in received {
            #expect(frame.storageCapacity <= max(4, (frame.readableBytes - 1).nextPowerOfTwo))
        }
        #expect(budget.usedBytes == frames.reduce(0) { $0 + $1.readableBytes })
        _ = try channel.finish()
    }

    /// A size the decoder refuses is passed on alone, reserving nothing; what follows it is dropped.
    @Test func aRefusedSizeIsPassedOnAloneAndTheRestDropped() throws {
        let (channel, budget) = try Self.channel(frameBytesMax: 1000)
        var bytes = Self.frame(bodyBytes: 5000, fill: 1)
        bytes.writeImmutableBuffer(Self.frame(bodyBytes: 10, fill: 2))
        try channel.writeInbound(bytes)
        try channel.writeInbound(Self.frame(bodyBytes: 10, fill: 3))
        var prefix = try #require(try channel.readInbound(as: ByteBuffer.self))
        #expect(prefix.readInteger(as: Int32.self) == 5000 && prefix.readableBytes == 0)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        #expect(budget.usedBytes == 0)
        _ = try channel.finish()
    }
}

extension RequestMemoryGateTests {
    /// A frame is given `frameTimeout` from its start to arrive whole, however many frames came
    /// before it: the one check a connection keeps, armed for an earlier frame, waits on for a
    /// younger one in progress instead of closing the connection early.
    @Test func aFrameInProgressTimesOutAMinuteAfterItBegan() throws {
        let (channel, _, _) = try Self.gated()
        try channel.writeInbound(Self.frame(bodyBytes: 100, fill: 1))  // whole, at 0 s
        channel.embeddedEventLoop.advanceTime(by: .seconds(50))
        var second = Self.frame(bodyBytes: 100, fill: 2)
        try channel.writeInbound(second.readSlice(length: 50)!)  // begun at 50 s
        channel.embeddedEventLoop.advanceTime(by: .seconds(59))  // the check due at 60 s found it 10 s old
        try channel.throwIfErrorCaught()
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(throws: FrameTimeout.self) { try channel.throwIfErrorCaught() }
        _ = try? channel.finish()
    }

    /// A frame arriving whole leaves nothing behind: ten thousand frames schedule one check, which
    /// ends itself when it finds no frame in progress.
    @Test func framesShareOneTimeoutCheck() throws {
        let (channel, _, gate) = try Self.gated()
        for round in 0..<10_000 {
            var frame = Self.frame(bodyBytes: 64, fill: UInt8(truncatingIfNeeded: round))
            try channel.writeInbound(frame.readSlice(length: 30)!)
            try channel.writeInbound(frame)
            var received = try #require(try channel.readInbound(as: ByteBuffer.self))
            received.moveReaderIndex(forwardBy: 4)
            #expect(received.readableBytes == 64)
        }
        #expect(gate.frameChecksScheduled == 1)
        channel.embeddedEventLoop.advanceTime(by: .seconds(120))
        try channel.throwIfErrorCaught()
        try channel.writeInbound(Self.frame(bodyBytes: 8, fill: 0).getSlice(at: 0, length: 6)!)
        #expect(gate.frameChecksScheduled == 2)
        _ = try? channel.finish()
    }
}

extension Int {
    fileprivate var nextPowerOfTwo: Int { self <= 0 ? 1 : 1 << (Int.bitWidth - self.leadingZeroBitCount) }
}
