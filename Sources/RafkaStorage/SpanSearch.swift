import KafkaProtocol
import NIOCore

/// Where a read behind the hot cache looks in the segment files, worked out on the partition's
/// loop from what it holds in memory (the segments, their offset indexes); finding the batch
/// boundaries then reads only the files, whose bytes below the sizes taken here do not change
/// (a segment is appended to, never rewritten; only recovery truncates, before anything reads).
/// So `find` runs on any thread: on the partition's loop when the OS page cache holds the batch
/// headers it reads (`findInPageCache`), on a blocking pool when it does not — a consumer
/// catching up from disk then costs the loop no wait for the device.
public struct SpanSearch: Sendable {
    /// A segment to look in, as it was when the search was planned.
    struct Segment: Sendable {
        let file: FileHandle
        /// Its bytes when the search was planned: batches past it are not looked at.
        let size: Int
        /// The offset index's position at or before the offset sought (0 in a later segment).
        let from: Int
        /// The offset index's position at or before `maxBytes` past `from` (at least `from`;
        /// `from` itself where the index is not loaded): where looking for the span's end starts.
        let endSearchFrom: Int
    }

    let offset: Int64
    let maxBytes: Int
    let minOneBatch: Bool
    /// The segment whose base offset is ≤ `offset`, and the next one with any batches: when
    /// `offset` lies past the first's last batch, the next one's first batch holds the next
    /// records.
    let holding: Segment
    let next: Segment?
    let cache: HotCache

    /// The batches from the one holding `offset`, up to `maxBytes`, as a span of one segment
    /// file; a span under `KafkaFrame.spliceBytesMin` that the page cache holds is read at once
    /// (a frame would copy it anyway, and sending it costs no system call of its own). Empty
    /// when no segment holds `offset` or beyond. May wait for the device.
    public func find() throws(StorageError) -> LogRecords {
        try self.find(waiting: true)
    }

    /// `find`, or nil where it would wait for the device.
    public func findInPageCache() throws(StorageError) -> LogRecords? {
        do {
            return try self.find(waiting: false)
        } catch {
            if error.code == .wouldWait { return nil }
            throw error
        }
    }

    private func find(waiting: Bool) throws(StorageError) -> LogRecords {
        if let records = try self.find(in: self.holding, waiting: waiting) { return records }
        if let next = self.next, let records = try self.find(in: next, waiting: waiting) { return records }
        return .empty
    }

    private func find(in segment: Segment, waiting: Bool) throws(StorageError) -> LogRecords? {
        guard let (position, header) = try segment.batch(holding: self.offset, waiting: waiting) else { return nil }
        var records = try segment.span(
            from: position, firstBatchBytes: header.totalBytes, maxBytes: self.maxBytes,
            minOneBatch: self.minOneBatch, waiting: waiting)
        self.cache.recordMiss(bytes: records.byteCount)
        if case .file(let span) = records, span.length < KafkaFrame.spliceBytesMin, span.isResident {
            records = .memory(try span.read(allocator: ByteBufferAllocator()))
        }
        return records
    }
}

extension SpanSearch.Segment {
    /// The first batch from `from` on whose last offset is ≥ `offset`: its position and header,
    /// or nil if the segment has none.
    func batch(holding offset: Int64, waiting: Bool) throws(StorageError) -> (position: Int, header: RecordBatchHeader)? {
        let allocator = ByteBufferAllocator()
        var position = self.from
        while position + RecordBatchHeader.size <= self.size {
            let headerBytes = try self.file.read(
                at: position, length: RecordBatchHeader.size, allocator: allocator, waiting: waiting)
            let header: RecordBatchHeader
            do {
                header = try RecordBatchHeader.peek(headerBytes, at: headerBytes.readerIndex)
            } catch {
                throw StorageError(.corruptSegment, "\(self.file.path) at byte \(position): \(error)")
            }
            guard header.batchLength >= Int32(RecordBatchHeader.size - RecordBatchHeader.logOverhead),
                position + header.totalBytes <= self.size
            else {
                throw StorageError(.corruptSegment, "\(self.file.path) at byte \(position): batch length \(header.batchLength)")
            }
            if header.lastOffset >= offset { return (position, header) }
            position += header.totalBytes
        }
        return nil
    }

    /// Whole batches from `position` (where a batch starts), at most `maxBytes` unless
    /// `minOneBatch` and the first batch alone is larger (KIP-74: a consumer must always make
    /// progress), as a span of the file: the bytes are not read here. Where the limit falls
    /// inside a batch the span ends before it (clients accept a partial batch at the end, but
    /// whole batches are kinder); the batch boundaries come from the offset index and the batch
    /// headers after its last entry below the limit. Each read goes to the end of the page a
    /// header starts in (and into the next only when the header crosses it): a batch larger than
    /// a page has only its header's pages read (`SegmentSpan.isResident` looks at the others),
    /// and smaller ones share reads.
    func span(
        from position: Int,
        firstBatchBytes: Int,
        maxBytes: Int,
        minOneBatch: Bool,
        waiting: Bool
    ) throws(StorageError) -> LogRecords {
        precondition(position + firstBatchBytes <= self.size, "the first batch lies inside the segment")
        if firstBatchBytes > maxBytes {
            guard minOneBatch else { return .empty }
            return .file(SegmentSpan(file: self.file, position: position, length: firstBatchBytes))
        }
        let limit = position + min(maxBytes, self.size - position)
        let allocator = ByteBufferAllocator()
        var end = max(position, self.endSearchFrom)
        var chunk = ByteBuffer()
        var chunkStart = end
        while end + RecordBatchHeader.logOverhead <= limit {
            if end + RecordBatchHeader.logOverhead > chunkStart + chunk.readableBytes {
                chunkStart = end
                let toPageEnd = FileSystem.pageBytes - end % FileSystem.pageBytes
                let length = min(limit - end, max(RecordBatchHeader.logOverhead, toPageEnd))
                chunk = try self.file.read(at: end, length: length, allocator: allocator, waiting: waiting)
            }
            let lengthAt = chunk.readerIndex + end - chunkStart + 8
            guard let length = chunk.getInteger(at: lengthAt, endianness: .big, as: Int32.self),
                length >= RecordBatchHeader.size - RecordBatchHeader.logOverhead,
                end + Int(length) + RecordBatchHeader.logOverhead <= limit
            else { break }
            end += Int(length) + RecordBatchHeader.logOverhead
        }
        guard end >= position + firstBatchBytes else {
            throw StorageError(.corruptSegment, "\(self.file.path) ends inside the batch at byte \(position)")
        }
        return .file(SegmentSpan(file: self.file, position: position, length: end - position))
    }
}
