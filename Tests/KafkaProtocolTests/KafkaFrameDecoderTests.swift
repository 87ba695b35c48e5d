import KafkaProtocol
import NIOCore
import NIOTestUtils
import Testing

@Suite struct KafkaFrameDecoderTests {
    private static func frame(_ body: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(Int32(body.count))
        buffer.writeBytes(body)
        return buffer
    }

    /// Fed byte by byte and in one piece, the decoder yields the same frames
    /// (`ByteToMessageDecoderVerifier` tries every split).
    @Test func dripFeedAndWholeAgree() throws {
        let bodies: [[UInt8]] = [Array(0..<8), Array(repeating: 7, count: 300), Array(1...9)]
        let pairs = bodies.map { (Self.frame($0), [ByteBuffer(bytes: $0)]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            KafkaFrameDecoder(frameBytesMax: 1024)
        }
    }

    @Test func negativeSizeIsRejected() {
        var buffer = ByteBuffer()
        buffer.writeInteger(Int32(-5))
        #expect(throws: KafkaFrameError(.negativeSize, size: -5)) {
            try KafkaFrameDecoder(frameBytesMax: 1024).nextFrame(&buffer)
        }
    }

    @Test func oversizedFrameIsRejectedFromItsHeaderAlone() {
        var buffer = ByteBuffer()
        buffer.writeInteger(Int32.max)
        // Only the 4-byte size has arrived: the decision needs nothing more and reserves nothing.
        #expect(throws: KafkaFrameError(.tooLarge, size: Int(Int32.max))) {
            try KafkaFrameDecoder(frameBytesMax: 100 * 1024 * 1024).nextFrame(&buffer)
        }
    }

    @Test func tooSmallFrameIsRejected() {
        var buffer = Self.frame([1, 2, 3])
        #expect(throws: KafkaFrameError(.tooSmall, size: 3)) { try KafkaFrameDecoder(frameBytesMax: 1024).nextFrame(&buffer) }
    }

    @Test func partialFrameWaitsForMore() throws {
        var buffer = Self.frame(Array(0..<20))
        buffer.moveWriterIndex(to: 10)
        #expect(try KafkaFrameDecoder(frameBytesMax: 1024).nextFrame(&buffer) == nil)
        #expect(buffer.readerIndex == 0)
    }
}
