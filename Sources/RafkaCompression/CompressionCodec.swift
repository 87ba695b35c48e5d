import NIOCore

/// The compression codecs of Kafka's RecordBatch attributes (bits 0–2), with their wire values.
///
/// Rafka speaks every codec of Kafka through the system libraries: gzip, Snappy (the Java
/// client's framed layout and raw), LZ4 (the LZ4 *frame* format, which librdkafka and
/// Kafka ≥ 0.10 write) and Zstd.
public enum CompressionCodec: Int8, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    case gzip = 1
    case snappy = 2
    case lz4 = 3
    case zstd = 4

    /// Kafka's config name (`compression.type` values).
    public var description: String {
        switch self {
        case .none: "none"
        case .gzip: "gzip"
        case .snappy: "snappy"
        case .lz4: "lz4"
        case .zstd: "zstd"
        }
    }

    public init?(name: String) {
        guard let codec = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = codec
    }

    /// Compresses `input`'s readable bytes into a new buffer.
    public func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator = .init()) throws(CompressionError) -> ByteBuffer {
        switch self {
        case .none: return input
        case .gzip: return try Gzip.compress(input, allocator: allocator)
        case .lz4: return try LZ4Frame.compress(input, allocator: allocator)
        case .zstd: return try Zstd.compress(input, allocator: allocator)
        case .snappy: return try Snappy.compress(input, allocator: allocator)
        }
    }

    /// Decompresses `input`, failing rather than producing more than `outputBytesMax` bytes.
    ///
    /// The bound is what keeps a tiny hostile batch from inflating into gigabytes.
    public func decompress(
        _ input: ByteBuffer,
        outputBytesMax: Int,
        allocator: ByteBufferAllocator = .init()
    ) throws(CompressionError) -> ByteBuffer {
        if self == .none {
            guard input.readableBytes <= outputBytesMax else { throw CompressionError(.outputTooLarge, "none") }
            return input
        }
        var output = allocator.buffer(capacity: 0)
        try self.decompress(input, outputBytesMax: outputBytesMax, into: &output)
        return output
    }

    /// Decompresses `input` onto the end of `output` (which grows as needed), failing rather than
    /// adding more than `outputBytesMax` bytes. The bound counts bytes added, not memory: the
    /// buffer's capacity grows in powers of two. A caller that keeps `output` and clears it between
    /// calls decompresses without allocating once it is large enough.
    public func decompress(
        _ input: ByteBuffer,
        outputBytesMax: Int,
        into output: inout ByteBuffer
    ) throws(CompressionError) {
        switch self {
        case .none:
            guard input.readableBytes <= outputBytesMax else { throw CompressionError(.outputTooLarge, "none") }
            output.writeImmutableBuffer(input)
        case .gzip: try Gzip.decompress(input, outputBytesMax: outputBytesMax, into: &output)
        case .lz4: try LZ4Frame.decompress(input, outputBytesMax: outputBytesMax, into: &output)
        case .zstd: try Zstd.decompress(input, outputBytesMax: outputBytesMax, into: &output)
        case .snappy: try Snappy.decompress(input, outputBytesMax: outputBytesMax, into: &output)
        }
    }
}

/// Compression or decompression failed.
public struct CompressionError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        /// The input is not valid data for the codec (a corrupt batch).
        case corruptInput
        /// Decompression would exceed the allowed output size.
        case outputTooLarge
        /// The codec is not available in this build.
        case unsupportedCodec
        /// The library failed for another reason (out of memory).
        case libraryFailure
    }

    public var code: Code
    public var detail: String

    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "\(self.code): \(self.detail)" }
}

extension ByteBuffer {
    /// The writer index that adding `bytes` more may reach (saturating: a bound of `Int.max`
    /// means none).
    func decompressionLimit(adding bytes: Int) -> Int {
        precondition(bytes >= 0, "a negative output bound")
        let (limit, overflow) = self.writerIndex.addingReportingOverflow(bytes)
        return overflow ? Int.max : limit
    }

    /// Writable bytes to decompress into next, growing the buffer (doubling, never past
    /// `limit`) when it is full; nil once `limit` bytes have been written.
    mutating func decompressionRoom(limit: Int) -> Int? {
        if self.writableBytes == 0 && self.writerIndex < limit {
            self.reserveCapacity(min(limit, self.capacity * 2))
        }
        let room = min(self.writableBytes, limit - self.writerIndex)
        return room > 0 ? room : nil
    }
}
