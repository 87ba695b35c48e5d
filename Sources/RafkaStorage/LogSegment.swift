import KafkaProtocol
import NIOCore
import RafkaCore

/// One segment of a partition log: `<baseOffset>.log` holding RecordBatch v2 bytes exactly as
/// appended, with a sparse offset index and a time index.
///
/// Lifecycle: created empty (`create`) or opened from disk (`open`, then `recover` if it is the
/// active segment or lies past the recovery point, `adoptCleanlyClosed` instead for an active
/// segment a clean close left); appended to while active; `seal()` writes its indexes when a
/// newer segment takes over (`sealForClose()` hands them to the log's checkpoint when the log
/// closes). Not thread-safe: its `PartitionLog` owner confines it to one thread.
final class LogSegment {
    let baseOffset: Int64
    let logPath: String
    let log: FileHandle
    private(set) var size: Int
    /// The offset after the last batch in this segment.
    private(set) var nextOffset: Int64
    private(set) var maxTimestamp: Int64 = -1
    private(set) var offsetOfMaxTimestamp: Int64 = -1
    /// The max timestamp of the first batch; segment.ms counts from it (as Kafka does since 0.10.1).
    private(set) var firstBatchTimestamp: Int64?
    private var offsetIndex: OffsetIndex?
    private var timeIndex = TimeIndex()
    private let indexIntervalBytes: Int

    var indexPath: String { Self.path(self.logPath, extension: "index") }
    var timeIndexPath: String { Self.path(self.logPath, extension: "timeindex") }
    var isEmpty: Bool { self.size == 0 }

    static func fileName(_ baseOffset: Int64, extension ext: String) -> String {
        let digits = String(baseOffset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + "." + ext
    }

    private static func path(_ logPath: String, extension ext: String) -> String {
        String(logPath.dropLast(3)) + ext
    }

    private init(baseOffset: Int64, logPath: String, log: FileHandle, size: Int, indexIntervalBytes: Int) {
        self.baseOffset = baseOffset
        self.logPath = logPath
        self.log = log
        self.size = size
        self.reservedEnd = size
        self.reservedEndKnown = false
        self.nextOffset = baseOffset
        self.indexIntervalBytes = indexIntervalBytes
    }

    /// Creates a new empty segment (truncating any leftover file of the same name).
    static func create(directory: String, baseOffset: Int64, indexIntervalBytes: Int) throws(StorageError) -> LogSegment
    {
        let path = directory + "/" + Self.fileName(baseOffset, extension: "log")
        let handle = try FileHandle.open(path, create: true)
        try handle.truncate(to: 0)
        try FileSystem.remove(Self.path(path, extension: "index"))
        try FileSystem.remove(Self.path(path, extension: "timeindex"))
        let segment = LogSegment(
            baseOffset: baseOffset,
            logPath: path,
            log: handle,
            size: 0,
            indexIntervalBytes: indexIntervalBytes
        )
        segment.offsetIndex = OffsetIndex()
        segment.reservedEndKnown = true  // the truncation to 0 gave back whatever was there
        return segment
    }

    /// Opens an existing segment without reading its batches. `nextOffset` is provisional until
    /// `recover`, `adoptClosed(nextOffset:)` or `adoptCleanlyClosed(nextOffset:)` sets it.
    static func open(directory: String, baseOffset: Int64, indexIntervalBytes: Int) throws(StorageError) -> LogSegment {
        let path = directory + "/" + Self.fileName(baseOffset, extension: "log")
        let handle = try FileHandle.open(path, create: false)
        return LogSegment(
            baseOffset: baseOffset,
            logPath: path,
            log: handle,
            size: try handle.size(),
            indexIntervalBytes: indexIntervalBytes
        )
    }

    // MARK: Appending

    /// Appends whole batches (already validated, offsets assigned) at the end of the file.
    /// `parts` are written back to back with one gathering write.
    func append(parts: [ByteBuffer], headers: [RecordBatchHeader]) throws(StorageError) {
        precondition(!headers.isEmpty)
        assert(headers.first!.baseOffset >= self.nextOffset, "offsets must ascend")
        let position = self.size
        self.reserveBlocks(upTo: position + parts.reduce(0) { $0 + $1.readableBytes })
        try self.log.write(parts, at: position)
        var batchPosition = position
        for header in headers {
            self.indexBatch(header, position: batchPosition)
            batchPosition += header.totalBytes
        }
        self.size = batchPosition
    }

    /// Where the file's blocks are reserved up to (`FileHandle.preallocate`), and whether the
    /// file system reserves them at all. A segment opened from disk may hold a reservation made
    /// before a crash, past its end: `reservedEnd` is not known then, so the first give-back
    /// truncates anyway.
    private var reservedEnd: Int
    private var reservedEndKnown: Bool
    private var reserves = true

    /// Reserves blocks ahead of a write ending at `end`: as much again as the segment holds,
    /// between 64 KiB and `Limits.segmentReservationBytesMax`, so a busy segment asks rarely and
    /// a small one (most of 10,000 partitions) keeps little unused. Sealing the segment (a roll)
    /// or closing the log gives back what was not written.
    private func reserveBlocks(upTo end: Int) {
        guard self.reserves, end > self.reservedEnd else { return }
        let ahead = min(max(self.size, 64 * 1024), Limits.segmentReservationBytesMax)
        let target = end + ahead
        self.reserves = self.log.preallocate(offset: self.reservedEnd, length: target - self.reservedEnd)
        self.reservedEnd = target
    }

    /// The truncation that gives back the blocks reserved past the end, if any are (or may be);
    /// from here on the segment counts them as given back.
    func reservationRelease() -> DeferredFileWork {
        guard self.reservedEnd > self.size || !self.reservedEndKnown else { return DeferredFileWork() }
        self.reservedEnd = self.size
        self.reservedEndKnown = true
        return DeferredFileWork(steps: [.truncate(self.log, bytes: self.size)])
    }

    /// Where writeback was last started up to (see `FileHandle.startWriteback`), and below
    /// which the pages were released (`FileHandle.releasePages`).
    private var writebackStarted = 0
    private var pagesReleasedBelow = 0

    /// The range written since writeback was last started, once it reaches `chunkBytes`, and,
    /// unless `keptBytes` is nil, the range whose writeback earlier calls started, more than
    /// `keptBytes` before it, whose pages may now leave the page cache.
    func writebackDue(chunkBytes: Int, keptBytes: Int?) -> (start: Range<Int>, release: Range<Int>?)? {
        guard self.size - self.writebackStarted >= chunkBytes else { return nil }
        let start = self.writebackStarted..<self.size
        var release: Range<Int>?
        // Whole pages only: the kernel keeps a partial page at either end of a range.
        let releaseEnd = (start.lowerBound - (keptBytes ?? 0)) & ~(FileSystem.pageBytes - 1)
        if keptBytes != nil, self.pagesReleasedBelow < releaseEnd {
            release = self.pagesReleasedBelow..<releaseEnd
            self.pagesReleasedBelow = releaseEnd
        }
        self.writebackStarted = self.size
        return (start, release)
    }

    /// Updates in-memory indexes and timestamps for a batch at `position`.
    private func indexBatch(_ header: RecordBatchHeader, position: Int) {
        if self.offsetIndex == nil { self.offsetIndex = OffsetIndex() }
        if self.firstBatchTimestamp == nil { self.firstBatchTimestamp = header.maxTimestamp }
        if header.maxTimestamp > self.maxTimestamp {
            self.maxTimestamp = header.maxTimestamp
            self.offsetOfMaxTimestamp = header.lastOffset
        }
        let indexed = self.offsetIndex!.note(
            relativeOffset: UInt32(header.baseOffset - self.baseOffset), position: position,
            bytes: header.totalBytes, intervalBytes: self.indexIntervalBytes)
        // No entry while no batch had a timestamp (-1), as in Kafka: its offset would be -1 too.
        if indexed && self.maxTimestamp >= 0 {
            self.timeIndex.append(timestamp: self.maxTimestamp, offset: self.offsetOfMaxTimestamp)
        }
        self.nextOffset = header.nextOffset
    }

    /// Whether the relative offset of `offset` still fits the index's 32 bits.
    func canHold(offset: Int64) -> Bool { Self.canHold(offset: offset, baseOffset: self.baseOffset) }

    private static func canHold(offset: Int64, baseOffset: Int64) -> Bool { offset - baseOffset < Int64(UInt32.max) }

    // MARK: Recovery

    struct ScanResult {
        /// Bytes of whole, valid batches from the start of the file.
        var validBytes: Int
        /// Why the scan stopped early, if it did.
        var problem: String?
        /// Whether the bad bytes are the file's last batch or an incomplete one: what a write cut
        /// short by a crash leaves. A bad batch with more data after it is damage, not a torn tail.
        var problemIsAtTail = true
    }

    /// Scans every batch from the start, rebuilding indexes and timestamps. With `validate`,
    /// checks each batch's framing, CRC and offsets; stops at the first bad batch and reports it.
    /// `visit` sees every valid batch header (producer-state rebuild).
    func recover(validate: Bool, visit: (RecordBatchHeader) -> Void) throws(StorageError) -> ScanResult {
        self.offsetIndex = OffsetIndex()
        self.timeIndex = TimeIndex()
        self.maxTimestamp = -1
        self.offsetOfMaxTimestamp = -1
        self.firstBatchTimestamp = nil
        self.nextOffset = self.baseOffset
        let result = try self.scan(from: 0, validate: validate) { position, header in
            self.indexBatch(header, position: position)
            visit(header)
        }
        return result
    }

    /// Visits every batch header without touching the indexes (producer-state replay).
    func forEachBatchHeader(_ body: (RecordBatchHeader) -> Void) throws(StorageError) {
        let result = try self.scan(from: 0, validate: false) { _, header in body(header) }
        if let problem = result.problem {
            throw StorageError(.corruptSegment, "\(self.logPath): \(problem)")
        }
    }

    /// Walks batches from `position` in 1 MiB reads, calling `body` for each whole batch.
    private func scan(
        from start: Int,
        validate: Bool,
        _ body: (Int, RecordBatchHeader) -> Void
    ) throws(StorageError) -> ScanResult {
        try Self.scan(self.log, size: self.size, baseOffset: self.baseOffset, from: start, validate: validate, body)
    }

    /// `scan` of a segment's file as a value: on any thread, for a file whose first `size`
    /// bytes do not change meanwhile (a closed segment's, `OffsetIndexFile.readOrRebuild`).
    static func scan(
        _ file: FileHandle,
        size fileSize: Int,
        baseOffset: Int64,
        from start: Int,
        validate: Bool,
        _ body: (Int, RecordBatchHeader) -> Void
    ) throws(StorageError) -> ScanResult {
        let allocator = ByteBufferAllocator()
        var position = start
        var expectedOffset = baseOffset
        let chunkBytes = 1 << 20
        while position < fileSize {
            var chunk = try file.read(
                at: position,
                length: min(chunkBytes, fileSize - position),
                allocator: allocator
            )
            var consumed = 0
            while consumed < chunk.readableBytes {
                let remainingInFile = fileSize - position - consumed
                guard remainingInFile >= RecordBatchHeader.size else {
                    return ScanResult(validBytes: position + consumed, problem: "\(remainingInFile) trailing bytes")
                }
                if chunk.readableBytes - consumed < RecordBatchHeader.size { break }
                let header: RecordBatchHeader
                do {
                    header = try RecordBatchHeader.peek(chunk, at: chunk.readerIndex + consumed)
                } catch {
                    return ScanResult(validBytes: position + consumed, problem: "\(error)")
                }
                let total = header.totalBytes
                guard header.batchLength >= Int32(RecordBatchHeader.size - RecordBatchHeader.logOverhead),
                    total <= remainingInFile
                else {
                    return ScanResult(
                        validBytes: position + consumed,
                        problem: "batch length \(header.batchLength) at byte \(position + consumed)"
                    )
                }
                if chunk.readableBytes - consumed < total {
                    if consumed == 0 {
                        // One batch larger than the chunk: read it whole.
                        chunk = try file.read(at: position, length: total, allocator: allocator)
                    } else {
                        break
                    }
                }
                if let problem = Self.checkStructure(header, expectedOffset: expectedOffset, baseOffset: baseOffset) {
                    return ScanResult(
                        validBytes: position + consumed,
                        problem: "\(problem) at byte \(position + consumed)",
                        problemIsAtTail: total == remainingInFile
                    )
                }
                if validate {
                    let bytes = chunk.getSlice(at: chunk.readerIndex + consumed, length: total)!
                    if let problem = Self.check(header, bytes: bytes, expectedOffset: expectedOffset) {
                        return ScanResult(
                            validBytes: position + consumed,
                            problem: "\(problem) at byte \(position + consumed)",
                            problemIsAtTail: total == remainingInFile
                        )
                    }
                }
                body(position + consumed, header)
                expectedOffset = header.nextOffset
                consumed += total
            }
            position += consumed
        }
        return ScanResult(validBytes: position, problem: nil)
    }

    /// What every batch read from disk must satisfy before its fields are used, CRC or not:
    /// offsets ascend, stay within this segment's 32-bit range, and the count is sane.
    private static func checkStructure(_ header: RecordBatchHeader, expectedOffset: Int64, baseOffset: Int64) -> String? {
        guard header.baseOffset >= expectedOffset else {
            return "batch base offset \(header.baseOffset) below \(expectedOffset)"
        }
        guard header.lastOffsetDelta >= 0, Self.canHold(offset: header.lastOffset, baseOffset: baseOffset) else {
            return "batch offsets \(header.baseOffset)+\(header.lastOffsetDelta) outside the segment's range"
        }
        return nil
    }

    private static func check(_ header: RecordBatchHeader, bytes: ByteBuffer, expectedOffset: Int64) -> String? {
        guard header.baseOffset >= expectedOffset else {
            return "batch base offset \(header.baseOffset) below \(expectedOffset)"
        }
        do {
            try RecordBatch.validateHeader(header, bytes: bytes)
        } catch {
            return "\(error)"
        }
        return nil
    }

    /// Cuts the file (and indexes) back to `bytes`, the end of the last valid batch.
    func truncate(toBytes bytes: Int) throws(StorageError) {
        try self.log.truncate(to: bytes)
        self.size = bytes
        self.reservedEnd = bytes
        self.reservedEndKnown = true
        self.offsetIndex?.truncate(toPosition: bytes)
    }

    /// Marks a closed segment's end offset (known from the next segment's base) and loads its
    /// timestamps from the time index, rebuilding both indexes by scanning if the files are bad.
    func adoptClosed(nextOffset: Int64) throws(StorageError) {
        self.nextOffset = nextOffset
        guard let index = try self.readTimeIndex() else {
            _ = try self.recover(validate: false) { _ in }
            self.nextOffset = nextOffset
            return
        }
        self.adoptTimestamps(from: index)
    }

    /// Takes up the active segment where a clean close left it (`PartitionLog.CleanEnd`): its end
    /// offset and both indexes, loaded now since appends extend them. The record is checked
    /// against the segment where that costs little: every index entry must lie within it, and
    /// the batch headers from the last offset-index entry on (about `index.interval.bytes`, one
    /// small read per batch, not the batches) must follow each other to the segment's end and
    /// end at `nextOffset`; the first batch's header gives its timestamp, as a scan takes it.
    /// Their CRCs are not checked: after a clean close Kafka does not check them either.
    /// False, with nothing changed, where any of that fails: the caller then scans the segment.
    func adoptCleanlyClosed(nextOffset: Int64, offsetIndex: ByteBuffer, timeIndex: ByteBuffer) throws(StorageError)
        -> Bool
    {
        let relativeEnd = nextOffset - self.baseOffset
        guard relativeEnd > 0, self.size >= RecordBatchHeader.size,
            Self.canHold(offset: nextOffset - 1, baseOffset: self.baseOffset),
            let offsets = OffsetIndex.parse(offsetIndex, segmentBytes: self.size),
            let lastRelative = offsets.relativeOffsets.last, Int64(lastRelative) < relativeEnd,
            offsets.positions.first == 0, offsets.relativeOffsets.first == 0,
            let times = TimeIndex.parse(timeIndex, baseOffset: self.baseOffset), times.last != nil,
            times.offsets.allSatisfy({ $0 >= self.baseOffset && $0 < nextOffset })
        else { return false }
        let lastEntry = (position: Int(offsets.positions.last!), baseOffset: self.baseOffset + Int64(lastRelative))
        guard let first = try self.header(at: 0), first.baseOffset == self.baseOffset,
            let last = try self.lastHeader(from: lastEntry.position, baseOffset: lastEntry.baseOffset),
            last.nextOffset == nextOffset
        else { return false }
        self.adoptTimestamps(from: times)
        self.firstBatchTimestamp = first.maxTimestamp
        self.offsetIndex = offsets
        self.nextOffset = nextOffset
        return true
    }

    /// The header of the batch at `position`, if one is there.
    private func header(at position: Int) throws(StorageError) -> RecordBatchHeader? {
        let bytes = try self.log.read(at: position, length: RecordBatchHeader.size, allocator: ByteBufferAllocator())
        guard bytes.readableBytes == RecordBatchHeader.size else { return nil }
        return try? RecordBatchHeader.peek(bytes, at: bytes.readerIndex)
    }

    /// Hops from batch header to batch header from `position`, where a batch at `baseOffset`
    /// starts, to the segment's end: the last header, if the batches follow each other there,
    /// offsets ascending, and the last ends exactly at the end. Nil beyond 1,024 hops (an index
    /// much sparser than `index.interval.bytes` makes, or tiny batches): the caller scans instead.
    private func lastHeader(from position: Int, baseOffset: Int64) throws(StorageError) -> RecordBatchHeader? {
        var position = position
        var expected = baseOffset
        var last: RecordBatchHeader?
        for _ in 0..<1_024 {
            if position == self.size { return last }
            guard let header = try self.header(at: position),
                header.batchLength >= Int32(RecordBatchHeader.size - RecordBatchHeader.logOverhead),
                header.totalBytes <= self.size - position, last != nil || header.baseOffset == expected,
                Self.checkStructure(header, expectedOffset: expected, baseOffset: self.baseOffset) == nil
            else { return nil }
            expected = header.nextOffset
            position += header.totalBytes
            last = header
        }
        return nil
    }

    /// The time index from its file, if that holds an entry and parses.
    private func readTimeIndex() throws(StorageError) -> TimeIndex? {
        guard FileSystem.exists(self.timeIndexPath),
            let index = TimeIndex.parse(try FileSystem.readAll(self.timeIndexPath), baseOffset: self.baseOffset),
            index.last != nil
        else { return nil }
        return index
    }

    private func adoptTimestamps(from index: TimeIndex) {
        let last = index.last!
        self.timeIndex = index
        self.maxTimestamp = last.timestamp
        self.offsetOfMaxTimestamp = last.offset
        self.firstBatchTimestamp = index.timestamps.first
    }

    /// After a full scan of a closed segment, its end is the next segment's base (offsets may
    /// have a gap before it).
    func markClosed(nextOffset: Int64) {
        assert(self.nextOffset <= nextOffset)
        self.nextOffset = nextOffset
    }

    /// Loads the offset index of a closed segment on first use: from its file, or, where that is
    /// missing or does not fit the segment, by scanning the segment's batches.
    private func ensureOffsetIndex() throws(StorageError) {
        if self.offsetIndex != nil { return }
        if let index = try self.indexFile.read() {
            self.offsetIndex = index
            return
        }
        let next = self.nextOffset
        _ = try self.recover(validate: false) { _ in }
        self.nextOffset = max(next, self.nextOffset)
    }

    /// Whether the offset index is still to be loaded (a closed segment not read since it was opened).
    var offsetIndexUnloaded: Bool { self.offsetIndex == nil }

    /// The offset index's file, for reading it on another thread (`OffsetIndexFile.read`).
    var indexFile: OffsetIndexFile {
        OffsetIndexFile(
            baseOffset: self.baseOffset, path: self.indexPath, segmentBytes: self.size, log: self.log,
            intervalBytes: self.indexIntervalBytes)
    }

    /// Takes an offset index read from `indexFile`, unless one was loaded meanwhile.
    func adopt(_ index: OffsetIndex) {
        if self.offsetIndex == nil { self.offsetIndex = index }
    }

    /// Makes the segment read-only: returns the work of giving back its reserved blocks and
    /// writing its indexes, for its log's owner to run off the loop.
    func seal() -> DeferredFileWork {
        var work = self.reservationRelease()
        guard let offsetIndex = self.offsetIndex else { return work }
        let timeIndex = self.sealedTimeIndex()
        let baseOffset = self.baseOffset
        work.steps.append(.replace(path: self.indexPath, contents: { offsetIndex.serialized() }))
        work.steps.append(
            .replace(path: self.timeIndexPath, contents: { timeIndex.serialized(baseOffset: baseOffset) })
        )
        return work
    }

    /// Seals the active segment as its log closes: gives back the reserved blocks and returns
    /// both indexes serialized, for the `CleanEnd` the log records; nil for an empty segment.
    func sealForClose() throws(StorageError) -> (offsetIndex: ByteBuffer, timeIndex: ByteBuffer)? {
        try self.reservationRelease().run()
        guard !self.isEmpty, let offsetIndex = self.offsetIndex else { return nil }
        return (offsetIndex.serialized(), self.sealedTimeIndex().serialized(baseOffset: self.baseOffset))
    }

    /// The time index with a final entry for the segment's max timestamp, so retention can read
    /// it without scanning.
    private func sealedTimeIndex() -> TimeIndex {
        if self.maxTimestamp >= 0 {
            self.timeIndex.append(timestamp: self.maxTimestamp, offset: self.offsetOfMaxTimestamp)
        }
        return self.timeIndex
    }

    /// The segment's files; the log file last (see `renameForDeletion`).
    private var filePaths: [String] { [self.indexPath, self.timeIndexPath, self.logPath] }

    func deleteFiles() throws(StorageError) {
        for path in self.filePaths { try FileSystem.remove(path) }
    }

    /// The suffix of a deleted segment's files until they are unlinked; a log being opened
    /// unlinks any it finds.
    static let deletedSuffix = ".deleted"

    /// Takes the segment's files out of the log's directory listing at once (a rename costs no
    /// block freeing) and returns the work that unlinks them and closes the file. The log file
    /// goes last: until it is renamed, the segment is still the log's, and a restart rebuilds
    /// indexes that went before it.
    func renameForDeletion() throws(StorageError) -> DeferredFileWork {
        var renamed: [String] = []
        for path in self.filePaths where FileSystem.exists(path) {
            try FileSystem.rename(path, to: path + Self.deletedSuffix)
            renamed.append(path + Self.deletedSuffix)
        }
        return DeferredFileWork(steps: [.remove(paths: renamed, file: self.log)])
    }

    // MARK: Reading

    /// Where a search for `offset`, and for the end of a span of `maxBytes` from it, starts:
    /// from the offset index, in memory (loaded first if it is not); no batch is read.
    func searchStart(for offset: Int64, maxBytes: Int) throws(StorageError) -> SpanSearch.Segment {
        try self.ensureOffsetIndex()
        let from = self.offsetIndex!.position(atOrBefore: UInt32(clamping: max(0, offset - self.baseOffset)))
        return self.searchStart(from: from, maxBytes: maxBytes)
    }

    /// Where a search from the segment's first batch starts, without loading the offset index:
    /// it only shortens the walk to the span's end (for a read of an offset before this
    /// segment's, which starts here only when the segment before has no batch at or after it).
    func searchStartAtFirstBatch(maxBytes: Int) -> SpanSearch.Segment {
        self.searchStart(from: 0, maxBytes: maxBytes)
    }

    private func searchStart(from: Int, maxBytes: Int) -> SpanSearch.Segment {
        let limit = from + min(maxBytes, self.size - from)
        let endSearchFrom = self.offsetIndex?.position(atOrBeforePosition: limit) ?? from
        return SpanSearch.Segment(file: self.log, size: self.size, from: from, endSearchFrom: max(from, endSearchFrom))
    }

    /// A starting point for a timestamp search: just after the last time-index entry whose
    /// timestamp is < `timestamp` (every record up to that entry is older), or the segment base.
    func searchStart(forTimestamp timestamp: Int64) throws(StorageError) -> Int64 {
        if self.timeIndex.count == 0 && self.size > 0 { try self.ensureOffsetIndex() }
        guard timestamp > Int64.min, let offset = self.timeIndex.offset(atOrBefore: timestamp - 1) else {
            return self.baseOffset
        }
        return offset + 1
    }
}
