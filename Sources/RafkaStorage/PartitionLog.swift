import KafkaProtocol
import NIOCore
import RafkaCompression
import RafkaCore

/// One partition replica's log: a directory of segments, the producer-state table, and the
/// flush and retention policy of its `LogConfig`.
///
/// ```
///  open ──► recover (closed segments past the recovery point validated, active segment
///           scanned and its torn tail cut, unless a clean close left its end and indexes)
///           ──► serving ──► close (flush, indexes, checkpoints)
///                                               │  append / read / offsetForTimestamp
///                                               │  enforceRetention / flushRequest + flushed
/// ```
/// Not thread-safe: the owner (the server's partition shell) confines it to one event loop.
/// Files: `<base>.log|.index|.timeindex`, `<offset>.snapshot`, `recovery-point` (with the
/// leader epoch history).
public final class PartitionLog {
    public let directory: String
    public let topicPartition: TopicPartition
    public private(set) var config: LogConfig
    var segments: [LogSegment]
    public internal(set) var logStartOffset: Int64
    public internal(set) var producers: ProducerStateTable
    /// Every offset below this is known to be on stable storage.
    public internal(set) var recoveryPoint: Int64
    /// Where each leader epoch begins in this log (for OffsetForLeaderEpoch).
    public internal(set) var leaderEpochs = LeaderEpochHistory()
    var unflushedMessages: Int64 = 0
    var lastFlushMonotonicMilliseconds: Int64
    /// Segments rolled but not yet fsynced.
    var unsyncedClosedSegments: [FileHandle] = []
    /// Left for the owner to run off its loop (`takeDeferredFileWork`).
    var deferredFileWork = DeferredFileWork()
    let allocator = ByteBufferAllocator()
    /// The node's hot cache and this log's key in it: appends fill it, reads try it first.
    let cache: HotCache
    let cacheKey: HotCache.LogKey

    /// Reads this log's cached batches from any thread, without the log: a partition's owner
    /// publishes the offsets readers may see and reads below them from here (the cache holds
    /// only what was written, and drops the log's batches when it closes or truncates).
    public var cachedReader: HotCache.Reader { HotCache.Reader(cache: self.cache, key: self.cacheKey) }

    /// The offset the next appended record gets (Kafka's log end offset).
    public var logEndOffset: Int64 { self.segments.last!.nextOffset }
    public var sizeBytes: Int { self.segments.reduce(0) { $0 + $1.size } }
    public var segmentCount: Int { self.segments.count }
    public var activeSegmentBaseOffset: Int64 { self.segments.last!.baseOffset }

    /// What `open` found and did, for the startup log.
    public struct RecoveryReport: Sendable {
        public var segments: Int
        public var truncatedBytes: Int
        public var truncationReason: String?
        /// Segment files removed because the log ended (torn) in an earlier segment.
        public var removedSegments: [String] = []
        public var producerStateFrom: Int64
        /// Bytes of segments recovery read through (none for the active segment after a clean close).
        public var scannedBytes = 0
    }

    /// A log dropped without a clean close (taken offline after a failed fsync, a close that
    /// threw) leaves the hot cache too.
    deinit {
        self.cache.drop(self.cacheKey)
    }

    private init(
        directory: String,
        topicPartition: TopicPartition,
        config: LogConfig,
        segments: [LogSegment],
        cache: HotCache
    ) {
        self.cache = cache
        self.cacheKey = cache.makeKey()
        self.directory = directory
        self.topicPartition = topicPartition
        self.config = config
        self.segments = segments
        self.logStartOffset = segments.first!.baseOffset
        self.producers = ProducerStateTable(
            batchesRemembered: Limits.producerBatchesRemembered,
            producersMax: Limits.producerIdsPerPartitionMax
        )
        self.recoveryPoint = 0
        self.lastFlushMonotonicMilliseconds = FileSystem.monotonicMilliseconds()
    }

    // MARK: Opening and recovery

    /// Opens (creating if absent) the log in `directory` and recovers it.
    ///
    /// Throws `.corruptSegment` naming the file when a closed segment past the recovery point
    /// fails validation: such data is never dropped silently. A torn tail of the active segment
    /// (the usual result of a crash mid-write) is truncated and reported.
    public static func open(
        directory: String,
        topicPartition: TopicPartition,
        config: LogConfig,
        cache: HotCache = .disabled
    ) throws(StorageError) -> (PartitionLog, RecoveryReport) {
        try FileSystem.createDirectory(directory)
        var bases: [Int64] = []
        for name in try FileSystem.list(directory) {
            if name.hasSuffix(".tmp") || name.hasSuffix(LogSegment.deletedSuffix) {
                try FileSystem.remove(directory + "/" + name)
            } else if name.hasSuffix(".log"), let base = Int64(name.dropLast(4)) {
                bases.append(base)
            }
        }
        bases.sort()
        let interval = config.indexIntervalBytes
        var segments: [LogSegment] = []
        for base in bases {
            segments.append(try LogSegment.open(directory: directory, baseOffset: base, indexIntervalBytes: interval))
        }
        if segments.isEmpty {
            segments.append(try LogSegment.create(directory: directory, baseOffset: 0, indexIntervalBytes: interval))
        }
        let log = PartitionLog(
            directory: directory,
            topicPartition: topicPartition,
            config: config,
            segments: segments,
            cache: cache
        )
        let report = try log.recover()
        return (log, report)
    }

    private var recoveryPointPath: String { self.directory + "/recovery-point" }

    /// Recovers the segments in order. Past the recovery point (data that may not have reached
    /// the disk), a segment whose end is torn — a bad last batch, or fewer offsets than the next
    /// segment starts at — is where the log now ends: it is cut there and later segments are
    /// removed, as Kafka's recovery does, with a warning naming them. Damage anywhere else is
    /// refused with the file named, never cut. The active segment is scanned too, unless a clean
    /// close left it as it is now (`CleanEnd`).
    private func recover() throws(StorageError) -> RecoveryReport {
        let checkpointed = Self.readCheckpoint(self.recoveryPointPath)
        let checkpoint = checkpointed?.recoveryPoint ?? 0
        // The history as written covers the log below the recovery point, and may name epochs
        // that began past it (appends while the fsync ran) in records a crash can since have
        // lost: cut there, and the scan below (of every segment reaching past it) adds what
        // lies beyond. A checkpoint of an older version has no history: epochs that began in
        // the segments below its recovery point stay unknown (an older epoch is then answered
        // as ending where the first known one begins, as Kafka answers an epoch older than its
        // cache), rather than reading every segment of every log once.
        self.leaderEpochs = checkpointed?.epochs ?? LeaderEpochHistory()
        self.leaderEpochs.truncate(toEnd: checkpoint)
        let (snapshotOffset, table) = self.loadNewestSnapshot()
        self.producers = table
        let replayFrom = snapshotOffset ?? self.logStartOffset
        var report = RecoveryReport(segments: self.segments.count, truncatedBytes: 0, producerStateFrom: replayFrom)
        var index = 0
        while index < self.segments.count {
            let segment = self.segments[index]
            let isActive = index == self.segments.count - 1
            let nextBase = isActive ? Int64.max : self.segments[index + 1].baseOffset
            let unflushed = isActive || nextBase > checkpoint
            if !unflushed && nextBase <= replayFrom {
                try segment.adoptClosed(nextOffset: nextBase)
                index += 1
                continue
            }
            // A close writes the recovery point, the record's end and the producer snapshot at the same offset.
            if isActive, let end = checkpointed?.cleanEnd, end.fits(segment), end.nextOffset == checkpoint,
                replayFrom == end.nextOffset,
                try segment.adoptCleanlyClosed(
                    nextOffset: end.nextOffset, offsetIndex: end.offsetIndex, timeIndex: end.timeIndex)
            {
                break
            }
            report.scannedBytes += segment.size
            let result = try segment.recover(validate: unflushed) { header in
                if header.baseOffset >= replayFrom { self.producers.record(header) }
                self.leaderEpochs.record(epoch: header.partitionLeaderEpoch, at: header.baseOffset)
            }
            let shortOfNext = !isActive && result.problem == nil && segment.nextOffset < nextBase
            if let problem = result.problem, !(unflushed && result.problemIsAtTail) {
                let detail = isActive ? ", with valid-looking data after it; only a torn tail is truncated" : ""
                throw StorageError(.corruptSegment, "\(segment.logPath): \(problem)\(detail); inspect or restore it")
            }
            if isActive && result.problem == nil { break }
            guard result.problem == nil && !shortOfNext else {
                if shortOfNext && !unflushed {
                    throw StorageError(
                        .corruptSegment,
                        "\(segment.logPath): ends at offset \(segment.nextOffset), the next segment starts at \(nextBase)"
                    )
                }
                report.truncatedBytes += segment.size - result.validBytes
                report.truncationReason =
                    result.problem ?? "offsets end at \(segment.nextOffset) before the next segment's base \(nextBase)"
                try segment.truncate(toBytes: result.validBytes)
                report.removedSegments = try self.removeSegments(after: index)
                break
            }
            guard segment.nextOffset <= nextBase else {
                throw StorageError(
                    .corruptSegment,
                    "\(segment.logPath): offsets run past the next segment's base \(nextBase)"
                )
            }
            segment.markClosed(nextOffset: nextBase)
            index += 1
        }
        self.recoveryPoint = min(checkpoint, self.logEndOffset)
        self.leaderEpochs.truncate(toEnd: self.logEndOffset)
        self.leaderEpochs.trim(toStart: self.logStartOffset)
        if let snapshotOffset, snapshotOffset > self.logEndOffset {
            // The log now ends before the snapshot: rebuild producer state from what remains.
            try ProducerStateSnapshot.prune(directory: self.directory, after: self.logEndOffset)
            report.producerStateFrom = try self.rebuildProducerState()
        }
        try ProducerStateSnapshot.prune(directory: self.directory, after: self.logEndOffset)
        return report
    }

    /// Deletes every segment after `index` (recovery found the log ends in segment `index`),
    /// returning their file names.
    private func removeSegments(after index: Int) throws(StorageError) -> [String] {
        var removed: [String] = []
        while self.segments.count > index + 1 {
            let segment = self.segments.removeLast()
            removed.insert(segment.logPath, at: 0)
            try segment.deleteFiles()
        }
        return removed
    }

    /// Producer state from the newest snapshot at or below the log end plus the batch headers
    /// after it. Returns the offset replay started from.
    private func rebuildProducerState() throws(StorageError) -> Int64 {
        let (snapshotOffset, table) = self.loadNewestSnapshot()
        self.producers = table
        let from = snapshotOffset ?? self.logStartOffset
        for segment in self.segments where segment.nextOffset > from {
            try segment.forEachBatchHeader { header in
                if header.baseOffset >= from { self.producers.record(header) }
            }
        }
        return from
    }

    private func loadNewestSnapshot() -> (Int64?, ProducerStateTable) {
        var table = self.producers
        for offset in (try? ProducerStateSnapshot.offsets(in: self.directory)) ?? [] {
            guard let bytes = try? FileSystem.readAll(self.directory + "/" + ProducerStateSnapshot.fileName(offset)),
                let found = ProducerStateSnapshot.decode(bytes, into: &table)
            else { continue }
            return (found, table)
        }
        return (nil, table)
    }

    /// Where the active segment ended when the log was closed cleanly, and its indexes then,
    /// recorded with the recovery point. A segment's bytes below its end never change (appends
    /// write past it, recovery only cuts a torn tail), so while the active segment still has
    /// this base and size, these describe it and the next open need not read it (as Kafka skips
    /// recovery after a clean shutdown). Kept in the checkpoint rather than in index files of
    /// their own, which would cost two more file creations per partition at every shutdown.
    struct CleanEnd: Equatable {
        var baseOffset: Int64
        var bytes: Int
        var nextOffset: Int64
        /// Serialized as in `<base>.index` and `<base>.timeindex`.
        var offsetIndex: ByteBuffer
        var timeIndex: ByteBuffer

        func fits(_ segment: LogSegment) -> Bool {
            segment.baseOffset == self.baseOffset && segment.size == self.bytes && self.bytes > 0
        }
    }

    /// What the `recovery-point` file holds.
    struct Checkpoint {
        var recoveryPoint: Int64
        /// nil in a file written before the history was kept.
        var epochs: LeaderEpochHistory?
        var cleanEnd: CleanEnd?
    }

    /// The `recovery-point` file: the offset on its first line; then `epochs` and the leader
    /// epoch history (`LeaderEpochHistory.encoded`); after a clean close a last line
    /// `clean <active base> <active bytes> <next offset> <index bytes> <time index bytes>`
    /// followed by the two indexes' bytes. A history that does not parse reads as absent.
    static func readCheckpoint(_ path: String) -> Checkpoint? {
        guard FileSystem.exists(path), var bytes = try? FileSystem.readAll(path),
            let first = Self.readLine(&bytes), let recoveryPoint = Int64(first)
        else { return nil }
        var checkpoint = Checkpoint(recoveryPoint: recoveryPoint)
        var line = Self.readLine(&bytes)
        if let epochs = line, epochs == "epochs" || epochs.hasPrefix("epochs ") {
            checkpoint.epochs = LeaderEpochHistory(encoded: epochs.dropFirst("epochs".count))
            line = Self.readLine(&bytes)
        }
        guard let second = line else { return checkpoint }
        let fields = second.split(separator: " ")
        guard fields.count == 6, fields[0] == "clean", let base = Int64(fields[1]), let size = Int(fields[2]),
            let next = Int64(fields[3]), let offsetIndexBytes = Int(fields[4]), let timeIndexBytes = Int(fields[5]),
            (0...bytes.readableBytes).contains(offsetIndexBytes), timeIndexBytes == bytes.readableBytes - offsetIndexBytes,
            let offsetIndex = bytes.readSlice(length: offsetIndexBytes), let timeIndex = bytes.readSlice(length: timeIndexBytes)
        else { return checkpoint }
        checkpoint.cleanEnd = CleanEnd(
            baseOffset: base, bytes: size, nextOffset: next, offsetIndex: offsetIndex, timeIndex: timeIndex)
        return checkpoint
    }

    /// The next line, or what is left if no newline ends it.
    private static func readLine(_ bytes: inout ByteBuffer) -> String? {
        guard bytes.readableBytes > 0 else { return nil }
        let newline = bytes.readableBytesView.firstIndex(of: UInt8(ascii: "\n"))
        let line = bytes.readString(length: (newline ?? bytes.writerIndex) - bytes.readerIndex)
        if newline != nil { bytes.moveReaderIndex(forwardBy: 1) }
        return line?.trimmingCharacters()
    }

    /// Persisting the recovery point and the leader epoch history as they are now, and the
    /// active segment's end and indexes when the log is closing cleanly.
    func recoveryPointWork(cleanEnd: CleanEnd? = nil) -> DeferredFileWork {
        let recoveryPoint = self.recoveryPoint
        let epochs = self.leaderEpochs
        return DeferredFileWork(steps: [
            .replace(path: self.recoveryPointPath) {
                var contents = ByteBuffer(string: "\(recoveryPoint)\nepochs \(epochs.encoded)\n")
                if let end = cleanEnd {
                    contents.writeString(
                        "clean \(end.baseOffset) \(end.bytes) \(end.nextOffset) "
                            + "\(end.offsetIndex.readableBytes) \(end.timeIndex.readableBytes)\n")
                    contents.writeImmutableBuffer(end.offsetIndex)
                    contents.writeImmutableBuffer(end.timeIndex)
                }
                return contents
            }
        ])
    }

    // MARK: Configuration

    /// Applies a new configuration (from AlterConfigs). Takes effect for later appends, reads
    /// and retention runs.
    public func update(config: LogConfig) {
        self.config = config
    }
}
