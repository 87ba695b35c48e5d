import RafkaCore

/// Where each leader epoch begins in one partition's log (Kafka's leader epoch cache): the
/// offset of the first batch stamped with it. OffsetForLeaderEpoch answers from it where an
/// epoch ends, so a consumer whose partition passed to a leader with a different history (an
/// unclean takeover) finds the records it read gone even when the new log has grown past its
/// position since.
///
/// ```
///  log:     [ epoch 3 batches … ][ epoch 7 batches … ][ epoch 9 … ] log end
///  entries:  3@0                  7@1200               9@3400
///  epoch 3 ends at 1200, epoch 7 at 3400, the newest at the log end
/// ```
///
/// Written with the log's recovery point (`PartitionLog`), trusted below it, and taken again by
/// recovery from the batch headers it scans past it, so it covers the log it describes (a log
/// an older version wrote: from where recovery began to scan).
public struct LeaderEpochHistory: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var epoch: Int32
        public var startOffset: Int64

        public init(epoch: Int32, startOffset: Int64) {
            self.epoch = epoch
            self.startOffset = startOffset
        }
    }

    /// Ascending in both epoch and start offset.
    public private(set) var entries: [Entry] = []

    public init() {}

    /// Notes a batch of `epoch` at `offset`, appended at the log end. Only a newer epoch than
    /// the last begins an entry: batches of the current epoch continue it, and an older one
    /// (unstamped batches, -1) changes nothing. Returns whether an entry began. Past
    /// `entriesMax` the second oldest entry is forgotten: the epoch before it is then answered
    /// as running on to where the one after it begins (later than it did), which a consumer
    /// takes for a position still valid, as before the history was kept.
    @discardableResult
    public mutating func record(
        epoch: Int32, at offset: Int64, entriesMax: Int = Limits.leaderEpochHistoryEntriesMax
    ) -> Bool {
        guard epoch >= 0, self.entries.last.map({ epoch > $0.epoch && offset >= $0.startOffset }) ?? true else {
            return false
        }
        self.entries.append(Entry(epoch: epoch, startOffset: offset))
        if self.entries.count > max(2, entriesMax) { self.entries.remove(at: 1) }
        return true
    }

    /// The log now ends at `end` (recovery cut a torn tail): epochs that began at or past it are gone.
    public mutating func truncate(toEnd end: Int64) {
        self.entries.removeAll { $0.startOffset >= end }
    }

    /// The log now starts at `start` (retention): an epoch that ended before it is gone, and
    /// the one running at `start` begins there.
    public mutating func trim(toStart start: Int64) {
        while self.entries.count > 1, self.entries[1].startOffset <= start { self.entries.removeFirst() }
        if let first = self.entries.first, first.startOffset < start { self.entries[0].startOffset = start }
    }

    /// Where `requested` ends in a log ending at `logEnd` whose partition is now at leader epoch
    /// `current` (which begins at the log end if no batch carries it yet, as Kafka's leader
    /// assigns its epoch at the log end when it takes over): the newest epoch at or before
    /// `requested` this log has, and the offset where the next epoch begins. nil (undefined,
    /// as Kafka answers) for a negative epoch or one newer than any this partition had.
    public func endOffset(of requested: Int32, current: Int32, logEnd: Int64) -> (epoch: Int32, endOffset: Int64)? {
        let newest = max(current, self.entries.last?.epoch ?? current)
        guard requested >= 0, requested <= newest else { return nil }
        if requested == newest { return (requested, logEnd) }
        let next = self.entries.first { $0.epoch > requested }?.startOffset ?? logEnd
        // An epoch older than every entry (they were trimmed, or the log came from elsewhere)
        // ends where the first known one begins, as Kafka answers it.
        let floor = self.entries.last { $0.epoch <= requested }?.epoch ?? requested
        return (floor, next)
    }

    /// `epoch:offset` pairs separated by spaces (a line of the recovery-point file).
    public var encoded: String {
        self.entries.map { "\($0.epoch):\($0.startOffset)" }.joined(separator: " ")
    }

    /// Reads `encoded`; nil if it is not a history (malformed, not ascending, or longer than
    /// `entriesMax`).
    public init?(encoded: Substring, entriesMax: Int = Limits.leaderEpochHistoryEntriesMax) {
        for field in encoded.split(separator: " ") {
            let parts = field.split(separator: ":")
            guard self.entries.count < entriesMax, parts.count == 2, let epoch = Int32(parts[0]),
                let offset = Int64(parts[1]), self.record(epoch: epoch, at: offset, entriesMax: entriesMax)
            else { return nil }
        }
    }
}
