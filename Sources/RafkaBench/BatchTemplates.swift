import KafkaProtocol
import NIOCore
import RafkaCompression
import RafkaCore

/// Ready-made batches, so that producing costs the benchmark 16 bytes written and 40 hashed per
/// batch instead of building and compressing every record: the broker gets batches exactly as
/// a client would send them (compressed with the chosen codec, record headers and all), and
/// the client stays cheap enough not to be what is measured.
///
/// `variants` different batches are built (different random bytes and keys) and used in turn;
/// each batch sent is stamped with its own timestamps (so records carry the time they were
/// sent) in a buffer the producer keeps and reuses (`stamp`), its CRC combined from the
/// header's and the records' (`CRC32C.combine`). Reassembling every batch instead copied it
/// once more: 11% of rafka-bench's CPU at 754,000 records/s, which, on two cores shared with
/// the broker, showed in the broker's e2e p99 (docs/benchmarks.md).
struct BatchTemplates: Sendable {
    let recordsPerBatch: Int
    /// Compressed (or not) record sections with every timestamp delta 0.
    let sections: [ByteBuffer]
    /// Each section as a whole batch (header and records), stamped with time 0.
    let assembled: [ByteBuffer]
    /// The CRC-32C of each section, combined with a stamped header's.
    private let sectionCRCs: [UInt32]
    /// Key and value bytes per batch before compression.
    let payloadBytes: Int
    let codec: CompressionCodec

    init(settings: BenchSettings, variants: Int = 8, seed: UInt64 = 0x5eed) throws {
        var generator = SeededRandom(seed: seed)
        self.recordsPerBatch = settings.recordsPerBatch
        self.codec = settings.compression
        self.payloadBytes = self.recordsPerBatch * (settings.recordBytes + settings.keyBytes)
        let keys = settings.keyBytes == 0 ? [] : (0..<min(settings.keySpace, 65_536)).map { _ in
            Self.bytes(settings.keyBytes, payload: .random, generator: &generator)
        }
        var sections: [ByteBuffer] = []
        for _ in 0..<variants {
            let records = (0..<self.recordsPerBatch).map { index in
                Record(
                    timestampDelta: 0, offsetDelta: Int32(index),
                    key: keys.isEmpty ? nil : keys[Int(generator.next() % UInt64(keys.count))],
                    value: Self.bytes(settings.recordBytes, payload: settings.payload, generator: &generator))
            }
            var plain = ByteBuffer()
            RecordBatch.encodeRecords(records, into: &plain)
            sections.append(try settings.compression.compress(plain))
        }
        self.sections = sections
        let header = RecordBatchHeader(
            attributes: Int16(self.codec.rawValue), lastOffsetDelta: Int32(self.recordsPerBatch - 1),
            recordCount: Int32(self.recordsPerBatch))
        self.assembled = sections.map { RecordBatch.assemble(header: header, body: $0) }
        self.sectionCRCs = sections.map { CRC32C.checksum($0) }
    }

    /// The variant batch number `index` (any number: the variants repeat) uses.
    func variant(_ index: Int) -> Int { index % self.assembled.count }

    /// Batch number `index`, stamped `timestampMilliseconds`, in a new buffer.
    func batch(_ index: Int, timestampMilliseconds: Int64) -> ByteBuffer {
        var batch = self.assembled[self.variant(index)]
        self.stamp(&batch, variant: self.variant(index), timestampMilliseconds: timestampMilliseconds)
        return batch
    }

    /// Sets the timestamps and CRC of `batch`, a copy of `assembled[variant]`, in place: no copy
    /// when the caller holds the only reference to its bytes.
    func stamp(_ batch: inout ByteBuffer, variant: Int, timestampMilliseconds: Int64) {
        let start = batch.readerIndex
        batch.setInteger(timestampMilliseconds, at: start + RecordBatchHeader.baseTimestampPosition, endianness: .big)
        batch.setInteger(timestampMilliseconds, at: start + RecordBatchHeader.maxTimestampPosition, endianness: .big)
        let headerCRC = batch.withUnsafeReadableBytes { bytes in
            CRC32C.checksum(
                UnsafeRawBufferPointer(rebasing: bytes[RecordBatchHeader.attributesPosition..<RecordBatchHeader.size])
            )
        }
        let section = self.sections[variant]
        let crc = CRC32C.combine(headerCRC, self.sectionCRCs[variant], secondLength: section.readableBytes)
        batch.setInteger(crc, at: start + RecordBatchHeader.crcPosition, endianness: .big)
    }

    /// Bytes on the wire per batch (header included), averaged over the variants.
    var wireBytesPerBatch: Int {
        RecordBatchHeader.size + self.sections.reduce(0) { $0 + $1.readableBytes } / self.sections.count
    }

    private static func bytes(_ count: Int, payload: BenchSettings.Payload, generator: inout SeededRandom) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(count)
        let random = switch payload {
        case .compressible: count / 2
        case .random: count
        case .zeros: 0
        }
        var written = 0
        while written < random {
            var word = generator.next()
            let take = min(8, random - written)
            _ = withUnsafeBytes(of: &word) { buffer.writeBytes($0.prefix(take)) }
            written += take
        }
        let pattern: [UInt8] = Array("rafka-bench payload ".utf8)
        while written < count {
            let take = min(pattern.count, count - written)
            buffer.writeBytes(payload == .zeros ? [UInt8](repeating: 0, count: take) : Array(pattern.prefix(take)))
            written += take
        }
        return buffer
    }
}
