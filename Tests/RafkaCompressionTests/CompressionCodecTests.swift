import NIOCore
import RafkaCompression
import Testing

@Suite struct CompressionCodecTests {
    static let codecs: [CompressionCodec] = [.none, .gzip, .snappy, .lz4, .zstd]

    static func text(_ bytes: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        var i = 0
        while buffer.readableBytes < bytes {
            buffer.writeString("record \(i) of a compressible stream; ")
            i += 1
        }
        return buffer.getSlice(at: 0, length: bytes)!
    }

    @Test(arguments: codecs, [0, 1, 1000, 200_000, 3_000_000])
    func roundTrip(codec: CompressionCodec, size: Int) throws {
        let input = Self.text(size)
        let compressed = try codec.compress(input)
        if codec != .none && size > 1000 { #expect(compressed.readableBytes < input.readableBytes / 2) }
        let output = try codec.decompress(compressed, outputBytesMax: size + 1)
        #expect(output == input)
    }

    /// A small input that expands past the bound fails instead of allocating without limit.
    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func decompressionIsBounded(codec: CompressionCodec) throws {
        let zeros = ByteBuffer(repeating: 0, count: 16 * 1024 * 1024)
        let bomb = try codec.compress(zeros)
        #expect(bomb.readableBytes < 1024 * 1024)
        #expect(throws: CompressionError.self) { try codec.decompress(bomb, outputBytesMax: 1024 * 1024) }
    }

    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func truncatedInputIsCorrupt(codec: CompressionCodec) throws {
        let compressed = try codec.compress(Self.text(100_000))
        let cut = compressed.getSlice(at: 0, length: compressed.readableBytes / 2)!
        #expect(throws: CompressionError.self) { try codec.decompress(cut, outputBytesMax: 1 << 20) }
    }

    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func garbageIsCorrupt(codec: CompressionCodec) {
        let garbage = ByteBuffer(bytes: (0..<500).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        #expect(throws: CompressionError.self) { try codec.decompress(garbage, outputBytesMax: 1 << 20) }
    }

    /// Decompressing into a kept buffer appends after what it holds, bounds only the bytes it
    /// adds, and reuses the buffer's memory once it is large enough.
    @Test(arguments: codecs)
    func decompressIntoAKeptBuffer(codec: CompressionCodec) throws {
        let first = Self.text(300_000)
        let second = Self.text(5_000)
        var output = ByteBuffer(string: "kept")
        try codec.decompress(try codec.compress(first), outputBytesMax: first.readableBytes, into: &output)
        #expect(output.readableBytes == 4 + first.readableBytes)
        #expect(output.readString(length: 4) == "kept")
        #expect(output == first)

        let capacity = output.capacity
        output.clear()
        let address = output.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        try codec.decompress(try codec.compress(second), outputBytesMax: second.readableBytes, into: &output)
        #expect(output == second)
        #expect(output.capacity == capacity)
        #expect(output.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } == address)

        output.clear()
        output.writeString("kept")
        try codec.decompress(try codec.compress(second), outputBytesMax: .max, into: &output)  // no bound
        #expect(output.readableBytes == 4 + second.readableBytes)
        output.clear()
        output.writeString("kept")
        #expect(throws: CompressionError.self) {
            try codec.decompress(try codec.compress(second), outputBytesMax: second.readableBytes - 1, into: &output)
        }
    }

    /// Snappy as librdkafka and kafka-python write it, raw (a varint length, then elements; here
    /// one literal), besides the Java client's framed layout that `compress` writes; a raw
    /// block's declared length is checked against the bound before anything is allocated, and
    /// a framed block whose length runs past the batch is corrupt.
    @Test func snappyReadsRawBlocksAndChecksLengths() throws {
        let raw = ByteBuffer(bytes: [0x05, (5 - 1) << 2] + Array("hello".utf8))
        #expect(try CompressionCodec.snappy.decompress(raw, outputBytesMax: 5) == ByteBuffer(string: "hello"))
        #expect(throws: CompressionError.self) { try CompressionCodec.snappy.decompress(raw, outputBytesMax: 4) }
        // Declares 2^28 bytes in five bytes.
        let liar = ByteBuffer(bytes: [0x80, 0x80, 0x80, 0x80, 0x01, 0x00])
        #expect(throws: CompressionError.self) { try CompressionCodec.snappy.decompress(liar, outputBytesMax: 1 << 20) }
        var framed = try CompressionCodec.snappy.compress(Self.text(100_000))
        #expect(try CompressionCodec.snappy.decompress(framed, outputBytesMax: 100_000) == Self.text(100_000))
        // An empty block is decoded too: junk after its zero length is corrupt, as libsnappy
        // in a consumer finds it.
        var padded = framed
        padded.writeInteger(Int32(1))
        padded.writeBytes([0x00])
        #expect(try CompressionCodec.snappy.decompress(padded, outputBytesMax: 100_000) == Self.text(100_000))
        padded.writeInteger(Int32(3))
        padded.writeBytes([0x00, 0xFF, 0xFF])
        #expect(throws: CompressionError.self) { try CompressionCodec.snappy.decompress(padded, outputBytesMax: 1 << 20) }
        // A stream version snappy-java refuses.
        var versionZero = framed
        versionZero.setInteger(Int32(0), at: 8)
        #expect(throws: CompressionError.self) { try CompressionCodec.snappy.decompress(versionZero, outputBytesMax: 1 << 20) }
        framed.setInteger(Int32.max, at: 16)
        #expect(throws: CompressionError.self) { try CompressionCodec.snappy.decompress(framed, outputBytesMax: 1 << 20) }
        // A length within the bound but more than six bytes can expand to: refused before the
        // output grows.
        let bloated = ByteBuffer(bytes: [0x80, 0x80, 0x40, 0x00, 0x00, 0x00])  // declares 1 MiB
        var kept = ByteBuffer()
        #expect(throws: CompressionError.self) { try CompressionCodec.snappy.decompress(bloated, outputBytesMax: 1 << 21, into: &kept) }
        #expect(kept.capacity < 1 << 20)
    }

    /// The LZ4 frame magic and zstd magic at the start: what other Kafka clients expect.
    @Test func framesStartWithTheirMagic() throws {
        let lz4 = try CompressionCodec.lz4.compress(Self.text(100))
        #expect(lz4.getInteger(at: 0, endianness: .little, as: UInt32.self) == 0x184D_2204)
        let zstd = try CompressionCodec.zstd.compress(Self.text(100))
        #expect(zstd.getInteger(at: 0, endianness: .little, as: UInt32.self) == 0xFD2F_B528)
        let gzip = try CompressionCodec.gzip.compress(Self.text(100))
        #expect(gzip.getInteger(at: 0, as: UInt16.self) == 0x1F8B)
        // snappy-java's stream header, version 1, readable from version 1, then 32 KiB blocks.
        let snappy = try CompressionCodec.snappy.compress(Self.text(100_000))
        #expect(snappy.getBytes(at: 0, length: 8) == [0x82] + Array("SNAPPY".utf8) + [0])
        #expect(snappy.getInteger(at: 8, as: Int32.self) == 1 && snappy.getInteger(at: 12, as: Int32.self) == 1)
        let firstBlock = Int(snappy.getInteger(at: 16, as: Int32.self)!)
        #expect(try CompressionCodec.snappy.decompress(snappy.getSlice(at: 20, length: firstBlock)!, outputBytesMax: 1 << 20)
            == Self.text(32 * 1024))
    }
}
