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
        let budget = MemoryBudget(capacityBytes: 1 << 20)
        let gate = RequestMemoryGate(
            memory: ConnectionMemory(budget: budget), frameBytesMax: frameBytesMax, frameTimeout: .seconds(60))
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(gate)
        return (channel, budget)
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

extension Int {
    fileprivate var nextPowerOfTwo: Int { self <= 0 ? 1 : 1 << (Int.bitWidth - self.leadingZeroBitCount) }
}
