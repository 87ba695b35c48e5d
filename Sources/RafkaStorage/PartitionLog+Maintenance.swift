import KafkaProtocol
import NIOCore
import RafkaCore

/// Files to fsync and the offset that is durable once they are (see `PartitionLog.flushRequest`).
public struct FlushRequest: Sendable {
    public var files: [FileHandle]
    public var throughOffset: Int64
}

extension PartitionLog {
    // MARK: Flushing

    /// What must be fsynced now under `flush.messages` / `flush.ms`, plus any rolled segments not
    /// yet synced; nil when nothing is due. The owner runs the fsyncs off its event loop and then
    /// calls `flushed(through:)`. Appends may continue meanwhile: fsync covers what was written
    /// before it started, and `throughOffset` only claims that.
    public func flushRequest(nowMonotonicMilliseconds now: Int64, force: Bool = false) -> FlushRequest? {
        let dueByCount = self.flushDueByCount
        let dueByTime =
            self.unflushedMessages > 0
            && self.config.flushMilliseconds != Int64.max
            && now - self.lastFlushMonotonicMilliseconds >= self.config.flushMilliseconds
        let forced = force && self.logEndOffset > self.recoveryPoint
        guard dueByCount || dueByTime || forced || !self.unsyncedClosedSegments.isEmpty else { return nil }
        var files = self.unsyncedClosedSegments
        self.unsyncedClosedSegments.removeAll()
        if dueByCount || dueByTime || forced {
            files.append(self.activeSegment.log)
            self.unflushedMessages = 0
            self.lastFlushMonotonicMilliseconds = now
            return FlushRequest(files: files, throughOffset: self.logEndOffset)
        }
        return FlushRequest(files: files, throughOffset: self.activeSegment.baseOffset)
    }

    /// Records that everything below `offset` is on stable storage. Persists the recovery point
    /// when it passes a segment boundary, so recovery after a crash scans only newer segments.
    public func flushed(through offset: Int64) throws(StorageError) {
        guard offset > self.recoveryPoint else { return }
        let crossedSegment = self.segments.contains { $0.baseOffset > self.recoveryPoint && $0.baseOffset <= offset }
        self.recoveryPoint = offset
        if crossedSegment { self.deferredFileWork.append(self.recoveryPointWork()) }
    }

    /// When (monotonic ms) `flush.ms` makes an fsync due for what was appended since the last
    /// one began; nil when nothing waits for one or `flush.ms` is not set.
    public var timedFlushDue: Int64? {
        guard self.unflushedMessages > 0, self.config.flushMilliseconds != Int64.max else { return nil }
        let (due, overflow) = self.lastFlushMonotonicMilliseconds.addingReportingOverflow(self.config.flushMilliseconds)
        return overflow ? nil : due
    }

    /// Whether rolled segments wait for their fsync (`flushRequest` includes them).
    public var hasUnsyncedClosedSegments: Bool { !self.unsyncedClosedSegments.isEmpty }

    /// Whether `flush.messages` messages were appended since the last fsync began.
    public var flushDueByCount: Bool { self.unflushedMessages >= self.config.flushMessages }

    /// Whether an fsync policy is in force (otherwise the OS decides, as in Kafka by default).
    public var hasFlushPolicy: Bool { !self.config.flushesOnlyByOS }

    // MARK: Retention

    /// Deletes segments past `retention.ms` (by their newest timestamp) or beyond
    /// `retention.bytes` (oldest first), never the segment being written unless everything in it
    /// expired, in which case it is rolled first, as Kafka does. Returns the segments deleted.
    @discardableResult
    public func enforceRetention(nowMilliseconds now: Int64) throws(StorageError) -> Int {
        var deleted = 0
        let retentionMilliseconds = self.config.retentionMilliseconds
        if retentionMilliseconds >= 0 {
            while let oldest = self.segments.first, !oldest.isEmpty,
                now.subtractingReportingOverflow(oldest.maxTimestamp).partialValue > retentionMilliseconds
            {
                if self.segments.count == 1 { try self.roll() }
                try self.deleteOldestSegment()
                deleted += 1
            }
        }
        if self.config.retentionBytes >= 0 {
            var excess = Int64(self.sizeBytes) - self.config.retentionBytes
            while self.segments.count > 1, let oldest = self.segments.first, excess - Int64(oldest.size) >= 0 {
                excess -= Int64(oldest.size)
                try self.deleteOldestSegment()
                deleted += 1
            }
        }
        return deleted
    }

    /// Takes the oldest segment out of the log: its files are renamed now and unlinked with the
    /// deferred file work (off the partition's loop), so a large segment's blocks are not freed
    /// on it; a restart in between unlinks them too. A rename that fails leaves the log as it was.
    private func deleteOldestSegment() throws(StorageError) {
        precondition(self.segments.count > 1, "the active segment is never deleted")
        let oldest = self.segments[0]
        let removal = try oldest.renameForDeletion()
        self.segments.removeFirst()
        self.deferredFileWork.forget(oldest)
        self.deferredFileWork.append(removal)
        self.unsyncedClosedSegments.removeAll { $0 === oldest.log }
        self.logStartOffset = self.segments.first!.baseOffset
        self.cache.drop(self.cacheKey, below: self.logStartOffset)
        self.producers.removeProducers(before: self.logStartOffset)
        self.leaderEpochs.trim(toStart: self.logStartOffset)
        self.recoveryPoint = max(self.recoveryPoint, self.logStartOffset)
    }

    /// Writeback of the active segment, started every `Limits.writebackChunkBytes`.
    public struct Writeback: Sendable {
        public let file: FileHandle
        /// To start writing back (`FileHandle.startWriteback`).
        public let start: Range<Int>
        /// Written back by earlier calls (or nearly): to drop from the page cache
        /// (`FileHandle.releasePages`), when asked for.
        public let release: Range<Int>?

        /// Starts `start`'s writeback, then releases `release`'s pages. Blocks: run it off the event loops.
        public func run() throws(StorageError) {
            try self.file.startWriteback(offset: self.start.lowerBound, length: self.start.count)
            if let release = self.release { try self.file.releasePages(release) }
        }
    }

    /// The active segment's writeback, once `Limits.writebackChunkBytes` were appended since
    /// the last one; unless `pageCacheTailBytes` is nil, pages written back more than that
    /// before it leave the page cache.
    public func writebackDue(pageCacheTailBytes: Int?) -> Writeback? {
        guard
            let due = self.activeSegment.writebackDue(
                chunkBytes: Limits.writebackChunkBytes,
                keptBytes: pageCacheTailBytes
            )
        else { return nil }
        return Writeback(file: self.activeSegment.log, start: due.start, release: due.release)
    }

    // MARK: Closing

    /// Flushes everything, writes the producer snapshot, and the recovery point with where the
    /// active segment ends and its indexes (`CleanEnd`): the next open then reads no segment.
    public func close() throws(StorageError) {
        try self.takeDeferredFileWork().run()
        for file in self.unsyncedClosedSegments { try file.sync() }
        self.unsyncedClosedSegments.removeAll()
        let active = self.activeSegment
        let indexes = try active.sealForClose()
        try active.log.sync()
        try self.producerSnapshotWork.run()
        self.recoveryPoint = self.logEndOffset
        let end = indexes.map {
            CleanEnd(
                baseOffset: active.baseOffset, bytes: active.size, nextOffset: active.nextOffset,
                offsetIndex: $0.offsetIndex, timeIndex: $0.timeIndex)
        }
        try self.recoveryPointWork(cleanEnd: end).run()
        self.cache.drop(self.cacheKey)
    }

    /// Removes the partition's directory and everything in it (topic deletion).
    public func deleteFiles() throws(StorageError) {
        self.cache.drop(self.cacheKey)
        let files = self.segments.map(\.log) + self.deferredFileWork.filesToRemove
        self.unsyncedClosedSegments.removeAll()
        self.deferredFileWork = DeferredFileWork()
        self.segments.removeAll()
        try FileSystem.removeTree(self.directory)
        // A fetch sending a span of one may hold it still: its last close frees the blocks.
        for file in files { file.markUnlinked() }
    }
}
