import NIOCore

/// One record inside a v2 batch (implementation guide 5.3.2). Key, value and header values are
/// slices of the batch's (decompressed) bytes.
public struct Record: Equatable, Sendable {
    public var timestampDelta: Int64
    public var offsetDelta: Int32
    public var key: ByteBuffer?
    public var value: ByteBuffer?
    public var headers: [RecordHeader]

    public init(
        timestampDelta: Int64 = 0,
        offsetDelta: Int32 = 0,
        key: ByteBuffer? = nil,
        value: ByteBuffer? = nil,
        headers: [RecordHeader] = []
    ) {
        self.timestampDelta = timestampDelta
        self.offsetDelta = offsetDelta
        self.key = key
        self.value = value
        self.headers = headers
    }
}

/// A record header: a string key and an optional value.
public struct RecordHeader: Equatable, Sendable {
    public var key: String
    public var value: ByteBuffer?

    public init(key: String, value: ByteBuffer?) {
        self.key = key
        self.value = value
    }
}

extension RecordBatch {
    /// Decodes every record of an uncompressed records section. For tools and tests: the broker
    /// never materialises records on its produce or fetch path.
    public static func decodeRecords(_ records: ByteBuffer) throws(RecordBatchError) -> [Record] {
        var buffer = records
        var result: [Record] = []
        do throws(KafkaDecodingError) {
            while buffer.readableBytes > 0 {
                let length = try buffer.readKafkaVarint()
                guard length > 0, Int(length) <= buffer.readableBytes else {
                    throw KafkaDecodingError(.lengthExceedsBuffer, "record length \(length)")
                }
                var body = buffer.readSlice(length: Int(length))!
                _ = try body.readKafkaInt8()
                let timestampDelta = try body.readKafkaVarlong()
                let offsetDelta = try body.readKafkaVarint()
                let key = try Self.readVarBytes(&body)
                let value = try Self.readVarBytes(&body)
                let headerCount = try body.readKafkaVarint()
                guard headerCount >= 0, Int(headerCount) <= body.readableBytes else {
                    throw KafkaDecodingError(.lengthExceedsBuffer, "header count \(headerCount)")
                }
                var headers: [RecordHeader] = []
                headers.reserveCapacity(Int(headerCount))
                for _ in 0..<headerCount {
                    guard var keyBytes = try Self.readVarBytes(&body) else {
                        throw KafkaDecodingError(.unexpectedNull, "header key")
                    }
                    let headerKey = keyBytes.readString(length: keyBytes.readableBytes) ?? ""
                    headers.append(RecordHeader(key: headerKey, value: try Self.readVarBytes(&body)))
                }
                result.append(
                    Record(timestampDelta: timestampDelta, offsetDelta: offsetDelta, key: key, value: value, headers: headers))
            }
        } catch {
            throw RecordBatchError(.invalidRecord, error.description)
        }
        return result
    }

    private static func readVarBytes(_ buffer: inout ByteBuffer) throws(KafkaDecodingError) -> ByteBuffer? {
        let length = try buffer.readKafkaVarint()
        if length < 0 { return nil }
        guard let slice = buffer.readSlice(length: Int(length)) else {
            throw KafkaDecodingError(.lengthExceedsBuffer, "record field")
        }
        return slice
    }

    /// Appends the uncompressed encoding of `records` to `buffer`.
    public static func encodeRecords(_ records: [Record], into buffer: inout ByteBuffer) {
        for record in records {
            var size = 1 + kafkaVarintSize(record.timestampDelta) + kafkaVarintSize(Int64(record.offsetDelta))
            size += Self.varBytesSize(record.key) + Self.varBytesSize(record.value)
            size += kafkaVarintSize(Int64(record.headers.count))
            for header in record.headers {
                size += kafkaVarintSize(Int64(header.key.utf8.count)) + header.key.utf8.count
                size += Self.varBytesSize(header.value)
            }
            buffer.writeKafkaVarint(Int32(size))
            buffer.writeInteger(Int8(0))
            buffer.writeKafkaVarlong(record.timestampDelta)
            buffer.writeKafkaVarint(record.offsetDelta)
            Self.writeVarBytes(record.key, into: &buffer)
            Self.writeVarBytes(record.value, into: &buffer)
            buffer.writeKafkaVarint(Int32(record.headers.count))
            for header in record.headers {
                buffer.writeKafkaVarint(Int32(header.key.utf8.count))
                buffer.writeString(header.key)
                Self.writeVarBytes(header.value, into: &buffer)
            }
        }
    }

    private static func varBytesSize(_ bytes: ByteBuffer?) -> Int {
        guard let bytes else { return 1 }
        return kafkaVarintSize(Int64(bytes.readableBytes)) + bytes.readableBytes
    }

    private static func writeVarBytes(_ bytes: ByteBuffer?, into buffer: inout ByteBuffer) {
        guard let bytes else {
            buffer.writeKafkaVarint(-1)
            return
        }
        buffer.writeKafkaVarint(Int32(bytes.readableBytes))
        buffer.writeImmutableBuffer(bytes)
    }

    /// Builds a complete v2 batch. `header` supplies offsets, timestamps, producer fields and the
    /// attributes (codec bits included); its length, count, last offset delta and CRC are computed.
    /// `compress` turns the encoded records into the codec's bytes (identity for none).
    public static func build(
        header: RecordBatchHeader,
        records: [Record],
        compress: (ByteBuffer) throws -> ByteBuffer
    ) rethrows -> ByteBuffer {
        precondition(!records.isEmpty, "a batch holds at least one record")
        var payload = ByteBuffer()
        Self.encodeRecords(records, into: &payload)
        var header = header
        header.recordCount = Int32(records.count)
        header.lastOffsetDelta = records.last!.offsetDelta
        return Self.assemble(header: header, body: try compress(payload))
    }

    /// A complete batch from `header` (count and last offset delta already right) and its
    /// records section as stored (compressed or not): fills in the length and the CRC.
    public static func assemble(header: RecordBatchHeader, body: ByteBuffer) -> ByteBuffer {
        var header = header
        header.batchLength = Int32(RecordBatchHeader.size - RecordBatchHeader.logOverhead + body.readableBytes)
        header.crc = 0
        var batch = ByteBuffer()
        batch.reserveCapacity(header.totalBytes)
        header.write(into: &batch)
        batch.writeImmutableBuffer(body)
        batch.setInteger(Self.computeCRC(batch), at: batch.readerIndex + RecordBatchHeader.crcPosition, endianness: .big)
        assert(batch.readableBytes == header.totalBytes)
        return batch
    }

    /// The records section of a batch (after the 61-byte header), still compressed if it was.
    public static func recordsSection(of batch: ByteBuffer) -> ByteBuffer {
        batch.getSlice(at: batch.readerIndex + RecordBatchHeader.size, length: batch.readableBytes - RecordBatchHeader.size)!
    }
}
