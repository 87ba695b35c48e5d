import CSnappy
import NIOCore

/// Snappy through the system libsnappy, in the two layouts Kafka clients write into a batch:
/// the Java client's (snappy-java's stream: a 16-byte header, then blocks of up to 32 KiB, each
/// a big-endian length and a raw snappy block), and librdkafka's and kafka-python's plain raw
/// snappy. Both are read; the Java client's is written, which every client reads.
///
/// ```
///  framed:  82 'SNAPPY' 00 | version 1 | compatible 1 | len₀ block₀ | len₁ block₁ | …
///  raw:     varint uncompressed length | snappy elements
/// ```
enum Snappy {
    static let magic: [UInt8] = [0x82, 0x53, 0x4E, 0x41, 0x50, 0x50, 0x59, 0x00]
    static let headerBytes = 16
    /// Uncompressed bytes per block, as snappy-java's stream writes them.
    static let blockBytes = 32 * 1024

    static func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        let blocks = (input.readableBytes + Self.blockBytes - 1) / Self.blockBytes
        var output = allocator.buffer(
            capacity: Self.headerBytes + blocks * (4 + snappy_max_compressed_length(Self.blockBytes)))
        output.writeBytes(Self.magic)
        output.writeInteger(Int32(1))  // version
        output.writeInteger(Int32(1))  // the oldest version that reads it
        var remaining = input
        var failed = false
        while remaining.readableBytes > 0 && !failed {
            let block = remaining.readSlice(length: min(Self.blockBytes, remaining.readableBytes))!
            let bound = snappy_max_compressed_length(block.readableBytes)
            let lengthAt = output.writerIndex
            output.writeInteger(Int32(0))
            _ = block.withUnsafeReadableBytes { source in
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { destination in
                    var length = bound
                    let status = snappy_compress(
                        source.baseAddress!.assumingMemoryBound(to: CChar.self), source.count,
                        destination.baseAddress!.assumingMemoryBound(to: CChar.self), &length)
                    guard status == SNAPPY_OK else {
                        failed = true
                        return 0
                    }
                    return length
                }
            }
            output.setInteger(Int32(output.writerIndex - lengthAt - 4), at: lengthAt)
        }
        if failed { throw CompressionError(.libraryFailure, "snappy_compress") }
        return output
    }

    static func decompress(
        _ input: ByteBuffer,
        outputBytesMax: Int,
        into output: inout ByteBuffer
    ) throws(CompressionError) {
        let limit = output.decompressionLimit(adding: outputBytesMax)
        guard input.readableBytesView.starts(with: Self.magic) else {
            return try Self.decompressBlock(input, limit: limit, into: &output)
        }
        var rest = input
        guard rest.readableBytes >= Self.headerBytes else { throw CompressionError(.corruptInput, "snappy: truncated header") }
        rest.moveReaderIndex(forwardBy: Self.magic.count)
        // snappy-java refuses a stream of a version below 1: one it would refuse is not stored
        // for its consumers. (The Java client and kafka-python write version 1, readable by 1.)
        guard let version = rest.readInteger(as: Int32.self), version >= 1 else {
            throw CompressionError(.corruptInput, "snappy: a stream version snappy-java does not read")
        }
        rest.moveReaderIndex(forwardBy: 4)  // the oldest version that reads it
        while rest.readableBytes > 0 {
            guard let length = rest.readInteger(as: Int32.self), length >= 0, Int(length) <= rest.readableBytes,
                let block = rest.readSlice(length: Int(length))
            else { throw CompressionError(.corruptInput, "snappy: a block's length runs past the batch") }
            try Self.decompressBlock(block, limit: limit, into: &output)
        }
    }

    /// One raw snappy block onto `output`, refused before any allocation if its declared
    /// length would take `output` past `limit`, or is more than snappy can expand the block to
    /// (a 3-byte copy of 64 bytes is its densest element), so that a few bytes cannot make the
    /// caller's kept buffer grow to the bound. Every block is decoded whole, an empty one too:
    /// bytes a consumer's snappy would refuse are not stored for it.
    private static func decompressBlock(
        _ block: ByteBuffer,
        limit: Int,
        into output: inout ByteBuffer
    ) throws(CompressionError) {
        var failure: CompressionError?
        block.withUnsafeReadableBytes { source in
            let compressed = source.baseAddress?.assumingMemoryBound(to: CChar.self)
            var length = 0
            guard let compressed, snappy_uncompressed_length(compressed, source.count, &length) == SNAPPY_OK else {
                failure = CompressionError(.corruptInput, "snappy: no length")
                return
            }
            guard length <= limit - output.writerIndex else {
                failure = CompressionError(.outputTooLarge, "snappy")
                return
            }
            guard length <= source.count * 64 / 3 else {
                failure = CompressionError(.corruptInput, "snappy: declares more than its bytes can hold")
                return
            }
            guard length > 0 else {
                if snappy_validate_compressed_buffer(compressed, source.count) != SNAPPY_OK {
                    failure = CompressionError(.corruptInput, "snappy: corrupt empty block")
                }
                return
            }
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { destination in
                var written = length
                let status = snappy_uncompress(
                    compressed, source.count, destination.baseAddress!.assumingMemoryBound(to: CChar.self), &written)
                guard status == SNAPPY_OK, written == length else {
                    failure = CompressionError(.corruptInput, "snappy: corrupt block")
                    return 0
                }
                return written
            }
        }
        if let failure { throw failure }
    }
}
