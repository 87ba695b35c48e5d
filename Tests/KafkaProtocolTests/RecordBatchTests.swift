import KafkaProtocol
import NIOCore
import Testing

@Suite struct RecordBatchTests {
    static func records(_ count: Int) -> [Record] {
        (0..<count).map { (i: Int) -> Record in
            let key: ByteBuffer? = i % 2 == 0 ? ByteBuffer(string: "k\(i)") : nil
            var headers: [RecordHeader] = []
            if i % 3 == 0 {
                headers = [RecordHeader(key: "h", value: ByteBuffer(string: "x")), RecordHeader(key: "n", value: nil)]
            }
            return Record(
                timestampDelta: Int64(i * 3), offsetDelta: Int32(i), key: key, value: ByteBuffer(string: "value-\(i)"),
                headers: headers)
        }
    }

    static func batch(_ count: Int = 5, producerID: Int64 = -1, sequence: Int32 = -1) -> ByteBuffer {
        RecordBatch.build(
            header: RecordBatchHeader(baseTimestamp: 1_700_000_000_000, maxTimestamp: 1_700_000_000_000 + Int64(count - 1) * 3,
                                      producerID: producerID, producerEpoch: producerID >= 0 ? 0 : -1, baseSequence: sequence),
            records: Self.records(count)) { $0 }
    }

    @Test func buildParseValidateRoundTrip() throws {
        let bytes = Self.batch()
        let batches = try RecordBatch.split(bytes)
        #expect(batches.count == 1)
        let header = batches[0].header
        #expect(header.recordCount == 5)
        #expect(header.lastOffsetDelta == 4)
        #expect(header.totalBytes == bytes.readableBytes)
        try RecordBatch.validateHeader(header, bytes: batches[0].bytes)
        let payload = RecordBatch.recordsSection(of: bytes)
        let range = try RecordBatch.validateRecords(payload, header: header)
        #expect(range.minDelta == 0 && range.maxDelta == 12)
        #expect(try RecordBatch.decodeRecords(payload) == Self.records(5))
    }

    @Test func flippedBitFailsTheCRC() throws {
        var bytes = Self.batch()
        let position = bytes.readerIndex + 70
        bytes.setInteger(bytes.getInteger(at: position, as: UInt8.self)! ^ 0x01, at: position)
        let header = try RecordBatch.split(bytes)[0].header
        #expect(throws: RecordBatchError.self) { try RecordBatch.validateHeader(header, bytes: bytes) }
    }

    @Test func baseOffsetAndEpochSitOutsideTheCRC() throws {
        var bytes = Self.batch()
        RecordBatch.setBaseOffset(123_456, leaderEpoch: 7, in: &bytes, at: bytes.readerIndex)
        let header = try RecordBatch.split(bytes)[0].header
        #expect(header.baseOffset == 123_456)
        #expect(header.partitionLeaderEpoch == 7)
        try RecordBatch.validateHeader(header, bytes: bytes)
    }

    @Test func logAppendTimeRewritesTheCRC() throws {
        var bytes = Self.batch()
        RecordBatch.setLogAppendTime(42, in: &bytes, at: bytes.readerIndex, length: bytes.readableBytes)
        let header = try RecordBatch.split(bytes)[0].header
        #expect(header.isLogAppendTime && header.maxTimestamp == 42)
        try RecordBatch.validateHeader(header, bytes: bytes)
    }

    @Test func countThatDisagreesWithRecordsIsInvalid() throws {
        let bytes = Self.batch(3)
        var header = try RecordBatch.split(bytes)[0].header
        header.recordCount = 4
        #expect(throws: RecordBatchError.self) {
            try RecordBatch.validateRecords(RecordBatch.recordsSection(of: bytes), header: header)
        }
    }

    @Test func batchLongerThanTheBytesSentIsTruncated() {
        var bytes = Self.batch()
        bytes.moveWriterIndex(to: bytes.writerIndex - 1)
        #expect(throws: RecordBatchError.self) { try RecordBatch.split(bytes) }
        #expect((try? RecordBatch.split(bytes, allowPartialTail: true))?.count == 0)
    }

    @Test func oldMagicIsRefused() {
        var bytes = Self.batch()
        bytes.setInteger(Int8(1), at: bytes.readerIndex + 16)
        #expect(throws: RecordBatchError(.unsupportedMagic, "magic 1")) { try RecordBatch.split(bytes) }
    }

    @Test func lastSequenceWrapsLikeKafka() {
        let header = RecordBatchHeader(lastOffsetDelta: 4, producerID: 1, baseSequence: Int32.max - 1)
        #expect(header.lastSequence == 2)
    }

    /// Random garbage never crashes the parser or validator.
    @Test func randomBytesNeverCrash() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let count = Int.random(in: 0..<200, using: &generator)
            var bytes = ByteBuffer(bytes: (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
            if count > 20, Bool.random(using: &generator) {
                bytes.setInteger(Int8(2), at: 16)  // make more of them reach deeper checks
                bytes.setInteger(Int32(count - 12), at: 8)
            }
            if let batches = try? RecordBatch.split(bytes) {
                for batch in batches {
                    _ = try? RecordBatch.validateHeader(batch.header, bytes: batch.bytes)
                    _ = try? RecordBatch.validateRecords(RecordBatch.recordsSection(of: batch.bytes), header: batch.header)
                    _ = try? RecordBatch.decodeRecords(RecordBatch.recordsSection(of: batch.bytes))
                }
            }
        }
    }
}

/// `validateRecords` walks raw bytes; these compare it with a walk through ByteBuffer's checked
/// readers (the implementation it replaced) on every one-byte change and every truncation of a
/// records section, and on seeded multi-byte changes: both accept the same inputs with the same
/// count and timestamps, and reject the same ones.
extension RecordBatchTests {
    @Test func recordWalkAgreesWithCheckedReadersOnDamagedInput() throws {
        let bytes = Self.batch(12)
        let header = try RecordBatch.split(bytes)[0].header
        let section = RecordBatch.recordsSection(of: bytes)
        var cases: [ByteBuffer] = []
        for position in 0..<section.readableBytes {
            let original = section.getInteger(at: section.readerIndex + position, as: UInt8.self)!
            for value in Set([0x00, 0x01, 0x02, 0x0F, 0x10, 0x7F, 0x80, 0xFE, 0xFF, original ^ 0x01, original ^ 0x80]) {
                var damaged = section
                damaged.setInteger(value, at: section.readerIndex + position)
                cases.append(damaged)
            }
        }
        for length in 0..<section.readableBytes { cases.append(section.getSlice(at: section.readerIndex, length: length)!) }
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return Int(truncatingIfNeeded: state >> 1)
        }
        for _ in 0..<3000 {
            var damaged = section
            for _ in 0...(next() % 4) {
                damaged.setInteger(UInt8(truncatingIfNeeded: next()), at: section.readerIndex + next() % section.readableBytes)
            }
            cases.append(damaged)
        }
        var accepted = 0
        for damaged in cases {
            let walked = try? RecordBatch.validateRecords(damaged, header: header)
            let reference = Self.referenceWalk(damaged, count: header.recordCount)
            #expect(walked?.minDelta == reference?.minDelta && walked?.maxDelta == reference?.maxDelta)
            #expect((walked == nil) == (reference == nil))
            if walked != nil { accepted += 1 }
        }
        #expect(accepted > 12)  // values inside keys and payloads may change freely
    }

    /// Encodings one-byte changes do not reach: varints at their longest and one byte longer,
    /// extreme lengths and timestamp deltas, a record past the count, counts that disagree.
    @Test func recordWalkAgreesWithCheckedReadersOnEdgeEncodings() throws {
        let bytes = Self.batch(12)
        let header = try RecordBatch.split(bytes)[0].header
        let section = Array(RecordBatch.recordsSection(of: bytes).readableBytesView)
        // The first record: its length (one byte here), attributes, timestamp delta 0, offset delta 0.
        #expect(section[0] < 0x80 && section[1...3] == [0, 0, 0])
        let length = Int64(section[0] >> 1)
        let body = Array(section[1...])
        func padded(_ value: UInt64, to count: Int) -> [UInt8] {  // LEB128, padded with zero groups
            var out: [UInt8] = []
            var rest = value
            repeat {
                out.append(UInt8(rest & 0x7F) | 0x80)
                rest >>= 7
            } while rest != 0
            while out.count < count { out.append(0x80) }
            out[out.count - 1] &= 0x7F
            return out
        }
        func zigzag(_ value: Int64) -> UInt64 { UInt64(bitPattern: (value << 1) ^ (value >> 63)) }
        func withTimestamp(_ encoded: [UInt8]) -> [UInt8] {
            padded(zigzag(length - 1 + Int64(encoded.count)), to: 1) + [0] + encoded + Array(section[3...])
        }
        var cases: [(bytes: [UInt8], count: Int32)] = [
            (padded(zigzag(length), to: 5) + body, 12),  // longest varint: valid
            (padded(zigzag(length), to: 6) + body, 12),  // one byte too long
            ([0xFE, 0xFF, 0xFF, 0xFF, 0x0F] + body, 12),  // Int32.max
            ([0xFE, 0xFF, 0xFF, 0xFF, 0x1F] + body, 12),  // past 32 bits
            (padded(zigzag(length), to: 5).dropLast() + [0x10] + body, 12),  // past 32 bits, the rest valid
            ([0x01] + body, 12), ([0x03] + body, 12), ([0x00] + body, 12),  // -1, -2, 0
            (withTimestamp(padded(zigzag(.max), to: 10)), 12),
            (withTimestamp(padded(zigzag(.min), to: 10)), 12),
            (withTimestamp(padded(zigzag(5), to: 10)), 12),  // longest varlong: valid
            (withTimestamp(padded(zigzag(5), to: 11)), 12),  // one byte too long
            (withTimestamp([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x03]), 12),  // past 64 bits
            (section + section[..<(Int(length) + 1)], 12),  // a thirteenth record
            ([], 12), ([], 0),
        ]
        for count: Int32 in [0, 11, 13, -1, .max] { cases.append((section, count)) }
        var accepted = 0
        for (bytes, count) in cases {
            var header = header
            header.recordCount = count
            let walked = try? RecordBatch.validateRecords(ByteBuffer(bytes: bytes), header: header)
            let reference = Self.referenceWalk(ByteBuffer(bytes: bytes), count: count)
            #expect(walked?.minDelta == reference?.minDelta && walked?.maxDelta == reference?.maxDelta, "\(bytes.prefix(12))")
            #expect((walked == nil) == (reference == nil), "\(bytes.prefix(12)), count \(count)")
            if walked != nil { accepted += 1 }
        }
        #expect(accepted == 5)  // the longest length and delta, both extreme deltas, no records for a count of 0
    }

    /// The walk through ByteBuffer's readers, field by field, as `validateRecords` did before.
    static func referenceWalk(_ records: ByteBuffer, count: Int32) -> (minDelta: Int64, maxDelta: Int64)? {
        func skip(_ record: inout ByteBuffer, nullable: Bool) throws(KafkaDecodingError) -> Bool {
            let length = try record.readKafkaVarint()
            if length < 0 { return nullable && length == -1 }
            guard Int(length) <= record.readableBytes else { return false }
            record.moveReaderIndex(forwardBy: Int(length))
            return true
        }
        var buffer = records
        var delta: Int32 = 0
        var range = (minDelta: Int64.max, maxDelta: Int64.min)
        do throws(KafkaDecodingError) {
            while buffer.readableBytes > 0 {
                guard delta < count else { return nil }
                let length = try buffer.readKafkaVarint()
                guard length > 0, Int(length) <= buffer.readableBytes else { return nil }
                var record = buffer.readSlice(length: Int(length))!
                _ = try record.readKafkaInt8()
                let timestamp = try record.readKafkaVarlong()
                range = (min(range.minDelta, timestamp), max(range.maxDelta, timestamp))
                guard try record.readKafkaVarint() == delta else { return nil }
                guard try skip(&record, nullable: true), try skip(&record, nullable: true) else { return nil }
                let headers = try record.readKafkaVarint()
                guard headers >= 0, Int(headers) <= record.readableBytes else { return nil }
                for _ in 0..<headers {
                    guard try skip(&record, nullable: false), try skip(&record, nullable: true) else { return nil }
                }
                guard record.readableBytes == 0 else { return nil }
                delta += 1
            }
        } catch {
            return nil
        }
        return delta == count ? range : nil
    }
}
