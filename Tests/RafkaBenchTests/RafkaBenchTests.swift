import KafkaProtocol
import NIOCore
import RafkaClient
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
        settings.batchBytes = 11_161  // 61 bytes of header, 100 records of at most 111 bytes
        settings.compression = codec
        settings.keyBytes = 0
        let templates = try #require(try BatchTemplates(settings: settings, variants: 3).sets.first ?? nil)
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
            #expect(records.allSatisfy { $0.key == nil && $0.value?.readableBytes == 100 })
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

    /// Kafka's murmur2, checked against the values Kafka's own tests and kafka-python give.
    @Test func murmur2MatchesKafka() {
        let cases: [(String, Int32)] = [
            ("21", -973_932_308), ("foobar", -790_332_482), ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971), ("abc", 479_470_107),
            ("", 275_646_681),
        ]
        for (text, expected) in cases {
            let hash = Array(text.utf8).withUnsafeBytes { KafkaPartitioner.murmur2($0) }
            #expect(Int32(bitPattern: hash) == expected, "\(text)")
        }
        // The sign bit is dropped, not the absolute value taken: -973,932,308 → 1,173,551,340.
        #expect(KafkaPartitioner.partition(key: ByteBuffer(string: "21"), partitions: 1_000) == 1_173_551_340 % 1_000)
    }

    /// With keys, each partition's batches hold only keys that hash to it, every batch is whole
    /// and valid, and the partitions' shares follow the keys' popularity: even without skew,
    /// the first key ahead with it.
    @Test(arguments: [0.0, 1.2])
    func keyedTemplatesPlaceEveryKeyOnItsPartition(skew: Double) throws {
        var settings = BenchSettings()
        settings.recordBytes = 50
        settings.keyBytes = 6
        settings.keySpace = 64
        settings.keySkew = skew
        settings.targetRate = 100_000
        settings.lingerMilliseconds = 5  // 500 records per linger across partitions
        let templates = try BatchTemplates(settings: settings, partitions: 6)
        let shares = try #require(templates.shares)
        #expect(shares.count == 6 && abs(shares.reduce(0, +) - 1) < 1e-9)
        var keysSeen: [[UInt8]: Int] = [:]
        for (partition, set) in templates.sets.enumerated() {
            guard let set else {
                #expect(shares[partition] == 0)
                continue
            }
            #expect(set.recordsPerBatch == max(1, Int((500 * shares[partition]).rounded(.down))))
            let bytes = set.batch(0, timestampMilliseconds: 7)
            let header = try RecordBatchHeader.peek(bytes, at: bytes.readerIndex)
            try RecordBatch.validateHeader(header, bytes: bytes)
            let records = try RecordBatch.decodeRecords(
                settings.compression.decompress(RecordBatch.recordsSection(of: bytes), outputBytesMax: 1 << 20))
            #expect(records.count == set.recordsPerBatch)
            for record in records {
                let key = try #require(record.key)
                #expect(KafkaPartitioner.partition(key: key, partitions: 6) == partition)
                keysSeen[Array(key.readableBytesView), default: 0] += 1
            }
        }
        #expect(keysSeen.count > 10)
        if skew > 0 {
            // Key 0 weighs 1/H(64, 1.2) ≈ 25% of the draws: its partition carries at least that.
            #expect(shares.max()! > 0.25)
        }
    }

    /// At the highest rate with keys, the most popular partition's batches fill the batch size and
    /// the others are in proportion; across thousands of partitions one batch of each stays
    /// within what a Kafka producer's buffer memory holds.
    @Test func keyedBatchesAtTheHighestRateStayWithinABufferMemory() {
        var settings = BenchSettings()
        settings.recordBytes = 1000
        settings.keyBytes = 8
        let full = settings.recordsPerBatchBySize
        let half = Int((Double(full) / 2).rounded())
        #expect(BatchTemplates.keyedRecordsPerBatch(shares: [0.5, 0.25, 0.25], settings: settings) == [full, half, half])
        let many = BatchTemplates.keyedRecordsPerBatch(shares: Array(repeating: 1.0 / 5_000, count: 5_000), settings: settings)
        #expect(many.reduce(0, +) * settings.encodedRecordBytes <= BatchTemplates.keyedRoundBytesMax)
        #expect(many.allSatisfy { $0 >= 1 })
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
        #expect(ledger.sharedKeys == 0)
        // Two batches acknowledged at one key (and two arriving at another) are counted.
        ledger.acknowledged(.init(partition: 3, baseOffset: 0), sent)
        ledger.arrived(.init(partition: 4, baseOffset: 0), at: 1)
        ledger.arrived(.init(partition: 4, baseOffset: 0), at: 2)
        #expect(ledger.sharedKeys == 2)
        #expect(ledger.unmatched == 1)
    }

    /// A consumer's fetch session: every partition until the broker gives a session, then only
    /// those whose position moved; a lost session starts over with a full request.
    @Test func aFetchSessionListsOnlyWhatMoved() {
        let order: [Int32] = [0, 1, 2]
        var positions: [Int32: Int64] = [0: 10, 1: 20, 2: 30]
        var session = FetchSessionState()
        var listed = session.next(order, positions: positions)
        #expect(listed.map(\.key) == order && session.id == 0 && session.epoch == 0)
        session.answered(sessionID: 0, listed: listed)  // the broker keeps no session
        #expect(session.next(order, positions: positions).count == 3 && session.epoch == 0)
        session.answered(sessionID: 7, listed: listed)
        #expect(session.id == 7 && session.epoch == 1)
        #expect(session.next(order, positions: positions).isEmpty)
        positions[1] = 25
        listed = session.next(order, positions: positions)
        #expect(listed.map(\.key) == [1] && listed.map(\.value) == [25])
        session.answered(sessionID: 7, listed: listed)
        #expect(session.epoch == 2 && session.next(order, positions: positions).isEmpty)
        session.reset()
        #expect(session.id == 0 && session.epoch == 0 && session.next(order, positions: positions).count == 3)
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
