import CZlib
import NIOCore

/// gzip through the system zlib (RFC 1952 framing, as Kafka's `compression.type=gzip`).
enum Gzip {
    /// zlib's window bits: 15 for a 32 KiB window, +16 for the gzip wrapper.
    private static let gzipWindowBits: Int32 = 15 + 16

    static func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        var stream = z_stream()
        let status = deflateInit2_(
            &stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, Self.gzipWindowBits, 8, Z_DEFAULT_STRATEGY,
            zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else { throw CompressionError(.libraryFailure, "deflateInit2") }
        defer { deflateEnd(&stream) }
        let bound = Int(deflateBound(&stream, UInt(input.readableBytes)))
        var output = allocator.buffer(capacity: bound)
        var result: Int32 = Z_OK
        var mutableInput = input
        _ = mutableInput.withUnsafeMutableReadableBytes { source in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { destination in
                stream.next_in = source.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.avail_in = uInt(source.count)
                stream.next_out = destination.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(destination.count)
                result = deflate(&stream, Z_FINISH)
                return destination.count - Int(stream.avail_out)
            }
        }
        guard result == Z_STREAM_END else { throw CompressionError(.libraryFailure, "deflate \(result)") }
        return output
    }

    static func decompress(
        _ input: ByteBuffer,
        outputBytesMax: Int,
        into output: inout ByteBuffer
    ) throws(CompressionError) {
        var stream = z_stream()
        guard inflateInit2_(&stream, Self.gzipWindowBits, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK
        else { throw CompressionError(.libraryFailure, "inflateInit2") }
        defer { inflateEnd(&stream) }
        let limit = output.decompressionLimit(adding: outputBytesMax)
        output.reserveCapacity(minimumWritableBytes: min(outputBytesMax, max(4096, input.readableBytes * 4)))
        var failure: CompressionError?
        var mutableInput = input
        mutableInput.withUnsafeMutableReadableBytes { source in
            stream.next_in = source.baseAddress?.assumingMemoryBound(to: Bytef.self)
            stream.avail_in = uInt(source.count)
            while true {
                guard let room = output.decompressionRoom(limit: limit) else {
                    failure = CompressionError(.outputTooLarge, "gzip")
                    return
                }
                var status: Int32 = Z_OK
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { destination in
                    stream.next_out = destination.baseAddress?.assumingMemoryBound(to: Bytef.self)
                    stream.avail_out = uInt(room)
                    status = inflate(&stream, Z_NO_FLUSH)
                    return room - Int(stream.avail_out)
                }
                switch status {
                case Z_STREAM_END:
                    return
                case Z_OK:
                    continue
                case Z_BUF_ERROR where stream.avail_in == 0:
                    failure = CompressionError(.corruptInput, "gzip: truncated stream")
                    return
                case Z_BUF_ERROR:
                    continue  // Output was full; the top of the loop grows it or fails.
                default:
                    failure = CompressionError(.corruptInput, "gzip: inflate \(status)")
                    return
                }
            }
        }
        if let failure { throw failure }
    }
}
