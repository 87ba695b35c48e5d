import KafkaProtocol
import NIOCore
import RafkaCompression
import RafkaStorage
import Testing

@Suite struct RecordBatchValidatorTests {
    @Test(arguments: [CompressionCodec.none, .gzip, .lz4, .zstd])
    func acceptsEveryCodec(codec: CompressionCodec) throws {
        let batches = try Batches.validated(Batches.make(count: 50, valueBytes: 100, codec: codec))
        #expect(batches.count == 1 && batches[0].header.recordCount == 50)
    }

    @Test func oversizedBatchIsMessageTooLarge() throws {
        let config = try LogConfig(overrides: ["max.message.bytes": "1000"])
        #expect(validationFailure { _ = try Batches.validated(Batches.make(count: 20, valueBytes: 100), config: config) } == .messageTooLarge)
    }

    @Test func wrongCRCIsCorruptMessage() throws {
        var bytes = Batches.make()
        bytes.setInteger(UInt32(12345), at: 17)
        #expect(validationFailure { _ = try Batches.validated(bytes) } == .corruptMessage)
    }

    /// A compressed batch whose records section does not decompress, with a correct CRC.
    @Test func undecompressableBatchIsCorrupt() throws {
        var header = RecordBatchHeader(attributes: 3, baseTimestamp: 0, maxTimestamp: 0)
        header.recordCount = 1
        header.batchLength = Int32(RecordBatchHeader.size - 12 + 10)
        var bytes = ByteBuffer()
        header.write(into: &bytes)
        bytes.writeBytes([UInt8](repeating: 0x42, count: 10))
        bytes.setInteger(RecordBatch.computeCRC(bytes), at: 17)
        #expect(validationFailure { _ = try Batches.validated(bytes) } == .corruptMessage)
    }

    @Test(arguments: [(CompressionCodec.zstd, CompressionCodec.gzip), (.snappy, .lz4)])
    func recompressesWhenTheTopicAsks(topic: CompressionCodec, produced: CompressionCodec) throws {
        let config = try LogConfig(overrides: ["compression.type": topic.description])
        let original = Batches.make(count: 30, valueBytes: 200, codec: produced)
        let batches = try Batches.validated(original, config: config)
        #expect(batches[0].header.compressionCodecValue == topic.rawValue)
        try RecordBatch.validateHeader(batches[0].header, bytes: batches[0].bytes)
        #expect(try Batches.values(batches[0].bytes) == Batches.values(original))
    }

    /// Snappy batches are validated record by record and kept as produced.
    @Test func snappyBatchesAreKeptAsProduced() throws {
        let produced = Batches.make(count: 30, valueBytes: 200, codec: .snappy)
        let kept = try Batches.validated(produced)
        #expect(kept[0].header.compressionCodecValue == CompressionCodec.snappy.rawValue)
        #expect(kept[0].bytes == produced)
        #expect(try Batches.values(kept[0].bytes).count == 30)
    }

    /// Batches of one request decompress one after another into the thread's kept buffer: each
    /// is validated and recompressed from its own records only, the large one first.
    @Test func batchesShareTheDecompressionBufferOneAtATime() throws {
        let config = try LogConfig(overrides: ["compression.type": "gzip"])
        let originals = [
            Batches.make(count: 400, valueBytes: 1000, codec: .lz4, tag: "a"),
            Batches.make(count: 3, valueBytes: 10, codec: .zstd, tag: "b"),
            Batches.make(count: 50, valueBytes: 100, codec: .lz4, tag: "c"),
        ]
        var request = ByteBuffer()
        for original in originals { request.writeImmutableBuffer(original) }
        for _ in 0..<2 {
            let batches = try RecordBatchValidator.validate(request, config: config, nowMilliseconds: 1_700_000_000_500)
            #expect(batches.map(\.header.recordCount) == [400, 3, 50])
            for (batch, original) in zip(batches, originals) {
                #expect(batch.header.compressionCodecValue == CompressionCodec.gzip.rawValue)
                #expect(try Batches.values(batch.bytes) == Batches.values(original))
            }
        }
        var corrupt = Batches.make(count: 5, valueBytes: 100, codec: .lz4)
        corrupt.setInteger(UInt8(0xFF), at: corrupt.writerIndex - 3)
        corrupt.setInteger(RecordBatch.computeCRC(corrupt), at: RecordBatchHeader.crcPosition)
        #expect(validationFailure { _ = try Batches.validated(corrupt) } == .corruptMessage)
        #expect(try Batches.validated(originals[2])[0].header.recordCount == 50)
    }

    @Test func keepsBatchesAsProducedByDefault() throws {
        let original = Batches.make(count: 30, valueBytes: 200, codec: .lz4)
        let batches = try Batches.validated(original)
        #expect(batches[0].bytes == original)
    }

    @Test func timestampsOutsideTheWindowAreRejected() throws {
        let config = try LogConfig(overrides: ["message.timestamp.before.max.ms": "1000"])
        #expect(validationFailure {
            _ = try RecordBatchValidator.validate(Batches.make(timestamp: 1), config: config, nowMilliseconds: 1_000_000)
        } == .invalidTimestamp)
    }

    @Test func transactionalAndControlBatchesAreRefused() throws {
        for bit: Int16 in [0x10, 0x20] {
            var bytes = Batches.make()
            bytes.setInteger(bit, at: 21)
            bytes.setInteger(RecordBatch.computeCRC(bytes), at: 17)
            #expect(validationFailure { _ = try Batches.validated(bytes) } == .invalidRecord, "attribute \(bit)")
        }
    }
}

@Suite struct LogConfigTests {
    @Test func defaultsAreKafkas() throws {
        let config = try LogConfig()
        #expect(config.segmentBytes == 1_073_741_824)
        #expect(config.retentionMilliseconds == 604_800_000)
        #expect(config.retentionBytes == -1)
        #expect(config.maxMessageBytes == 1_048_588)
        #expect(config.flushesOnlyByOS)
        #expect(config.compressionType == "producer")
    }

    @Test(arguments: [
        ("retention.ms", "abc"), ("retention.ms", "-2"), ("segment.bytes", "10"), ("cleanup.policy", "compact"),
        ("message.timestamp.type", "Wrong"), ("no.such.key", "1"), ("preallocate", "maybe"), ("max.message.bytes", "99999999999"),
    ])
    func badValuesAreInvalidConfig(key: String, value: String) {
        #expect(throws: StorageError.self) { try LogConfig(overrides: [key: value]) }
    }

    @Test func overridesBeatBrokerDefaultsBeatKafkaDefaults() throws {
        let config = try LogConfig(overrides: ["retention.ms": "5"], defaults: ["retention.ms": "7", "segment.ms": "9"])
        #expect(config.retentionMilliseconds == 5)
        #expect(config.segmentMilliseconds == 9)
    }
}

@Suite struct ProducerStateTableTests {
    func header(_ pid: Int64, _ epoch: Int16, _ sequence: Int32, count: Int32, offset: Int64) -> RecordBatchHeader {
        RecordBatchHeader(baseOffset: offset, lastOffsetDelta: count - 1, producerID: pid, producerEpoch: epoch, baseSequence: sequence, recordCount: count)
    }

    @Test func remembersOnlyTheLastFiveBatches() {
        var table = ProducerStateTable()
        for i in 0..<7 { table.record(self.header(1, 0, Int32(i * 2), count: 2, offset: Int64(i * 2))) }
        #expect(table.check(self.header(1, 0, 12, count: 2, offset: 0)) == .duplicate(.init(firstSequence: 12, lastSequence: 13, firstOffset: 12, lastOffset: 13, timestamp: 0)))
        #expect(table.check(self.header(1, 0, 4, count: 2, offset: 0)) == .duplicate(.init(firstSequence: 4, lastSequence: 5, firstOffset: 4, lastOffset: 5, timestamp: 0)))
        // Batch 0 fell out of the window: not a duplicate, and out of order.
        #expect(table.check(self.header(1, 0, 0, count: 2, offset: 0)) == .outOfOrder(expected: 14, received: 0))
        #expect(table.check(self.header(1, 0, 14, count: 1, offset: 0)) == .append)
    }

    @Test func newEpochMustStartAtZero() {
        var table = ProducerStateTable()
        table.record(self.header(1, 0, 0, count: 1, offset: 0))
        #expect(table.check(self.header(1, 1, 0, count: 1, offset: 1)) == .append)
        #expect(table.check(self.header(1, 1, 3, count: 1, offset: 1)) == .outOfOrder(expected: 0, received: 3))
    }

    @Test func evictsTheLeastRecentlyActiveProducer() {
        var table = ProducerStateTable(batchesRemembered: 5, producersMax: 3)
        for pid in Int64(0)..<4 { table.record(self.header(pid, 0, 0, count: 1, offset: pid)) }
        #expect(table.entries.count == 3)
        #expect(table.entries[0] == nil)
    }
}

extension RecordBatchValidatorTests {
    /// A header max timestamp that disagrees with the records (here Int64.min) is replaced by
    /// the records' own, CRC and all: later arithmetic on it must not trap.
    @Test func headerMaxTimestampIsTheRecords() throws {
        var bytes = Batches.make(count: 3, timestamp: 1_000)
        bytes.setInteger(Int64.min, at: RecordBatchHeader.maxTimestampPosition)
        bytes.setInteger(RecordBatch.computeCRC(bytes), at: RecordBatchHeader.crcPosition)
        let batch = try Batches.validated(bytes)[0]
        #expect(batch.header.maxTimestamp == 1_002)
        try RecordBatch.validateHeader(try RecordBatch.split(batch.bytes)[0].header, bytes: batch.bytes)
        #expect(try RecordBatch.split(batch.bytes)[0].header.maxTimestamp == 1_002)
    }

    @Test func overflowingRecordTimestampsAreInvalid() throws {
        var bytes = Batches.make(count: 3, timestamp: 0)
        bytes.setInteger(Int64.max - 1, at: 27)  // base timestamp; deltas 0, 1, 2 overflow
        bytes.setInteger(RecordBatch.computeCRC(bytes), at: RecordBatchHeader.crcPosition)
        #expect(validationFailure { _ = try Batches.validated(bytes) } == .invalidTimestamp)
        var negative = Batches.make(count: 1, timestamp: 0)
        negative.setInteger(Int64(-5), at: 27)
        negative.setInteger(RecordBatch.computeCRC(negative), at: RecordBatchHeader.crcPosition)
        #expect(validationFailure { _ = try Batches.validated(negative) } == .invalidTimestamp)
    }

    @Test func recompressionThatGrowsPastTheLimitIsTooLarge() throws {
        let config = try LogConfig(overrides: ["compression.type": "uncompressed", "max.message.bytes": "3000"])
        let compressed = Batches.make(count: 50, valueBytes: 200, codec: .zstd)
        #expect(compressed.readableBytes < 3000)
        #expect(validationFailure { _ = try Batches.validated(compressed, config: config) } == .messageTooLarge)
    }
}
