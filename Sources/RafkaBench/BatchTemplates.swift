import KafkaProtocol
import NIOCore
import RafkaClient
import RafkaCompression
import RafkaCore

#if canImport(Glibc)
import Glibc
#endif

/// Ready-made batches, so that producing costs the benchmark 16 bytes written and 40 hashed per
/// batch instead of building and compressing every record: the broker gets batches exactly as
/// a client would send them (compressed with the chosen codec, record headers and all), and
/// the client stays cheap enough not to be what is measured.
///
/// Without keys there is one `Set` of batches, sent to every partition in turn (as Kafka's sticky
/// partitioner places records without keys). With keys, records go where Kafka's default
/// partitioner puts them (`KafkaPartitioner`: murmur2 of the key), so there is a set per
/// partition holding only keys that hash to it, drawn by their popularity (`keySkew`), and each
/// partition gets its share of the records: the popularity of its keys.
///
/// Each set has a few different batches (different random bytes and keys), used in turn; each
/// batch sent is stamped with its own timestamps (so records carry the time they were sent) in
/// a buffer the producer keeps and reuses (`Set.stamp`), its CRC combined from the header's and
/// the records' (`CRC32C.combine`). Reassembling every batch instead copied it once more: 11% of
/// rafka-bench's CPU at 754,000 records/s, which, on two cores shared with the broker, showed in
/// the broker's e2e p99 (docs/benchmarks.md).
struct BatchTemplates: Sendable {
    /// The batches of one stream of records: without keys, any partition's; with keys, one
    /// partition's.
    struct Set: Sendable {
        let recordsPerBatch: Int
        /// Compressed (or not) record sections with every timestamp delta 0.
        let sections: [ByteBuffer]
        /// Each section as a whole batch (header and records), stamped with time 0.
        let assembled: [ByteBuffer]
        /// The CRC-32C of each section, combined with a stamped header's.
        fileprivate let sectionCRCs: [UInt32]
        /// Key and value bytes per batch before compression.
        let payloadBytes: Int

        /// The variant batch number `index` (any number: the variants repeat) uses.
        func variant(_ index: Int) -> Int { index % self.assembled.count }

        /// Batch number `index`, stamped `timestampMilliseconds`, in a new buffer.
        func batch(_ index: Int, timestampMilliseconds: Int64) -> ByteBuffer {
            var batch = self.assembled[self.variant(index)]
            self.stamp(&batch, variant: self.variant(index), timestampMilliseconds: timestampMilliseconds)
            return batch
        }

        /// Sets the timestamps and CRC of `batch`, a copy of `assembled[variant]`, in place: no
        /// copy when the caller holds the only reference to its bytes.
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
    }

    /// Without keys: one set, for every partition. With keys: the set of partition `i` at
    /// index `i`, nil where no key hashes to it.
    let sets: [Set?]
    /// With keys: each partition's share of the records (the popularity of its keys, summing to
    /// 1). Without: nil.
    let shares: [Double]?
    let codec: CompressionCodec

    /// The most records a batch of any set holds.
    var recordsPerBatch: Int { self.sets.compactMap { $0?.recordsPerBatch }.max() ?? 0 }

    /// What a Kafka producer's `buffer.memory` holds by default: with keys at the highest rate,
    /// one batch of every partition fits in it, as batches of thousands of partitions would
    /// otherwise take gigabytes.
    static let keyedRoundBytesMax = 32 << 20

    /// `partitions`: the topic's partition count (keys are placed by it). `variants`: batches
    /// without keys (with keys, `keyedVariants` decides).
    init(settings: BenchSettings, partitions: Int = 1, variants: Int = 8, seed: UInt64 = 0x5eed) throws {
        var generator = SeededRandom(seed: seed)
        self.codec = settings.compression
        guard settings.keyBytes > 0 else {
            self.shares = nil
            self.sets = [
                try Self.makeSet(
                    records: settings.recordsPerBatch, variants: variants, settings: settings, generator: &generator
                ) { _ in nil }
            ]
            return
        }
        let keys = (0..<min(settings.keySpace, 65_536)).map { _ in
            Self.bytes(settings.keyBytes, payload: .random, generator: &generator)
        }
        // Zipf popularity by the order the keys were drawn in: key i weighs 1 / (i + 1)^skew.
        let weights = keys.indices.map { 1 / pow(Double($0 + 1), settings.keySkew) }
        let total = weights.reduce(0, +)
        var keysOf = Array(repeating: [(key: ByteBuffer, weight: Double)](), count: partitions)
        for (key, weight) in zip(keys, weights) {
            keysOf[KafkaPartitioner.partition(key: key, partitions: partitions)].append((key, weight / total))
        }
        let shares = keysOf.map { $0.reduce(0) { $0 + $1.weight } }
        self.shares = shares
        let counts = Self.keyedRecordsPerBatch(shares: shares, settings: settings)
        let perSet = Self.keyedVariants(counts: counts, shares: shares, settings: settings)
        self.sets = try keysOf.indices.map { partition in
            let keyed = keysOf[partition]
            guard !keyed.isEmpty else { return nil }
            // The partition's keys by their popularity within it.
            var cumulative: [Double] = []
            var sum = 0.0
            for (_, weight) in keyed {
                sum += weight
                cumulative.append(sum)
            }
            return try Self.makeSet(
                records: counts[partition], variants: perSet[partition], settings: settings, generator: &generator
            ) {
                generator in
                let point = Double(generator.next() >> 11) / Double(1 << 53) * sum
                let index = cumulative.firstIndex { $0 > point } ?? keyed.count - 1
                return keyed[index].key
            }
        }
    }

    /// With keys, each partition's records per batch. At a target rate: what its share of the
    /// rate makes within the linger (at least one record, at most a batch size), as a Kafka
    /// producer's batch per partition fills. At the highest rate: the batch size for the most
    /// popular partition and the others in proportion, all within `keyedRoundBytesMax`.
    static func keyedRecordsPerBatch(shares: [Double], settings: BenchSettings) -> [Int] {
        let bySize = settings.recordsPerBatchBySize
        if let rate = settings.targetRate {
            let perLinger = rate / Double(settings.producers) * settings.lingerMilliseconds / 1000
            return shares.map { max(1, min(bySize, Int((perLinger * $0).rounded(.down)))) }
        }
        let hottest = shares.max() ?? 1
        var counts = shares.map { max(1, min(bySize, Int((Double(bySize) * $0 / hottest).rounded()))) }
        let roundBytes = counts.reduce(0, +) * settings.encodedRecordBytes
        if roundBytes > Self.keyedRoundBytesMax {
            let scale = Double(Self.keyedRoundBytesMax) / Double(roundBytes)
            counts = counts.map { max(1, Int((Double($0) * scale).rounded(.down))) }
        }
        return counts
    }

    /// With keys, how many different batches each partition's set has: enough that about 1,024
    /// records are drawn for it (its batches repeat, so the keys a consumer sees are those
    /// drawn), up to 64 batches, and fewer when all of them would take more than
    /// `keyedTemplateBytesMax`.
    static func keyedVariants(counts: [Int], shares: [Double], settings: BenchSettings) -> [Int] {
        var variants = zip(counts, shares).map { count, share in share > 0 ? max(1, min(64, 1_024 / count)) : 0 }
        let bytes = zip(counts, variants).reduce(0) { $0 + $1.0 * $1.1 } * settings.encodedRecordBytes
        if bytes > Self.keyedTemplateBytesMax {
            let scale = Double(Self.keyedTemplateBytesMax) / Double(bytes)
            variants = variants.map { $0 == 0 ? 0 : max(1, Int((Double($0) * scale).rounded(.down))) }
        }
        return variants
    }

    /// What the batches built for keys may take before compression, when one batch per
    /// partition is less (it is then what they take).
    static let keyedTemplateBytesMax = 64 << 20

    private static func makeSet(
        records: Int,
        variants: Int,
        settings: BenchSettings,
        generator: inout SeededRandom,
        key: (inout SeededRandom) -> ByteBuffer?
    ) throws -> Set {
        var sections: [ByteBuffer] = []
        for _ in 0..<variants {
            let batch = (0..<records).map { index in
                Record(
                    timestampDelta: 0, offsetDelta: Int32(index), key: key(&generator),
                    value: Self.bytes(settings.recordBytes, payload: settings.payload, generator: &generator))
            }
            var plain = ByteBuffer()
            RecordBatch.encodeRecords(batch, into: &plain)
            sections.append(try settings.compression.compress(plain))
        }
        let header = RecordBatchHeader(
            attributes: Int16(settings.compression.rawValue), lastOffsetDelta: Int32(records - 1),
            recordCount: Int32(records))
        return Set(
            recordsPerBatch: records,
            sections: sections,
            assembled: sections.map { RecordBatch.assemble(header: header, body: $0) },
            sectionCRCs: sections.map { CRC32C.checksum($0) },
            payloadBytes: records * (settings.recordBytes + settings.keyBytes)
        )
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
