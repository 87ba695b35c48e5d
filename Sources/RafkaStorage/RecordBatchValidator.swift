import KafkaProtocol
import NIOCore
import NIOPosix
import RafkaCompression
import RafkaCore

/// Validates the records of a Produce request for one partition before they are appended, the
/// way Kafka's `LogValidator` does for magic v2: framing, CRC-32C, record count and offset
/// deltas (inside compressed batches too, with decompression bounded), batch size against
/// `max.message.bytes`, timestamps against `message.timestamp.*.max.ms`, and recompression when
/// the topic's `compression.type` names a codec.
///
/// Stateless but for one decompression buffer per thread, so it runs wherever it is called:
/// `PartitionShell` calls it on the partition's event loop just before the append, so that a
/// producer writing to partitions on several loops spreads the work over them.
public enum RecordBatchValidator {
    /// A batch failed; `code` tells the Kafka error, `message` is sent back where the version allows.
    public struct Failure: Error, Sendable, Equatable {
        public enum Code: Sendable, Equatable {
            case corruptMessage, invalidRecord, messageTooLarge, unsupportedCompression, invalidTimestamp
        }

        public var code: Code
        public var message: String
        /// Index of the failing batch within the request (for RecordErrors, KIP-467).
        public var batchIndex: Int

        public init(_ code: Code, _ message: String, batchIndex: Int = 0) {
            self.code = code
            self.message = message
            self.batchIndex = batchIndex
        }
    }

    public static func validate(
        _ records: ByteBuffer,
        config: LogConfig,
        nowMilliseconds now: Int64
    ) throws(Failure) -> [ValidatedBatch] {
        let batches: [(header: RecordBatchHeader, bytes: ByteBuffer)]
        do {
            batches = try RecordBatch.split(records)
        } catch {
            throw Self.failure(error, batchIndex: 0)
        }
        guard !batches.isEmpty else { throw Failure(.invalidRecord, "the request holds no record batch") }
        var validated: [ValidatedBatch] = []
        validated.reserveCapacity(batches.count)
        for (index, batch) in batches.enumerated() {
            validated.append(try Self.validate(batch.header, batch.bytes, config: config, now: now, index: index))
        }
        return validated
    }

    private static func validate(
        _ header: RecordBatchHeader,
        _ bytes: ByteBuffer,
        config: LogConfig,
        now: Int64,
        index: Int
    ) throws(Failure) -> ValidatedBatch {
        guard bytes.readableBytes <= config.maxMessageBytes else {
            throw Failure(
                .messageTooLarge,
                "batch of \(bytes.readableBytes) bytes exceeds max.message.bytes \(config.maxMessageBytes)", batchIndex: index)
        }
        do {
            try RecordBatch.validateHeader(header, bytes: bytes)
        } catch {
            throw Self.failure(error, batchIndex: index)
        }
        guard !header.isControl else {
            throw Failure(.invalidRecord, "clients may not produce control batches", batchIndex: index)
        }
        guard !header.isTransactional else {
            throw Failure(.invalidRecord, "transactional batches are not supported yet", batchIndex: index)
        }
        guard let codec = CompressionCodec(rawValue: header.compressionCodecValue) else {
            throw Failure(
                .unsupportedCompression, "compression codec \(header.compressionCodecValue) is not supported", batchIndex: index)
        }
        var payload = RecordBatch.recordsSection(of: bytes)
        let scratch = codec == .none ? nil : DecompressionScratch.current
        if let scratch {
            var output = scratch.take()
            do {
                try codec.decompress(payload, outputBytesMax: Limits.decompressedBatchBytesMax, into: &output)
            } catch {
                scratch.giveBack(output)
                throw Failure(.corruptMessage, "\(codec) batch does not decompress: \(error)", batchIndex: index)
            }
            payload = output
        }
        // The payload is read below only (records, recompression); nothing keeps it.
        defer { scratch?.giveBack(payload) }
        let timestamps: RecordBatch.TimestampRange
        do {
            timestamps = try RecordBatch.validateRecords(payload, header: header)
        } catch {
            throw Self.failure(error, batchIndex: index)
        }
        let maxTimestamp = try Self.checkTimestamps(header, timestamps, config: config, now: now, index: index)
        var header = header
        var bytes = bytes
        if config.timestampType == .createTime && header.maxTimestamp != maxTimestamp {
            // The header's max timestamp drives segment rolls, time retention and ListOffsets:
            // it must be the records' own, as Kafka's LogValidator makes it (setMaxTimestamp).
            var copy = ByteBuffer()
            copy.writeImmutableBuffer(bytes)
            copy.setInteger(maxTimestamp, at: copy.readerIndex + RecordBatchHeader.maxTimestampPosition, endianness: .big)
            let crc = RecordBatch.computeCRC(copy)
            copy.setInteger(crc, at: copy.readerIndex + RecordBatchHeader.crcPosition, endianness: .big)
            header.maxTimestamp = maxTimestamp
            header.crc = crc
            bytes = copy
        }
        if let target = Self.recompressionTarget(config.compressionType), target != codec {
            let recompressed = try Self.recompress(header, payload: payload, to: target, index: index)
            guard recompressed.bytes.readableBytes <= config.maxMessageBytes else {
                throw Failure(
                    .messageTooLarge,
                    "batch recompressed to \(target) is \(recompressed.bytes.readableBytes) bytes, over max.message.bytes \(config.maxMessageBytes)",
                    batchIndex: index)
            }
            return recompressed
        }
        return ValidatedBatch(header: header, bytes: bytes)
    }

    /// The buffer a thread decompresses batches into to validate them, kept from one batch to
    /// the next: a batch then costs no allocation of its decompressed size, whose fresh pages
    /// faulted one by one on first touch (up to 4,800 faults a second on one event loop at
    /// 750,000 records/s), and the records are walked while they are still in the CPU's cache.
    private final class DecompressionScratch: @unchecked Sendable {  // touched by its own thread only
        private static let perThread = ThreadSpecificVariable<DecompressionScratch>()

        static var current: DecompressionScratch {
            if let scratch = Self.perThread.currentValue { return scratch }
            let scratch = DecompressionScratch()
            Self.perThread.currentValue = scratch
            return scratch
        }

        private var buffer: ByteBuffer?

        /// The kept buffer, emptied (a new one the first time); the thread holds no other
        /// reference while it is out, so writing to it copies nothing.
        func take() -> ByteBuffer {
            var buffer = self.buffer ?? ByteBufferAllocator().buffer(capacity: 0)
            self.buffer = nil
            buffer.clear()
            return buffer
        }

        func giveBack(_ buffer: ByteBuffer) {
            if buffer.capacity <= Limits.decompressionBufferBytesKeptMax { self.buffer = buffer }
        }
    }

    /// Checks record timestamps (each base + delta must not overflow and must be ≥ -1, Kafka's
    /// "no timestamp") and, for CreateTime topics, the `message.timestamp.*.max.ms` window.
    /// Returns the records' max timestamp.
    private static func checkTimestamps(
        _ header: RecordBatchHeader,
        _ range: RecordBatch.TimestampRange,
        config: LogConfig,
        now: Int64,
        index: Int
    ) throws(Failure) -> Int64 {
        let (earliest, earlyOverflow) = header.baseTimestamp.addingReportingOverflow(range.minDelta)
        let (latest, lateOverflow) = header.baseTimestamp.addingReportingOverflow(range.maxDelta)
        guard !earlyOverflow, !lateOverflow, earliest >= -1 else {
            throw Failure(
                .invalidTimestamp,
                "record timestamps from base \(header.baseTimestamp) with deltas \(range.minDelta)…\(range.maxDelta) are invalid",
                batchIndex: index)
        }
        guard config.timestampType == .createTime else { return latest }
        let before = config.timestampBeforeMaxMilliseconds
        if before != Int64.max && now.subtractingReportingOverflow(earliest).partialValue > before {
            throw Failure(
                .invalidTimestamp,
                "timestamp \(earliest) is more than message.timestamp.before.max.ms before \(now)", batchIndex: index)
        }
        let after = config.timestampAfterMaxMilliseconds
        if after != Int64.max && latest.subtractingReportingOverflow(now).partialValue > after {
            throw Failure(
                .invalidTimestamp,
                "timestamp \(latest) is more than message.timestamp.after.max.ms after \(now)", batchIndex: index)
        }
        return latest
    }

    /// The codec a topic's `compression.type` forces, or nil for `producer`.
    static func recompressionTarget(_ compressionType: String) -> CompressionCodec? {
        switch compressionType {
        case "producer": nil
        case "uncompressed": CompressionCodec.none
        default: CompressionCodec(name: compressionType)
        }
    }

    private static func recompress(
        _ header: RecordBatchHeader,
        payload: ByteBuffer,
        to codec: CompressionCodec,
        index: Int
    ) throws(Failure) -> ValidatedBatch {
        let compressed: ByteBuffer
        do {
            compressed = try codec.compress(payload)
        } catch {
            throw Failure(.corruptMessage, "recompression to \(codec) failed: \(error)", batchIndex: index)
        }
        var newHeader = header
        newHeader.attributes = (header.attributes & ~0x07) | Int16(codec.rawValue)
        let batch = RecordBatch.assemble(header: newHeader, body: compressed)
        return ValidatedBatch(header: try Self.header(of: batch, index: index), bytes: batch)
    }

    private static func header(of batch: ByteBuffer, index: Int) throws(Failure) -> RecordBatchHeader {
        do {
            return try RecordBatchHeader.peek(batch, at: batch.readerIndex)
        } catch {
            throw Self.failure(error, batchIndex: index)
        }
    }

    private static func failure(_ error: RecordBatchError, batchIndex: Int) -> Failure {
        switch error.code {
        case .crcMismatch, .truncated: Failure(.corruptMessage, error.detail, batchIndex: batchIndex)
        case .tooLarge: Failure(.messageTooLarge, error.detail, batchIndex: batchIndex)
        case .unsupportedCompression: Failure(.unsupportedCompression, error.detail, batchIndex: batchIndex)
        default: Failure(.invalidRecord, error.detail, batchIndex: batchIndex)
        }
    }
}
