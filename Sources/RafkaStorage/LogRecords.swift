import NIOCore

/// What a read of a partition found: whole batches in memory (from the hot cache), or a span of
/// a segment file, which a fetch sends from the file (`sendfile`) instead of reading it into a
/// buffer first. Records read from a segment then cross userspace zero times: the kernel moves
/// them from the page cache into the socket.
public enum LogRecords: Sendable {
    case memory(ByteBuffer)
    case file(SegmentSpan)

    /// Nothing: the read was at the log end (or the first batch was over the limit).
    public static let empty = LogRecords.memory(ByteBuffer())

    public var byteCount: Int {
        switch self {
        case .memory(let bytes): bytes.readableBytes
        case .file(let span): span.length
        }
    }

    /// The records as bytes, reading a file span (`pread`): for callers that look inside them.
    public func bytes(allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(StorageError) -> ByteBuffer {
        switch self {
        case .memory(let bytes): return bytes
        case .file(let span): return try span.read(allocator: allocator)
        }
    }
}

/// Whole batches of a segment file, `length` bytes from `position`. Holding the span holds the
/// segment's open file: the bytes stay readable through it even if retention deletes the
/// segment meanwhile, and a segment's file never shrinks below what was read from it (only
/// recovery truncates, before anything reads).
public struct SegmentSpan: Sendable {
    public let file: FileHandle
    public let position: Int
    public let length: Int

    init(file: FileHandle, position: Int, length: Int) {
        precondition(position >= 0 && length > 0, "a span holds at least one batch")
        self.file = file
        self.position = position
        self.length = length
    }

    /// Whether the OS page cache holds the span, so that sending it is unlikely to wait for the
    /// device: a one-byte read that may not wait (`FileHandle.read(…, waiting: false)`) a
    /// quarter, half and three quarters of the way in. Not its ends: finding the span read the
    /// pages of its batch headers, which are now cached whatever the rest is. True where the
    /// kernel cannot tell.
    public var isResident: Bool {
        guard self.file.canTellResidency else { return true }
        var byte: UInt8 = 0
        return withUnsafeMutableBytes(of: &byte) { one in
            for quarter in 1...3 {
                do throws(StorageError) {
                    _ = try self.file.read(into: one, at: self.position + self.length * quarter / 4, waiting: false)
                } catch {
                    if error.code == .wouldWait { return false }
                }
            }
            return true
        }
    }

    func read(allocator: ByteBufferAllocator) throws(StorageError) -> ByteBuffer {
        let bytes = try self.file.read(at: self.position, length: self.length, allocator: allocator)
        guard bytes.readableBytes == self.length else {
            throw StorageError(.corruptSegment, "\(self.file.path) ends inside a batch read at byte \(self.position)")
        }
        return bytes
    }
}
