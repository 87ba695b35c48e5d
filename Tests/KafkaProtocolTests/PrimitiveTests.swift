import KafkaProtocol
import NIOCore
import Testing

@Suite struct PrimitiveTests {
    @Test(arguments: [Int32(0), 1, -1, 63, -64, 64, 300, -300, Int32.max, Int32.min])
    func varintRoundTrips(value: Int32) throws {
        var buffer = ByteBuffer()
        buffer.writeKafkaVarint(value)
        #expect(buffer.readableBytes == kafkaVarintSize(Int64(value)))
        #expect(try buffer.readKafkaVarint() == value)
    }

    @Test(arguments: [Int64(0), -1, 1 << 40, Int64.max, Int64.min])
    func varlongRoundTrips(value: Int64) throws {
        var buffer = ByteBuffer()
        buffer.writeKafkaVarlong(value)
        #expect(try buffer.readKafkaVarlong() == value)
    }

    /// Zig-zag golden values from the protocol guide.
    @Test func zigZagGoldenBytes() {
        var buffer = ByteBuffer()
        buffer.writeKafkaVarint(-1)
        buffer.writeKafkaVarint(1)
        buffer.writeKafkaVarint(-64)
        buffer.writeKafkaVarint(64)
        #expect(Array(buffer.readableBytesView) == [0x01, 0x02, 0x7F, 0x80, 0x01])
    }

    @Test func overlongVarintIsRejected() {
        var buffer = ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        #expect(throws: KafkaDecodingError.self) { try buffer.readKafkaUnsignedVarint() }
    }

    @Test func stringsCompactAndClassic() throws {
        for compact in [false, true] {
            var buffer = ByteBuffer()
            buffer.writeKafkaString("héllo", compact: compact)
            buffer.writeKafkaNullableString(nil, compact: compact)
            #expect(try buffer.readKafkaString(compact: compact) == "héllo")
            #expect(try buffer.readKafkaNullableString(compact: compact) == nil)
        }
    }

    @Test func stringLongerThanBufferIsRejected() {
        var buffer = ByteBuffer(bytes: [0x00, 0x10, 0x61])
        #expect(throws: KafkaDecodingError(.lengthExceedsBuffer, "string")) { try buffer.readKafkaString(compact: false) }
    }

    @Test func negativeLengthOtherThanNullIsRejected() {
        var buffer = ByteBuffer(bytes: [0xFF, 0xFE])
        #expect(throws: KafkaDecodingError.self) { try buffer.readKafkaNullableString(compact: false) }
    }

    @Test func uuidPrintsLikeKafka() throws {
        let id = KafkaUUID(high: 0x0123_4567_89AB_CDEF, low: 0xFEDC_BA98_7654_3210)
        #expect(id.description.count == 22)
        #expect(KafkaUUID(id.description) == id)
        #expect(KafkaUUID.zero.description == "AAAAAAAAAAAAAAAAAAAAAA")
    }

    @Test func crc32cGoldenValue() {
        // The CRC-32C check value of "123456789" (RFC 3720 B.4).
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        let long = [UInt8](repeating: 0xA5, count: 1000)
        var incremental: UInt32 = 0
        long.withUnsafeBytes { bytes in
            incremental = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<333]))
            incremental = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[333...]), continuing: incremental)
        }
        #expect(incremental == CRC32C.checksum(long))
    }

    /// The hardware and table-driven paths agree on every length and alignment, including
    /// lengths the hardware path splits into three interleaved streams (3 KiB rounds).
    @Test func hardwareAndSoftwareAgree() {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<40_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes.withUnsafeBytes { all in
            for start in 0..<9 {
                for length in [0, 1, 7, 8, 9, 63, 64, 65, 1000, 3071, 3072, 3073, 4000, 6144, 9999, 39_990] {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    #expect(CRC32C.checksum(slice) == CRC32C.software(slice), "start \(start) length \(length)")
                    #expect(CRC32C.checksum(slice, continuing: 0x1234) == CRC32C.software(slice, continuing: 0x1234))
                }
            }
        }
    }

    /// Combining two CRCs gives the CRC of the joined bytes, for every split of a random
    /// buffer at lengths around the powers of two the combination squares through.
    @Test func combinedChecksumsEqualTheChecksumOfTheWhole() {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<70_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes.withUnsafeBytes { all in
            for split in [0, 1, 40, 61, 1000, 4096, 65_537, 70_000] {
                let first = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: all[..<split]))
                let second = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: all[split...]))
                #expect(
                    CRC32C.combine(first, second, secondLength: all.count - split) == CRC32C.checksum(all),
                    "split at \(split)"
                )
            }
        }
        #expect(CRC32C.combine(0x1234_5678, 0, secondLength: 0) == 0x1234_5678)
    }
}
