import CLZ4
import NIOCore

/// LZ4 frame format (lz4frame.h), as Kafka's `compression.type=lz4` uses it.
///
/// Written with independent 64 KiB blocks and no content checksum, the shape Kafka's own Java
/// writer produces and every client reads.
enum LZ4Frame {
    static func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        var preferences = LZ4F_preferences_t()
        preferences.frameInfo.blockSizeID = LZ4F_max64KB
        preferences.frameInfo.blockMode = LZ4F_blockIndependent
        let bound = LZ4F_compressFrameBound(input.readableBytes, &preferences)
        var output = allocator.buffer(capacity: bound)
        let written = input.withUnsafeReadableBytes { source in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { destination in
                let result = LZ4F_compressFrame(
                    destination.baseAddress, bound, source.baseAddress, source.count, &preferences)
                return LZ4F_isError(result) != 0 ? 0 : result
            }
        }
        guard written > 0 else { throw CompressionError(.libraryFailure, "LZ4F_compressFrame") }
        return output
    }

    static func decompress(
        _ input: ByteBuffer,
        outputBytesMax: Int,
        into output: inout ByteBuffer
    ) throws(CompressionError) {
        var context: OpaquePointer?
        guard LZ4F_isError(LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))) == 0, let context else {
            throw CompressionError(.libraryFailure, "LZ4F_createDecompressionContext")
        }
        defer { LZ4F_freeDecompressionContext(context) }
        let limit = output.decompressionLimit(adding: outputBytesMax)
        // Start near a typical ratio and grow; never beyond the bound.
        output.reserveCapacity(minimumWritableBytes: min(outputBytesMax, max(4096, input.readableBytes * 4)))
        var failure: CompressionError?
        input.withUnsafeReadableBytes { source in
            var consumed = 0
            var hint = 1  // LZ4F_decompress returns 0 once a frame is complete.
            while consumed < source.count {
                guard let room = output.decompressionRoom(limit: limit) else {
                    failure = CompressionError(.outputTooLarge, "lz4")
                    return
                }
                var sourceSize = source.count - consumed
                var destinationSize = room
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { destination in
                    hint = LZ4F_decompress(
                        context, destination.baseAddress, &destinationSize,
                        source.baseAddress! + consumed, &sourceSize, nil)
                    return LZ4F_isError(hint) != 0 ? 0 : destinationSize
                }
                if LZ4F_isError(hint) != 0 {
                    failure = CompressionError(.corruptInput, "lz4: " + String(cString: LZ4F_getErrorName(hint)))
                    return
                }
                consumed += sourceSize
                if hint == 0 && consumed < source.count {
                    // Kafka batches hold one frame; bytes after it are not ours to guess at.
                    failure = CompressionError(.corruptInput, "lz4: bytes after the end of the frame")
                    return
                }
            }
            // Input ended; a frame that was not closed is truncated. The decoder may still hold
            // decoded bytes it could not place, so drain it while it makes progress.
            while hint != 0 {
                guard let room = output.decompressionRoom(limit: limit) else {
                    failure = CompressionError(.outputTooLarge, "lz4")
                    return
                }
                var sourceSize = 0
                var destinationSize = room
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { destination in
                    hint = LZ4F_decompress(context, destination.baseAddress, &destinationSize, nil, &sourceSize, nil)
                    return LZ4F_isError(hint) != 0 ? 0 : destinationSize
                }
                if LZ4F_isError(hint) != 0 || destinationSize == 0 {
                    failure = CompressionError(.corruptInput, "lz4: truncated frame")
                    return
                }
            }
        }
        if let failure { throw failure }
    }
}
