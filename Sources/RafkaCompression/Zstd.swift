import CZstd
import NIOCore

/// Zstandard frames through the system libzstd (KIP-110). Compression level 3, zstd's default.
enum Zstd {
    static func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        let bound = ZSTD_compressBound(input.readableBytes)
        var output = allocator.buffer(capacity: bound)
        var failed = false
        _ = input.withUnsafeReadableBytes { source in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { destination in
                let result = ZSTD_compress(destination.baseAddress, bound, source.baseAddress, source.count, 3)
                if ZSTD_isError(result) != 0 {
                    failed = true
                    return 0
                }
                return result
            }
        }
        if failed { throw CompressionError(.libraryFailure, "ZSTD_compress") }
        return output
    }

    static func decompress(
        _ input: ByteBuffer,
        outputBytesMax: Int,
        into output: inout ByteBuffer
    ) throws(CompressionError) {
        guard let stream = ZSTD_createDStream() else { throw CompressionError(.libraryFailure, "ZSTD_createDStream") }
        defer { ZSTD_freeDStream(stream) }
        // Refuse frames whose windows would need more memory than the output bound allows.
        let windowLog = max(10, min(27, Int32((Int.bitWidth - outputBytesMax.leadingZeroBitCount))))
        ZSTD_DCtx_setParameter(stream, ZSTD_d_windowLogMax, windowLog)
        var initialCapacity = max(4096, input.readableBytes * 4)
        let declared = input.withUnsafeReadableBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        if declared < UInt64.max - 1 {  // Neither unknown nor an error: a size hint we may trust up to the bound.
            guard declared <= UInt64(outputBytesMax) else { throw CompressionError(.outputTooLarge, "zstd") }
            initialCapacity = max(1, Int(declared))
        }
        let limit = output.decompressionLimit(adding: outputBytesMax)
        output.reserveCapacity(minimumWritableBytes: min(outputBytesMax, initialCapacity))
        var failure: CompressionError?
        input.withUnsafeReadableBytes { source in
            var inBuffer = ZSTD_inBuffer(src: source.baseAddress, size: source.count, pos: 0)
            var lastResult = 1
            while true {
                guard let room = output.decompressionRoom(limit: limit) else {
                    failure = CompressionError(.outputTooLarge, "zstd")
                    return
                }
                let before = inBuffer.pos
                var produced = 0
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { destination in
                    var outBuffer = ZSTD_outBuffer(dst: destination.baseAddress, size: room, pos: 0)
                    lastResult = ZSTD_decompressStream(stream, &outBuffer, &inBuffer)
                    produced = ZSTD_isError(lastResult) != 0 ? 0 : outBuffer.pos
                    return produced
                }
                if ZSTD_isError(lastResult) != 0 {
                    failure = CompressionError(.corruptInput, "zstd: " + String(cString: ZSTD_getErrorName(lastResult)))
                    return
                }
                if lastResult == 0 && inBuffer.pos == inBuffer.size { return }  // All frames done.
                if lastResult == 0 { continue }  // Another frame follows.
                if inBuffer.pos == before && produced == 0 && inBuffer.pos == inBuffer.size {
                    // No input left, no output made, and the frame is not finished.
                    failure = CompressionError(.corruptInput, "zstd: truncated frame")
                    return
                }
            }
        }
        if let failure { throw failure }
    }
}
