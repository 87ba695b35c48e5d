import NIOCore
import Synchronization

/// Bytes held in memory against a maximum, shared by every connection: request frames (the
/// role of Kafka's `queued.max.request.bytes`, on by default here: `max-request-memory-bytes`),
/// and records held in memory for fetch responses, read from the device or the hot cache's
/// (`max-read-memory-bytes`).
///
/// A connection reserves a frame's size when its size prefix arrives, before the body is read,
/// and releases it when the request is answered. When the budget is spent, connections stop
/// reading until memory comes back. A reservation larger than the whole budget may still
/// proceed when nothing else is reserved, so that no valid request waits forever.
final class MemoryBudget: Sendable {
    let capacityBytes: Int
    private struct State {
        var usedBytes = 0
        var waiters: [@Sendable () -> Void] = []
        var refusals: Int64 = 0
    }

    private let state = Mutex(State())

    init(capacityBytes: Int) {
        precondition(capacityBytes > 0)
        self.capacityBytes = capacityBytes
    }

    var usedBytes: Int { self.state.withLock { $0.usedBytes } }

    /// Reservations `reserve` refused (and counted) since the start.
    var refusals: Int64 { self.state.withLock { $0.refusals } }

    /// Reserves `bytes`, or registers `retry` to be called once memory is released.
    func tryReserve(_ bytes: Int, retry: @escaping @Sendable () -> Void) -> Bool {
        self.state.withLock { state in
            guard self.fits(bytes, state) else {
                state.waiters.append(retry)
                return false
            }
            state.usedBytes += bytes
            return true
        }
    }

    /// Reserves `bytes` until the reservation is released (deinitialised), or nil when they do
    /// not fit now: for callers that have another way to go on than waiting. A refusal is
    /// counted in `refusals` unless the caller will ask again.
    func reserve(_ bytes: Int, countingRefusal: Bool = true) -> MemoryReservation? {
        let reserved = self.state.withLock { state in
            guard self.fits(bytes, state) else {
                if countingRefusal { state.refusals += 1 }
                return false
            }
            state.usedBytes += bytes
            return true
        }
        return reserved ? MemoryReservation(budget: self, bytes: bytes) : nil
    }

    private func fits(_ bytes: Int, _ state: State) -> Bool {
        state.usedBytes == 0 || state.usedBytes + bytes <= self.capacityBytes
    }

    func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        let waiters = self.state.withLock { state in
            precondition(state.usedBytes >= bytes, "released more memory than reserved")
            state.usedBytes -= bytes
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        // Every waiter retries; those that still do not fit register again.
        for retry in waiters { retry() }
    }
}

/// Bytes reserved from a `MemoryBudget`, given back when the last holder lets go: a fetch
/// response holds the reservation for the records it carries from memory until it is written
/// (`KafkaFrame.leases`), or dropped with its connection.
final class MemoryReservation: Sendable {
    let budget: MemoryBudget
    let bytes: Int

    fileprivate init(budget: MemoryBudget, bytes: Int) {
        self.budget = budget
        self.bytes = bytes
    }

    deinit { self.budget.release(self.bytes) }
}

/// One connection's reservations: what its gate reserved and its handler has not yet released.
/// Loop-confined to the connection's event loop.
final class ConnectionMemory {
    let budget: MemoryBudget
    private(set) var outstandingBytes = 0
    private var closed = false

    init(budget: MemoryBudget) {
        self.budget = budget
    }

    func reserved(_ bytes: Int) {
        self.outstandingBytes += bytes
    }

    /// A request of `bytes` (its frame, size prefix included) was answered.
    func release(_ bytes: Int) {
        let amount = min(bytes, self.outstandingBytes)
        self.outstandingBytes -= amount
        self.budget.release(amount)
    }

    /// The connection closed: everything it held goes back.
    func releaseAll() {
        guard !self.closed else { return }
        self.closed = true
        self.release(self.outstandingBytes)
    }
}

@available(*, unavailable)
extension ConnectionMemory: Sendable {}

/// Sits before the frame decoder and reserves each frame's size from the shared budget when its
/// size prefix arrives; until the reservation succeeds, the connection's bytes wait here and the
/// socket is not read. A frame that has begun but is not complete after `frameTimeout` closes
/// the connection, so a peer cannot hold reserved memory by stalling mid-request.
///
/// Once reserved, the frame is gathered into a buffer of exactly its size (the prefix included)
/// and passed on whole, instead of the decoder gathering reads into a buffer it keeps growing
/// and shares with the next frame's first bytes: the frame's buffer belongs to that request
/// alone, so a produced batch can be written and cached where it arrived
/// (`PartitionLog.append`). The buffer is allocated only once its size is reserved (NIO rounds
/// it up to a power of two, as the decoder's growing buffer was), and its pages are touched
/// only as bytes arrive. A size the decoder will refuse is passed on alone, and nothing after it.
final class RequestMemoryGate: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    /// Responses pass by untouched: bytes, and file regions of records behind the hot cache.
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let memory: ConnectionMemory
    private let frameBytesMax: Int
    private let frameTimeout: TimeAmount
    private var sizePrefix: [UInt8] = []
    /// The frame being gathered, and the bytes it still lacks.
    private var frame: ByteBuffer?
    private var frameRemaining = 0
    /// A size the decoder refuses was passed on: the connection is closing, later bytes are dropped.
    private var refused = false
    /// When the frame being gathered began (its size reserved), and the one check of frame
    /// timeouts this connection has scheduled, if any. One check per connection, not one per
    /// frame: a task per frame, left in the loop's heap for `frameTimeout` (a minute by
    /// default), piled up to 120,000 at 2,000 requests a second, and NIO searches that heap
    /// linearly to cancel any task (a fetch's wait). It cost about 10% of the broker's CPU at
    /// 840,000 records/s and 240 MB of memory at 55,000 small produces a second.
    private var frameStarted = NIODeadline.uptimeNanoseconds(0)
    private var frameCheck: Scheduled<Void>?
    /// How many times a check was scheduled, for tests.
    private(set) var frameChecksScheduled = 0
    private var blocked: ByteBuffer?
    private var readHeld = false

    init(memory: ConnectionMemory, frameBytesMax: Int, frameTimeout: TimeAmount) {
        self.memory = memory
        self.frameBytesMax = frameBytesMax
        self.frameTimeout = frameTimeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data)
        if var blocked = self.blocked {
            blocked.writeBuffer(&buffer)
            self.blocked = blocked
            return
        }
        self.process(&buffer, context: context)
    }

    private func process(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        while buffer.readableBytes > 0 && !self.refused {
            if self.frameRemaining > 0 {
                let part = buffer.readSlice(length: min(self.frameRemaining, buffer.readableBytes))!
                self.frame!.writeImmutableBuffer(part)
                self.frameRemaining -= part.readableBytes
                if self.frameRemaining == 0 { self.passFrameOn(context: context) }
                continue
            }
            // Collect the 4-byte size prefix, which may arrive split across reads.
            let needed = 4 - self.sizePrefix.count
            let prefixPart = buffer.getBytes(at: buffer.readerIndex, length: min(needed, buffer.readableBytes))!
            if self.sizePrefix.count + prefixPart.count < 4 {
                self.sizePrefix += prefixPart
                buffer.moveReaderIndex(forwardBy: prefixPart.count)
                return
            }
            let prefix = self.sizePrefix + prefixPart
            let size = Int(Int32(bitPattern: UInt32(prefix[0]) << 24 | UInt32(prefix[1]) << 16 | UInt32(prefix[2]) << 8 | UInt32(prefix[3])))
            guard size >= 0 && size <= self.frameBytesMax else {
                // Unreserved, to be refused by the decoder, which closes the connection.
                self.refused = true
                context.fireChannelRead(Self.wrapInboundOut(ByteBuffer(bytes: prefix)))
                return
            }
            let loop = context.eventLoop
            let loopBound = NIOLoopBound((self, context), eventLoop: loop)
            let reserved = self.memory.budget.tryReserve(size + 4) {
                loop.execute {
                    let (gate, context) = loopBound.value
                    gate.retryBlocked(context: context)
                }
            }
            guard reserved else {
                self.blocked = buffer.readSlice(length: buffer.readableBytes)
                return
            }
            self.memory.reserved(size + 4)
            self.frameBegan(context: context)
            buffer.moveReaderIndex(forwardBy: prefixPart.count)
            self.sizePrefix = []
            var frame = context.channel.allocator.buffer(capacity: 4 + size)
            frame.writeBytes(prefix)
            self.frame = frame
            self.frameRemaining = size
            if size == 0 { self.passFrameOn(context: context) }
        }
    }

    /// Passes the gathered frame on, keeping no reference to it.
    private func passFrameOn(context: ChannelHandlerContext) {
        let frame = self.frame.take()!
        context.fireChannelRead(Self.wrapInboundOut(frame))
    }

    private func retryBlocked(context: ChannelHandlerContext) {
        guard context.channel.isActive, var pending = self.blocked else { return }
        self.blocked = nil
        self.process(&pending, context: context)
        context.fireChannelReadComplete()
        if self.blocked == nil && self.readHeld {
            self.readHeld = false
            context.read()
        }
    }

    /// Notes when a frame began, and arms the connection's check unless it is armed already:
    /// a check finding a younger frame in progress re-arms itself for that frame.
    private func frameBegan(context: ChannelHandlerContext) {
        self.frameStarted = context.eventLoop.now
        if self.frameCheck == nil { self.armFrameCheck(at: self.frameStarted + self.frameTimeout, context: context) }
    }

    private func armFrameCheck(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.frameChecksScheduled += 1
        self.frameCheck = context.eventLoop.scheduleTask(deadline: deadline) {
            let (gate, context) = loopBound.value
            gate.checkFrameTimeout(context: context)
        }
    }

    private func checkFrameTimeout(context: ChannelHandlerContext) {
        self.frameCheck = nil
        guard self.frameRemaining > 0 && context.channel.isActive else { return }
        let due = self.frameStarted + self.frameTimeout
        guard due <= context.eventLoop.now else { return self.armFrameCheck(at: due, context: context) }
        context.fireErrorCaught(FrameTimeout(seconds: self.frameTimeout.nanoseconds / 1_000_000_000))
    }

    func read(context: ChannelHandlerContext) {
        if self.blocked != nil {
            self.readHeld = true
        } else {
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.frameCheck?.cancel()
        self.frameCheck = nil
        self.blocked = nil
        self.frame = nil
        self.memory.releaseAll()
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension RequestMemoryGate: Sendable {}

/// A request frame began but did not arrive whole in time.
struct FrameTimeout: Error, CustomStringConvertible {
    var seconds: Int64
    var description: String { "a request frame did not complete within \(self.seconds) s" }
}
