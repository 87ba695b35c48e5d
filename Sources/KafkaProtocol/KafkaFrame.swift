#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// An encoded request or response frame (size prefix, header, body) as the parts one gathering
/// write sends: the encoder's own bytes, and between them the record batches of its `records`
/// fields, referenced where they already are instead of copied, or sent from a file.
///
/// A fetch answered from the hot cache, or a produce request of a 400 KB batch, is then written
/// to the socket straight from the batch's buffer: copying each batch into the frame was 4% of
/// the broker's CPU and 7% of rafka-bench's at 754,000 records/s (docs/benchmarks.md). Fields
/// under `spliceBytesMin` are copied (an extra iovec costs more than copying a small batch).
/// A fetch of records behind the hot cache sends them from the segment file (`FileRecords`:
/// NIO writes a file region with `sendfile`), so they never enter userspace.
public struct KafkaFrame: Sendable {
    public static let spliceBytesMin = 16 * 1024

    /// The frame, in order.
    public let parts: [IOData]
    /// What keeps the files of `parts` open and valid until the frame is written (and whatever
    /// else must last as long, such as the memory its records were read into): the writer holds
    /// the frame until the last part's write completes (or fails).
    public let leases: [any Sendable & AnyObject]

    public var readableBytes: Int { self.parts.reduce(0) { $0 + $1.readableBytes } }

    /// Records a frame sends straight from a file, in place of a `records` field's bytes.
    public struct FileRecords: Sendable {
        public let region: FileRegion
        /// Keeps `region`'s file handle open (and its descriptor meaning that file) while held.
        public let lease: any Sendable & AnyObject

        public init(region: FileRegion, lease: any Sendable & AnyObject) {
            self.region = region
            self.lease = lease
        }
    }

    /// The frame as one buffer (copied together when it has several parts; file parts read
    /// with `pread`): for tests and for callers that look inside a frame.
    public var joined: ByteBuffer {
        if self.parts.count == 1, case .byteBuffer(let only) = self.parts[0] { return only }
        var whole = ByteBufferAllocator().buffer(capacity: self.readableBytes)
        for part in self.parts {
            switch part {
            case .byteBuffer(let bytes):
                whole.writeImmutableBuffer(bytes)
            case .fileRegion(let region):
                whole.writeWithUnsafeMutableBytes(minimumWritableBytes: region.readableBytes) { target in
                    let read = try? region.fileHandle.withUnsafeFileDescriptor { descriptor in
                        pread(descriptor, target.baseAddress!, region.readableBytes, off_t(region.readerIndex))
                    }
                    // A frame's file stays open and as long as its region until the frame is written.
                    precondition(read == region.readableBytes, "a frame's file region could not be read whole")
                    return region.readableBytes
                }
            }
        }
        return whole
    }

    /// Writes a 4-byte size prefix, then what `encode` writes into the buffer it is given (which
    /// starts with `capacity` bytes), and sets the prefix to the length that follows it. While
    /// `encode` runs on this thread, `writeKafkaRecords` leaves batches of `spliceBytesMin` or
    /// more where they are and notes where they go, and writes the n-th `records` field it is
    /// given from `fileRecords[n]` when that is not nil (whatever bytes the message holds there).
    /// The frame holds `leases` (with the file records' own) until it is written.
    public static func encode(
        capacity: Int = 256,
        fileRecords: [FileRecords?] = [],
        leases extraLeases: [any Sendable & AnyObject] = [],
        _ encode: (inout ByteBuffer) -> Void
    ) -> KafkaFrame {
        var buffer = ByteBufferAllocator().buffer(capacity: capacity)
        buffer.writeInteger(Int32(0))
        let splices = Splices(fileRecords: fileRecords)
        let outer = pthread_getspecific(Splices.key)
        pthread_setspecific(Splices.key, Unmanaged.passUnretained(splices).toOpaque())
        encode(&buffer)
        pthread_setspecific(Splices.key, outer)
        withExtendedLifetime(splices) {}
        precondition(
            fileRecords.isEmpty || splices.recordsFields == fileRecords.count,
            "\(fileRecords.count) records fields expected, \(splices.recordsFields) encoded")
        let spliced = splices.entries.reduce(0) { $0 + $1.part.readableBytes }
        buffer.setInteger(Int32(buffer.readableBytes + spliced - 4), at: buffer.readerIndex)
        let leases = fileRecords.compactMap { $0?.lease } + extraLeases
        guard !splices.entries.isEmpty else { return KafkaFrame(parts: [.byteBuffer(buffer)], leases: leases) }
        var parts: [IOData] = []
        parts.reserveCapacity(2 * splices.entries.count + 1)
        var from = buffer.readerIndex
        for (position, part) in splices.entries {
            if position > from { parts.append(.byteBuffer(buffer.getSlice(at: from, length: position - from)!)) }
            parts.append(part)
            from = position
        }
        if buffer.writerIndex > from {
            parts.append(.byteBuffer(buffer.getSlice(at: from, length: buffer.writerIndex - from)!))
        }
        return KafkaFrame(parts: parts, leases: leases)
    }

    /// The batches an encoding on this thread left in place (or sends from a file), and the
    /// buffer positions they belong at. Generated encoders write `records` fields straight into
    /// the frame's buffer (never into a scratch buffer, as tagged fields are:
    /// tools/gen-protocol.py refuses a schema with records inside a tagged field), so positions
    /// are the frame's.
    final class Splices {
        var entries: [(position: Int, part: IOData)] = []
        let fileRecords: [FileRecords?]
        /// `records` fields encoded so far (counted only when `fileRecords` is not empty).
        var recordsFields = 0

        init(fileRecords: [FileRecords?]) { self.fileRecords = fileRecords }

        /// The file the next `records` field is sent from, if any.
        func nextFileRecords() -> FileRecords? {
            guard !self.fileRecords.isEmpty else { return nil }
            defer { self.recordsFields += 1 }
            return self.recordsFields < self.fileRecords.count ? self.fileRecords[self.recordsFields] : nil
        }

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
    /// when a `KafkaFrame.encode` is running on this thread and they are large (or sent from
    /// the file that encoding was given for this field).
    public mutating func writeKafkaRecords(_ value: ByteBuffer, compact: Bool) {
        let splices = KafkaFrame.Splices.current
        if let file = splices?.nextFileRecords() {
            return self.writeKafkaFileRecords(file, into: splices!, compact: compact)
        }
        guard value.readableBytes >= KafkaFrame.spliceBytesMin, let splices else {
            return self.writeKafkaBytes(value, compact: compact)
        }
        self.writeKafkaBytesLength(value.readableBytes, compact: compact)
        splices.entries.append((self.writerIndex, .byteBuffer(value)))
    }

    public mutating func writeKafkaNullableRecords(_ value: ByteBuffer?, compact: Bool) {
        guard let value else {
            let splices = KafkaFrame.Splices.current
            if let file = splices?.nextFileRecords() {
                return self.writeKafkaFileRecords(file, into: splices!, compact: compact)
            }
            return self.writeKafkaNullableBytes(nil, compact: compact)
        }
        self.writeKafkaRecords(value, compact: compact)
    }

    private mutating func writeKafkaFileRecords(
        _ file: KafkaFrame.FileRecords,
        into splices: KafkaFrame.Splices,
        compact: Bool
    ) {
        self.writeKafkaBytesLength(file.region.readableBytes, compact: compact)
        splices.entries.append((self.writerIndex, .fileRegion(file.region)))
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
        let written = self.writeAndFlush(frame.parts[frame.parts.count - 1])
        guard !frame.leases.isEmpty else { return written }
        return written.always { _ in withExtendedLifetime(frame.leases) {} }
    }
}
