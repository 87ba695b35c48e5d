import KafkaProtocol

/// Idempotent-producer state of one partition: for each producer id, its epoch and the
/// sequence ranges and offsets of its last five batches (KIP-98).
///
/// ```
///   batch(pid, epoch, seq) ──► check ──┬─► .append            (next in sequence, or a new epoch at 0)
///                                      ├─► .duplicate(offsets) (same epoch and sequence range as one of the last 5)
///                                      ├─► .outOfOrder         (OUT_OF_ORDER_SEQUENCE_NUMBER)
///                                      └─► .fencedEpoch        (INVALID_PRODUCER_EPOCH: an older epoch)
/// ```
/// Pure: no I/O. `PartitionLog` checks before appending, records after, and rebuilds the table
/// from batch headers on recovery.
public struct ProducerStateTable: Sendable {
    public struct BatchMetadata: Sendable, Equatable {
        public var firstSequence: Int32
        public var lastSequence: Int32
        public var firstOffset: Int64
        public var lastOffset: Int64
        public var timestamp: Int64

        public init(firstSequence: Int32, lastSequence: Int32, firstOffset: Int64, lastOffset: Int64, timestamp: Int64) {
            self.firstSequence = firstSequence
            self.lastSequence = lastSequence
            self.firstOffset = firstOffset
            self.lastOffset = lastOffset
            self.timestamp = timestamp
        }
    }

    public struct Entry: Sendable, Equatable {
        public var epoch: Int16
        /// The last `Limits.producerBatchesRemembered` batches, oldest first.
        public var batches: [BatchMetadata]
        /// Last offset written by this producer: eviction picks the least recently active.
        public var lastOffset: Int64
    }

    public enum Verdict: Equatable, Sendable {
        case append
        case duplicate(BatchMetadata)
        case outOfOrder(expected: Int32, received: Int32)
        case fencedEpoch(current: Int16, received: Int16)
    }

    public private(set) var entries: [Int64: Entry] = [:]
    public let batchesRemembered: Int
    public let producersMax: Int

    public init(batchesRemembered: Int = 5, producersMax: Int = 10_000) {
        precondition(batchesRemembered > 0 && producersMax > 0)
        self.batchesRemembered = batchesRemembered
        self.producersMax = producersMax
    }

    /// Decides what to do with a batch from an idempotent producer (producerId ≥ 0).
    public func check(_ header: RecordBatchHeader) -> Verdict {
        precondition(header.hasProducerID)
        guard let entry = self.entries[header.producerID] else {
            // Unknown producer: Kafka accepts any sequence when no state exists (all of its
            // batches may have been removed by retention), so do we.
            return .append
        }
        if header.producerEpoch < entry.epoch {
            return .fencedEpoch(current: entry.epoch, received: header.producerEpoch)
        }
        if header.producerEpoch > entry.epoch {
            // A bumped epoch restarts sequences at 0.
            return header.baseSequence == 0 ? .append : .outOfOrder(expected: 0, received: header.baseSequence)
        }
        if let duplicate = entry.batches.first(where: {
            $0.firstSequence == header.baseSequence && $0.lastSequence == header.lastSequence
        }) {
            return .duplicate(duplicate)
        }
        guard let last = entry.batches.last else { return .append }
        let expected = last.lastSequence == Int32.max ? 0 : last.lastSequence + 1
        return header.baseSequence == expected ? .append : .outOfOrder(expected: expected, received: header.baseSequence)
    }

    /// Records an appended batch (header carries its assigned offsets).
    public mutating func record(_ header: RecordBatchHeader) {
        guard header.hasProducerID, header.baseSequence >= 0 else { return }
        let metadata = BatchMetadata(
            firstSequence: header.baseSequence, lastSequence: header.lastSequence, firstOffset: header.baseOffset,
            lastOffset: header.lastOffset, timestamp: header.maxTimestamp)
        if var entry = self.entries[header.producerID], entry.epoch == header.producerEpoch {
            entry.batches.append(metadata)
            if entry.batches.count > self.batchesRemembered { entry.batches.removeFirst() }
            entry.lastOffset = header.lastOffset
            self.entries[header.producerID] = entry
        } else {
            self.entries[header.producerID] = Entry(epoch: header.producerEpoch, batches: [metadata], lastOffset: header.lastOffset)
            if self.entries.count > self.producersMax { self.evictOldest() }
        }
    }

    /// Forgets producers whose last write is below `offset` (their batches were deleted).
    public mutating func removeProducers(before offset: Int64) {
        self.entries = self.entries.filter { $0.value.lastOffset >= offset }
    }

    /// Forgets state for batches at or after `offset` (after a log truncation).
    public mutating func truncate(from offset: Int64) {
        for (id, var entry) in self.entries {
            entry.batches.removeAll { $0.lastOffset >= offset }
            if entry.batches.isEmpty {
                self.entries[id] = nil
            } else {
                entry.lastOffset = entry.batches.last!.lastOffset
                self.entries[id] = entry
            }
        }
    }

    private mutating func evictOldest() {
        guard let oldest = self.entries.min(by: { $0.value.lastOffset < $1.value.lastOffset }) else { return }
        self.entries[oldest.key] = nil
    }
}
