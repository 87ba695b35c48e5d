import KafkaProtocol
import NIOCore
import RafkaCompression
import Testing

@testable import RafkaBench

@Suite struct RafkaBenchTests {
    /// The batches the producer sends are real batches: valid CRC, the codec asked for, the
    /// record count and sizes asked for, stamped with the time given; uncompressed, no larger
    /// than the batch size (header and record framing included, as Kafka's `batch.size`).
    @Test(arguments: [CompressionCodec.none, .gzip, .lz4, .zstd])
    func templatesAreWholeValidBatches(codec: CompressionCodec) throws {
        var settings = BenchSettings()
        settings.recordBytes = 100
        settings.keyBytes = 8
        settings.batchBytes = 12_000  // 61 bytes of header, 100 records of at most 119 bytes
        settings.compression = codec
        let templates = try BatchTemplates(settings: settings, variants: 3)
        #expect(templates.recordsPerBatch == 100)
        if codec == .none {
            #expect(templates.assembled.allSatisfy { $0.readableBytes <= settings.batchBytes })
        }
        for index in 0..<4 {
            let bytes = templates.batch(index, timestampMilliseconds: 1_700_000_000_000 + Int64(index))
            let header = try RecordBatchHeader.peek(bytes, at: bytes.readerIndex)
            try RecordBatch.validateHeader(header, bytes: bytes)
            #expect(header.compressionCodecValue == codec.rawValue && header.recordCount == 100)
            #expect(header.baseTimestamp == 1_700_000_000_000 + Int64(index) && header.maxTimestamp == header.baseTimestamp)
            let records = try RecordBatch.decodeRecords(
                codec.decompress(RecordBatch.recordsSection(of: bytes), outputBytesMax: 1 << 20))
            #expect(records.count == 100)
            #expect(records.allSatisfy { $0.key?.readableBytes == 8 && $0.value?.readableBytes == 100 })
        }
        // A producer restamps one buffer per variant in place: each stamp leaves a valid batch.
        var reused = templates.assembled[1]
        for time in [Int64(5), 1_700_000_000_000, 1_800_000_000_123] {
            templates.stamp(&reused, variant: 1, timestampMilliseconds: time)
            let header = try RecordBatchHeader.peek(reused, at: reused.readerIndex)
            try RecordBatch.validateHeader(header, bytes: reused)
            #expect(header.baseTimestamp == time && header.maxTimestamp == time)
            #expect(reused == templates.batch(4, timestampMilliseconds: time))
        }
    }

    /// At a target rate a batch holds what one producer's share of the rate makes within the
    /// linger, never more than the batch size.
    @Test func recordsPerBatchFollowTheRateAndLinger() {
        var settings = BenchSettings()
        settings.recordBytes = 1000
        #expect(settings.recordsPerBatch == 989)  // 1,011 bytes each with their framing, in 1 MB
        settings.targetRate = 100_000
        settings.producers = 2
        settings.lingerMilliseconds = 5
        #expect(settings.recordsPerBatch == 250)
        settings.targetRate = 10
        #expect(settings.recordsPerBatch == 1)
    }

    /// End-to-end latency is matched whichever side reports first; record i of a batch was due
    /// i intervals after the first; warm-up batches are matched but not counted.
    @Test func theLedgerMatchesArrivalsToSends() throws {
        let ledger = SendLedger()
        let sent = SendLedger.Sent(intendedNanoseconds: 1_000_000, recordIntervalNanoseconds: 1_000_000, records: 3, measured: true)
        ledger.acknowledged(.init(partition: 0, baseOffset: 0), sent)
        ledger.arrived(.init(partition: 0, baseOffset: 0), at: 11_000_000)  // latencies 10, 9, 8 ms
        ledger.arrived(.init(partition: 1, baseOffset: 5), at: 21_000_000)
        ledger.acknowledged(.init(partition: 1, baseOffset: 5), sent)  // 20, 19, 18 ms
        var warmUp = sent
        warmUp.measured = false
        ledger.acknowledged(.init(partition: 2, baseOffset: 0), warmUp)
        ledger.arrived(.init(partition: 2, baseOffset: 0), at: 2_000_000)
        ledger.acknowledged(.init(partition: 3, baseOffset: 0), sent)
        let summary = try #require(ledger.latencies.summary)
        #expect(summary.count == 6)
        #expect(abs(summary.max - 20) < 0.05 && abs(summary.p50 - 10) < 0.05)
        #expect(ledger.unmatched == 1)
    }

    @Test func settingsThatCannotRunAreRefused() {
        var settings = BenchSettings()
        #expect(settings.problem() == nil)
        settings.mode = .e2e
        settings.acks = 0
        #expect(settings.problem() != nil)
        settings.acks = 1
        settings.durationSeconds = nil
        #expect(settings.problem() != nil)
        settings.records = 10
        #expect(settings.problem() == nil)
    }
}
