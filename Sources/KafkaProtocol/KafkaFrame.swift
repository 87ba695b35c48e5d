#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// An encoded request or response frame (size prefix, header, body) as the buffers one gathering
/// write sends: the encoder's own bytes, and between them the record batches of its `records`
/// fields, referenced where they already are instead of copied.
///
/// A fetch answered from the hot cache, or a produce request of a 400 KB batch, is then written
/// to the socket straight from the batch's buffer: copying each batch into the frame was 4% of
/// the broker's CPU and 7% of rafka-bench's at 754,000 records/s (docs/benchmarks.md). Fields
/// under `spliceBytesMin` are copied (an extra iovec costs more than copying a small batch).
public struct KafkaFrame: Sendable {
    public static let spliceBytesMin = 16 * 1024

    /// The frame, in order.
    public let parts: [ByteBuffer]

    public var readableBytes: Int { self.parts.reduce(0) { $0 + $1.readableBytes } }

    /// The frame as one buffer (copied together when it has several parts).
    public var joined: ByteBuffer {
        guard self.parts.count != 1 else { return self.parts[0] }
        var whole = ByteBufferAllocator().buffer(capacity: self.readableBytes)
        for part in self.parts { whole.writeImmutableBuffer(part) }
        return whole
    }

    /// Writes a 4-byte size prefix, then what `encode` writes into the buffer it is given (which
    /// starts with `capacity` bytes), and sets the prefix to the length that follows it. While
    /// `encode` runs on this thread, `writeKafkaRecords` leaves batches of `spliceBytesMin` or
    /// more where they are and notes where they go.
    public static func encode(capacity: Int = 256, _ encode: (inout ByteBuffer) -> Void) -> KafkaFrame {
        var buffer = ByteBufferAllocator().buffer(capacity: capacity)
        buffer.writeInteger(Int32(0))
        let splices = Splices()
        let outer = pthread_getspecific(Splices.key)
        pthread_setspecific(Splices.key, Unmanaged.passUnretained(splices).toOpaque())
        encode(&buffer)
        pthread_setspecific(Splices.key, outer)
        withExtendedLifetime(splices) {}
        let spliced = splices.entries.reduce(0) { $0 + $1.bytes.readableBytes }
        buffer.setInteger(Int32(buffer.readableBytes + spliced - 4), at: buffer.readerIndex)
        guard !splices.entries.isEmpty else { return KafkaFrame(parts: [buffer]) }
        var parts: [ByteBuffer] = []
        parts.reserveCapacity(2 * splices.entries.count + 1)
        var from = buffer.readerIndex
        for (position, bytes) in splices.entries {
            if position > from { parts.append(buffer.getSlice(at: from, length: position - from)!) }
            parts.append(bytes)
            from = position
        }
        if buffer.writerIndex > from { parts.append(buffer.getSlice(at: from, length: buffer.writerIndex - from)!) }
        return KafkaFrame(parts: parts)
    }

    /// The batches an encoding on this thread left in place, and the buffer positions they
    /// belong at. Generated encoders write `records` fields straight into the frame's buffer
    /// (never into a scratch buffer, as tagged fields are: tools/gen-protocol.py refuses a
    /// schema with records inside a tagged field), so positions are the frame's.
    final class Splices {
        var entries: [(position: Int, bytes: ByteBuffer)] = []

        static let key: pthread_key_t = {
            var key = pthread_key_t()
            precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
            return key
        }()

        /// The collector of the `KafkaFrame.encode` running on this thread, if any.
        static var current: Splices? {
            pthread_getspecific(Self.key).map { Unmanaged<Splices>.fromOpaque($0).takeUnretainedValue() }
        }
    }
}

extension ByteBuffer {
    /// A `records` field: its length, then the batches, copied, or left in place and noted
    /// when a `KafkaFrame.encode` is running on this thread and they are large.
    public mutating func writeKafkaRecords(_ value: ByteBuffer, compact: Bool) {
        guard value.readableBytes >= KafkaFrame.spliceBytesMin, let splices = KafkaFrame.Splices.current else {
            return self.writeKafkaBytes(value, compact: compact)
        }
        self.writeKafkaBytesLength(value.readableBytes, compact: compact)
        splices.entries.append((self.writerIndex, value))
    }

    public mutating func writeKafkaNullableRecords(_ value: ByteBuffer?, compact: Bool) {
        guard let value else { return self.writeKafkaNullableBytes(nil, compact: compact) }
        self.writeKafkaRecords(value, compact: compact)
    }
}

extension Channel {
    /// Writes `frame`'s parts back to back and flushes; NIO hands them to the socket in one
    /// gathering write. From another thread, the parts are written in one task on the channel's
    /// loop, so no other write comes between them. (A `KafkaFrame` given to NIO's own `write`
    /// would reach the socket handler as an unknown type and fail there.)
    public func writeFrame(_ frame: KafkaFrame) -> EventLoopFuture<Void> {
        guard self.eventLoop.inEventLoop else {
            return self.eventLoop.flatSubmit { self.writeFrame(frame) }
        }
        for part in frame.parts.dropLast() { self.write(part, promise: nil) }
        return self.writeAndFlush(frame.parts[frame.parts.count - 1])
    }
}
