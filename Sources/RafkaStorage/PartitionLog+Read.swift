import KafkaProtocol
import NIOCore
import RafkaCore

extension PartitionLog {
    /// Whole batches starting with the one that holds `offset`, up to `maxBytes` (at least one
    /// batch when `minOneBatch`): from the hot cache when it holds `offset`, else a span of a
    /// single segment, not read yet (`LogRecords`). Empty at the log end.
    /// Throws `.offsetOutOfRange` outside [log start, log end]. May wait for the device.
    public func readRecords(from offset: Int64, maxBytes: Int, minOneBatch: Bool) throws(StorageError) -> LogRecords {
        switch try self.startRead(from: offset, maxBytes: maxBytes, minOneBatch: minOneBatch) {
        case .records(let records): records
        case .search(let search): try search.find()
        case .loadIndex: preconditionFailure("startRead loads the index itself unless asked not to")
        }
    }

    /// Where a read starts (see `readRecords`).
    public enum ReadStart: Sendable {
        /// The hot cache's batches, or nothing at the log end.
        case records(LogRecords)
        /// Where in the segment files to look: `SpanSearch.find` may run on another thread.
        case search(SpanSearch)
        /// The offset index of the segment to look in is not loaded yet: read it
        /// (`IndexLoad.read`, on any thread), give it to `adopt`, and start again.
        case loadIndex(IndexLoad)
    }

    /// The offset index file to read before a read can start.
    public struct IndexLoad: Sendable {
        let file: OffsetIndexFile

        /// The index, read from its file, or rebuilt from the segment where the file is
        /// missing or does not fit it; none where the segment's batches do not walk (loading it
        /// then scans the segment, on the partition's loop).
        public func read() throws(StorageError) -> LoadedIndex {
            LoadedIndex(baseOffset: self.file.baseOffset, index: try self.file.readOrRebuild())
        }
    }

    /// An offset index read by `IndexLoad.read`, and its segment's base offset.
    public struct LoadedIndex: Sendable {
        let baseOffset: Int64
        let index: OffsetIndex?
    }

    /// Takes the index if its segment is still there and still without one.
    public func adopt(_ loaded: LoadedIndex) {
        guard let index = loaded.index else { return }
        let segment = self.segments[self.segmentIndex(containing: loaded.baseOffset)]
        if segment.baseOffset == loaded.baseOffset { segment.adopt(index) }
    }

    /// The start of `readRecords`, reading no file: the hot cache's batches, if `admitCached`
    /// takes their size (see `HotCache.read`; every batch in the cache is in its segment too),
    /// or where in the segments to look for the span. A segment's offset index not loaded yet
    /// is loaded here (a read of its file, or a scan of the segment) when `loadingIndex`;
    /// otherwise the answer is the index file to read first.
    public func startRead(
        from offset: Int64,
        maxBytes: Int,
        minOneBatch: Bool,
        loadingIndex: Bool = true,
        admitCached: (_ bytes: Int) -> Bool = { _ in true }
    ) throws(StorageError) -> ReadStart {
        guard offset >= self.logStartOffset, offset <= self.logEndOffset else {
            throw StorageError(
                .offsetOutOfRange, "offset \(offset) is outside [\(self.logStartOffset), \(self.logEndOffset)]")
        }
        guard offset < self.logEndOffset else { return .records(.empty) }
        if let cached = self.cache.read(
            self.cacheKey, from: offset, maxBytes: maxBytes, minOneBatch: minOneBatch, admit: admitCached)
        {
            return .records(.memory(cached))
        }
        // The segment whose base offset is ≤ `offset`; should `offset` lie past its last batch,
        // the first batch of the next segment with any is the one that follows it.
        let index = self.segmentIndex(containing: offset)
        let holding = self.segments[index]
        let next = self.segments[(index + 1)...].first { !$0.isEmpty }
        if !loadingIndex && holding.offsetIndexUnloaded {
            return .loadIndex(IndexLoad(file: holding.indexFile))
        }
        return .search(
            SpanSearch(
                offset: offset, maxBytes: maxBytes, minOneBatch: minOneBatch,
                holding: try holding.searchStart(for: offset, maxBytes: maxBytes),
                next: next?.searchStartAtFirstBatch(maxBytes: maxBytes), cache: self.cache))
    }

    /// `readRecords`, with a span of a segment read into memory.
    public func read(from offset: Int64, maxBytes: Int, minOneBatch: Bool) throws(StorageError) -> ByteBuffer {
        let records = try self.readRecords(from: offset, maxBytes: maxBytes, minOneBatch: minOneBatch)
        return try records.bytes(allocator: self.allocator)
    }

    /// The index of the last segment whose base offset is ≤ `offset`.
    func segmentIndex(containing offset: Int64) -> Int {
        var low = 0
        var high = self.segments.count
        while low < high {
            let mid = (low + high) / 2
            if self.segments[mid].baseOffset <= offset { low = mid + 1 } else { high = mid }
        }
        return max(0, low - 1)
    }
}
