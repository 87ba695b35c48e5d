import KafkaProtocol
import NIOCore
import RafkaCompression
import RafkaCore

/// Ready-made record sections, so that producing costs the benchmark one copy and a CRC per
/// batch instead of building and compressing every record: the broker gets batches exactly as
/// a client would send them (compressed with the chosen codec, record headers and all), and
/// the client stays cheap enough not to be what is measured.
///
/// `variants` different sections are built (different random bytes and keys) and used in turn;
/// each batch gets its own base timestamp, so records carry the time they were sent.
struct BatchTemplates: Sendable {
    let recordsPerBatch: Int
    /// Compressed (or not) record sections with every timestamp delta 0.
    let sections: [ByteBuffer]
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
    }

    /// Batch number `index` (any number: the variants repeat), stamped `timestampMilliseconds`.
    func batch(_ index: Int, timestampMilliseconds: Int64) -> ByteBuffer {
        let header = RecordBatchHeader(
            attributes: Int16(self.codec.rawValue), lastOffsetDelta: Int32(self.recordsPerBatch - 1),
            baseTimestamp: timestampMilliseconds, maxTimestamp: timestampMilliseconds, recordCount: Int32(self.recordsPerBatch))
        return RecordBatch.assemble(header: header, body: self.sections[index % self.sections.count])
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
