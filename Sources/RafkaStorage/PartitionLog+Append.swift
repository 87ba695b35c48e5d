import KafkaProtocol
import NIOCore
import RafkaCore

/// Where appended batches landed.
public struct AppendInfo: Sendable, Equatable {
    public var firstOffset: Int64
    public var lastOffset: Int64
    /// The broker time stamped on the batches for LogAppendTime topics, else -1.
    public var logAppendTime: Int64
    public var logStartOffset: Int64
    public var recordCount: Int

    public init(firstOffset: Int64, lastOffset: Int64, logAppendTime: Int64, logStartOffset: Int64, recordCount: Int) {
        self.firstOffset = firstOffset
        self.lastOffset = lastOffset
        self.logAppendTime = logAppendTime
        self.logStartOffset = logStartOffset
        self.recordCount = recordCount
    }
}

/// The result of `PartitionLog.append`.
public enum AppendOutcome: Sendable, Equatable {
    case appended(AppendInfo)
    /// The batch repeats one of the producer's last five: acknowledged with its original offsets,
    /// not written again.
    case duplicate(AppendInfo)
    /// OUT_OF_ORDER_SEQUENCE_NUMBER.
    case outOfOrderSequence(String)
    /// INVALID_PRODUCER_EPOCH: a newer epoch of this producer id has written.
    case invalidProducerEpoch(String)
}

/// A batch that passed validation, ready to append: its parsed header and its bytes.
public struct ValidatedBatch: Sendable {
    public var header: RecordBatchHeader
    public var bytes: ByteBuffer

    public init(header: RecordBatchHeader, bytes: ByteBuffer) {
        precondition(bytes.readableBytes == header.totalBytes)
        self.header = header
        self.bytes = bytes
    }
}

extension PartitionLog {
    /// Appends validated batches, assigning offsets from the log end. Checks idempotent-producer
    /// sequences first; rolls the active segment when size, age or offset range require.
    ///
    /// The batches get their offsets and leader epoch set (and, for LogAppendTime topics, the
    /// time and CRC) in one buffer, which is written with one call and then kept by the hot cache
    /// as it is. A lone batch whose buffer holds little else (`keepsInPlace`: a request frame of
    /// one partition, as `RequestMemoryGate` gathers it) is that buffer: set where it arrived,
    /// not copied, when nothing else references it (else ByteBuffer's copy-on-write copies just
    /// the batch). Several batches, or one that shares a larger buffer, are copied into a new one.
    public func append(
        _ batches: consuming [ValidatedBatch],
        leaderEpoch: Int32 = 0,
        nowMilliseconds: Int64
    ) throws(StorageError) -> AppendOutcome {
        precondition(!batches.isEmpty)
        if let verdict = self.checkProducers(batches) { return verdict }
        let totalBytes = batches.reduce(0) { $0 + $1.bytes.readableBytes }
        let recordCount = batches.reduce(0) { $0 + Int($1.header.recordCount) }
        let appendTime = self.config.timestampType == .logAppendTime ? nowMilliseconds : -1
        let incomingTimestamp = appendTime >= 0 ? appendTime : batches.map(\.header.maxTimestamp).max()!
        try self.maybeRoll(incomingBytes: totalBytes, recordCount: recordCount, incomingTimestamp: incomingTimestamp)
        let firstOffset = self.logEndOffset
        var next = firstOffset
        var written: ByteBuffer
        if batches.count == 1 && Self.keepsInPlace(batches[0].bytes) {
            // Taken out of the array, so that the array holds no second reference.
            written = batches[0].bytes
            batches[0].bytes = ByteBuffer()
        } else {
            written = self.allocator.buffer(capacity: totalBytes)
            for index in batches.indices { written.writeImmutableBuffer(batches[index].bytes) }
        }
        var headers: [RecordBatchHeader] = []
        headers.reserveCapacity(batches.count)
        var position = written.readerIndex
        for index in batches.indices {
            var header = batches[index].header
            header.baseOffset = next
            header.partitionLeaderEpoch = leaderEpoch
            RecordBatch.setBaseOffset(next, leaderEpoch: leaderEpoch, in: &written, at: position)
            if appendTime >= 0 {
                RecordBatch.setLogAppendTime(appendTime, in: &written, at: position, length: header.totalBytes)
                header.maxTimestamp = appendTime
                header.attributes |= 0x08
            }
            headers.append(header)
            position += header.totalBytes
            next = header.nextOffset
        }
        try self.activeSegment.append(parts: [written], headers: headers)
        self.leaderEpochs.record(epoch: leaderEpoch, at: firstOffset)
        self.keepInCache(written, headers: headers)
        for header in headers { self.producers.record(header) }
        self.unflushedMessages += Int64(recordCount)
        return .appended(
            AppendInfo(
                firstOffset: firstOffset,
                lastOffset: next - 1,
                logAppendTime: appendTime,
                logStartOffset: self.logStartOffset,
                recordCount: recordCount
            )
        )
    }

    /// Appends batches copied from another replica's log as they are: offsets, leader epochs
    /// and timestamps kept (a new leader taking over a partition's log). The first batch must
    /// start at the log end; an empty log starts where the copy does (the other log's start,
    /// after its retention). Returns the records appended.
    @discardableResult
    public func appendReplicated(_ batches: [ValidatedBatch]) throws(StorageError) -> Int {
        guard let first = batches.first else { return 0 }
        if first.header.baseOffset != self.logEndOffset {
            guard self.logEndOffset == self.logStartOffset, first.header.baseOffset > self.logEndOffset,
                self.segments.count == 1
            else {
                throw StorageError(
                    .offsetOutOfRange,
                    "a copied batch at offset \(first.header.baseOffset) does not follow the log end \(self.logEndOffset)"
                )
            }
            // The new segment first: a failure leaves the log as it was.
            let start = try LogSegment.create(
                directory: self.directory,
                baseOffset: first.header.baseOffset,
                indexIntervalBytes: self.config.indexIntervalBytes
            )
            let empty = self.segments[0]
            self.segments = [start]
            try? empty.deleteFiles()
            self.logStartOffset = first.header.baseOffset
            self.recoveryPoint = first.header.baseOffset
            self.leaderEpochs = LeaderEpochHistory()
        }
        var next = self.logEndOffset
        for batch in batches {
            guard batch.header.baseOffset == next else {
                throw StorageError(
                    .offsetOutOfRange,
                    "copied batches skip from offset \(next) to \(batch.header.baseOffset)"
                )
            }
            next = batch.header.nextOffset
        }
        let totalBytes = batches.reduce(0) { $0 + $1.bytes.readableBytes }
        let recordCount = batches.reduce(0) { $0 + Int($1.header.recordCount) }
        try self.maybeRoll(
            incomingBytes: totalBytes,
            recordCount: recordCount,
            incomingTimestamp: batches.map(\.header.maxTimestamp).max()!
        )
        try self.activeSegment.append(parts: batches.map(\.bytes), headers: batches.map(\.header))
        for batch in batches {
            self.producers.record(batch.header)
            self.leaderEpochs.record(epoch: batch.header.partitionLeaderEpoch, at: batch.header.baseOffset)
        }
        self.unflushedMessages += Int64(recordCount)
        return recordCount
    }

    var activeSegment: LogSegment { self.segments.last! }

    /// Whether keeping a batch in the buffer it came in costs no more memory than a copy would:
    /// ByteBufferAllocator rounds capacities up to a power of two, so a copy of a 430 KB batch
    /// takes 512 KB, as does the request frame it came in. Up to `Limits.inPlaceSlackBytes`
    /// more is allowed for small batches.
    static func keepsInPlace(_ bytes: ByteBuffer) -> Bool {
        let length = bytes.readableBytes
        // The smallest power of two at least `length`.
        let copyCapacity = length <= 1 ? length : 1 << (Int.bitWidth - (length - 1).leadingZeroBitCount)
        return bytes.storageCapacity <= max(copyCapacity, length + Limits.inPlaceSlackBytes)
    }

    /// Hands the hot cache one slice of `written` per batch. Copied batches
    /// (`appendReplicated`) are not cached: a takeover copies whole partitions, which would
    /// push every other partition's tail out; the next append starts a new cached run.
    private func keepInCache(_ written: ByteBuffer, headers: [RecordBatchHeader]) {
        guard self.cache.isEnabled else { return }
        // One buffer holds the whole append: cache all of it or none (a kept slice keeps it all).
        guard headers.allSatisfy({ $0.totalBytes <= self.cache.batchBytesMax }) else {
            self.cache.drop(self.cacheKey)
            return
        }
        var position = written.readerIndex
        let slices = headers.map { header in
            defer { position += header.totalBytes }
            return (
                baseOffset: header.baseOffset, nextOffset: header.nextOffset,
                bytes: written.getSlice(at: position, length: header.totalBytes)!
            )
        }
        assert(position == written.writerIndex)
        self.cache.put(
            self.cacheKey, batches: slices, bufferBytes: written.storageCapacity,
            nowMilliseconds: FileSystem.monotonicMilliseconds())
    }

    private func checkProducers(_ batches: [ValidatedBatch]) -> AppendOutcome? {
        for (i, batch) in batches.enumerated() where batch.header.hasProducerID {
            switch self.producers.check(batch.header) {
            case .append:
                continue
            case .duplicate(let original) where i == 0:
                return .duplicate(
                    AppendInfo(
                        firstOffset: original.firstOffset,
                        lastOffset: original.lastOffset,
                        logAppendTime: -1,
                        logStartOffset: self.logStartOffset,
                        recordCount: 0
                    )
                )
            case .duplicate(let original):
                return .outOfOrderSequence(
                    "batch \(i) repeats sequence \(original.firstSequence) of producer \(batch.header.producerID)"
                )
            case .outOfOrder(let expected, let received):
                return .outOfOrderSequence(
                    "producer \(batch.header.producerID): expected sequence \(expected), received \(received)"
                )
            case .fencedEpoch(let current, let received):
                return .invalidProducerEpoch(
                    "producer \(batch.header.producerID): epoch \(received) is older than \(current)"
                )
            }
        }
        return nil
    }

    /// Rolls to a new segment when the next append would overflow its size, the records would
    /// span more than `segment.ms` of timestamps, or 32-bit relative offsets would overflow.
    ///
    /// Time is measured between the incoming records' timestamp and the segment's first batch,
    /// as Kafka does (`LogSegment.timeWaitedForRoll`), so replaying old data does not roll a
    /// segment per batch.
    private func maybeRoll(incomingBytes: Int, recordCount: Int, incomingTimestamp: Int64) throws(StorageError) {
        let active = self.activeSegment
        guard !active.isEmpty else { return }
        let full = active.size + incomingBytes > self.config.segmentBytes
        let aged =
            active.firstBatchTimestamp.map {
                $0 >= 0
                    && incomingTimestamp.subtractingReportingOverflow($0).partialValue
                        >= self.config.segmentMilliseconds
            } ?? false
        let overflow = !active.canHold(offset: self.logEndOffset + Int64(recordCount))
        if full || aged || overflow { try self.roll() }
    }

    /// Closes the active segment and starts a new one at the log end. The closed segment's file
    /// is queued for fsync so the recovery point can move past it; its indexes, the producer
    /// snapshot and the return of its reserved blocks are left as deferred file work, so a roll
    /// waits on the device no longer than creating the new file takes.
    public func roll() throws(StorageError) {
        let old = self.activeSegment
        guard !old.isEmpty else { return }
        let next = try LogSegment.create(
            directory: self.directory,
            baseOffset: old.nextOffset,
            indexIntervalBytes: self.config.indexIntervalBytes
        )
        self.deferredFileWork.append(old.seal())
        self.segments.append(next)
        self.unsyncedClosedSegments.append(old.log)
        self.deferredFileWork.append(self.producerSnapshotWork)
    }

    /// Writing the producer-state snapshot at the log end, keeping the newest two.
    var producerSnapshotWork: DeferredFileWork {
        let offset = self.logEndOffset
        let path = self.directory + "/" + ProducerStateSnapshot.fileName(offset)
        let producers = self.producers
        return DeferredFileWork(steps: [
            .replace(path: path, contents: { ProducerStateSnapshot.encode(producers, offset: offset) }),
            .pruneSnapshots(directory: self.directory, keep: 2),
        ])
    }

    /// The file work left since the last call (see `DeferredFileWork`): the caller runs it off
    /// its loop, in order, and before `close` or `deleteFiles`.
    public func takeDeferredFileWork() -> DeferredFileWork {
        defer { self.deferredFileWork = DeferredFileWork() }
        return self.deferredFileWork
    }
}
