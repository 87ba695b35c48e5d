import NIOCore

/// Splits a byte stream into Kafka frames: a 4-byte big-endian size, then that many bytes.
///
/// Emits each frame body as a slice of the accumulated buffer (no copy). A negative size, a size
/// below `frameBytesMin` or above `frameBytesMax` throws `KafkaFrameError`, which the pipeline
/// turns into a logged, closed connection. Nothing is reserved from the size field up front:
/// memory grows only with bytes actually received, so a lying size costs the sender, not us.
public struct KafkaFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer

    public let frameBytesMax: Int
    public let frameBytesMin: Int

    /// - Parameters:
    ///   - frameBytesMax: the largest frame accepted (Kafka's `socket.request.max.bytes`).
    ///   - frameBytesMin: the smallest meaningful frame (8 for requests: key, version, correlation id).
    public init(frameBytesMax: Int, frameBytesMin: Int = 8) {
        precondition(frameBytesMax > 0 && frameBytesMin >= 0 && frameBytesMin <= frameBytesMax)
        self.frameBytesMax = frameBytesMax
        self.frameBytesMin = frameBytesMin
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try self.nextFrame(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext,
        buffer: inout ByteBuffer,
        seenEOF: Bool
    ) throws -> DecodingState {
        while let frame = try self.nextFrame(&buffer) {
            context.fireChannelRead(Self.wrapInboundOut(frame))
        }
        // A partial frame at EOF is dropped: the peer hung up mid-request.
        return .needMoreData
    }

    /// The next whole frame in `buffer`, or nil if more bytes are needed. Pure; testable alone.
    public func nextFrame(_ buffer: inout ByteBuffer) throws(KafkaFrameError) -> ByteBuffer? {
        guard let size = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: Int32.self) else {
            return nil
        }
        guard size >= 0 else { throw KafkaFrameError(.negativeSize, size: Int(size)) }
        guard Int(size) <= self.frameBytesMax else { throw KafkaFrameError(.tooLarge, size: Int(size)) }
        guard Int(size) >= self.frameBytesMin else { throw KafkaFrameError(.tooSmall, size: Int(size)) }
        guard buffer.readableBytes >= 4 + Int(size) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        return buffer.readSlice(length: Int(size))
    }
}

/// A frame's size field cannot be honoured; the connection must close.
public struct KafkaFrameError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        case negativeSize, tooLarge, tooSmall
    }

    public var code: Code
    public var size: Int

    public init(_ code: Code, size: Int) {
        self.code = code
        self.size = size
    }

    public var description: String {
        switch self.code {
        case .negativeSize: "frame size \(self.size) is negative"
        case .tooLarge: "frame size \(self.size) exceeds the maximum request size"
        case .tooSmall: "frame size \(self.size) is too small for a request header"
        }
    }
}
