import KafkaProtocol
import NIOCore
import RafkaCompression
import RafkaCore

/// Where ListOffsets by time looks, planned on the partition's loop from what it holds in
/// memory (the segments' largest timestamps, their time and offset indexes), as `SpanSearch`
/// is for fetches. Walking the batch headers and decompressing the batch that holds the answer
/// then reads only the files, below the sizes taken when it was planned, so `find` runs on any
/// thread: the broker runs it on a blocking pool, and the loop waits neither for the device nor
/// for the decompression.
public struct TimeSearch: Sendable {
    /// A segment to look in, and the offset to look from.
    struct Segment: Sendable {
        let segment: SpanSearch.Segment
        let from: Int64
    }

    let timestamp: Int64
    /// In log order.
    let segments: [Segment]
    /// The answer when no record qualifies.
    let otherwise: (timestamp: Int64, offset: Int64)?

    /// The first record whose timestamp is ≥ `timestamp`, as (timestamp, offset), else
    /// `otherwise`. Reads batch headers from each segment's starting point, and inside the first
    /// batch whose largest timestamp qualifies, its records (decompressing that one batch, as
    /// Kafka does). May wait for the device.
    public func find() throws(StorageError) -> (timestamp: Int64, offset: Int64)? {
        for candidate in self.segments {
            var segment = candidate.segment
            var offset = candidate.from
            while let (position, header) = try segment.batch(holding: offset, waiting: true) {
                if header.maxTimestamp >= self.timestamp {
                    let batch = try segment.file.read(
                        at: position, length: header.totalBytes, allocator: ByteBufferAllocator(), waiting: true)
                    if let found = try Self.firstRecord(in: batch, header: header, atOrAfter: self.timestamp) {
                        return found
                    }
                }
                segment = segment.starting(at: position + header.totalBytes)
                offset = header.nextOffset
            }
        }
        return self.otherwise
    }

    private static func firstRecord(
        in batch: ByteBuffer,
        header: RecordBatchHeader,
        atOrAfter timestamp: Int64
    ) throws(StorageError) -> (timestamp: Int64, offset: Int64)? {
        if header.isLogAppendTime { return (header.maxTimestamp, header.baseOffset) }
        guard let codec = CompressionCodec(rawValue: header.compressionCodecValue) else {
            throw StorageError(.corruptSegment, "batch at offset \(header.baseOffset) has codec \(header.compressionCodecValue)")
        }
        do {
            let payload = try codec.decompress(
                RecordBatch.recordsSection(of: batch), outputBytesMax: Limits.decompressedBatchBytesMax)
            for record in try RecordBatch.decodeRecords(payload) {
                let recordTimestamp = header.baseTimestamp &+ record.timestampDelta
                if recordTimestamp >= timestamp {
                    return (recordTimestamp, header.baseOffset + Int64(record.offsetDelta))
                }
            }
        } catch {
            throw StorageError(.corruptSegment, "batch at offset \(header.baseOffset): \(error)")
        }
        return nil
    }
}

extension PartitionLog {
    /// How a search by time starts: where to look, or the offset index file to read first.
    public enum TimeSearchStart: Sendable {
        case search(TimeSearch)
        /// Read it (`IndexLoad.read`, on any thread), give it to `adopt`, and start again.
        case loadIndex(IndexLoad)
    }

    /// The first record whose timestamp is ≥ `timestamp` (ListOffsets by time), as
    /// (timestamp, offset), or nil if every record is older. May wait for the device.
    public func offset(forTimestamp timestamp: Int64) throws(StorageError) -> (timestamp: Int64, offset: Int64)? {
        guard case .search(let search) = try self.startTimeSearch(for: timestamp) else {
            preconditionFailure("startTimeSearch loads indexes itself unless asked not to")
        }
        return try search.find()
    }

    /// The record with the largest timestamp (ListOffsets MAX_TIMESTAMP, KIP-734): the segments
    /// know which batch holds it; the record itself is found inside that batch. May wait for
    /// the device.
    public func maxTimestampAndOffset() throws(StorageError) -> (timestamp: Int64, offset: Int64)? {
        guard case .search(let search) = try self.startMaxTimestampSearch() else {
            preconditionFailure("startMaxTimestampSearch loads indexes itself unless asked not to")
        }
        return try search.find()
    }

    /// The start of `offset(forTimestamp:)`, reading no file: the first segment whose largest
    /// timestamp reaches `timestamp`, from just after its last time-index entry below it; then,
    /// should no record there qualify (only records before the log start do), the later such
    /// segments from their first batch. The first segment's offset index is loaded here when
    /// `loadingIndex`; otherwise the answer is its file, to read first.
    public func startTimeSearch(for timestamp: Int64, loadingIndex: Bool = true) throws(StorageError) -> TimeSearchStart {
        guard let first = self.segments.firstIndex(where: { $0.maxTimestamp >= timestamp }) else {
            return .search(TimeSearch(timestamp: timestamp, segments: [], otherwise: nil))
        }
        let segment = self.segments[first]
        if !loadingIndex && segment.offsetIndexUnloaded { return .loadIndex(IndexLoad(file: segment.indexFile)) }
        let from = max(try segment.searchStart(forTimestamp: timestamp), self.logStartOffset)
        var segments = [TimeSearch.Segment(segment: try segment.searchStart(for: from, maxBytes: 0), from: from)]
        for later in self.segments[(first + 1)...] where later.maxTimestamp >= timestamp {
            let start = later.searchStartAtFirstBatch(maxBytes: 0)
            segments.append(TimeSearch.Segment(segment: start, from: max(later.baseOffset, self.logStartOffset)))
        }
        return .search(TimeSearch(timestamp: timestamp, segments: segments, otherwise: nil))
    }

    /// The start of `maxTimestampAndOffset`, reading no file: the batch the segment with the
    /// largest timestamp names, whose records tell which one has it (when none does, the
    /// batch's last offset is the answer). Indexes as for `startTimeSearch`.
    public func startMaxTimestampSearch(loadingIndex: Bool = true) throws(StorageError) -> TimeSearchStart {
        guard let best = self.segments.max(by: { $0.maxTimestamp < $1.maxTimestamp }), best.maxTimestamp >= 0,
            best.offsetOfMaxTimestamp >= self.logStartOffset
        else { return .search(TimeSearch(timestamp: 0, segments: [], otherwise: nil)) }
        if !loadingIndex && best.offsetIndexUnloaded { return .loadIndex(IndexLoad(file: best.indexFile)) }
        let from = best.offsetOfMaxTimestamp
        let start = TimeSearch.Segment(segment: try best.searchStart(for: from, maxBytes: 0), from: from)
        return .search(TimeSearch(timestamp: best.maxTimestamp, segments: [start], otherwise: (best.maxTimestamp, from)))
    }
}

extension SpanSearch.Segment {
    /// The same segment, looked at from `position` (where a batch starts) on.
    func starting(at position: Int) -> SpanSearch.Segment {
        SpanSearch.Segment(file: self.file, size: self.size, from: position, endSearchFrom: position)
    }
}
