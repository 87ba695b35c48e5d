import RafkaCore

/// The entries a server holds in memory: everything after its latest snapshot.
///
/// Metadata logs are small and compacted into snapshots, so keeping the tail in memory lets the
/// core stay pure: it never reads storage. The shell loads it from disk at startup.
struct RaftLog: Sendable, Equatable {
    /// Entries up to and including this index are in the snapshot, not here.
    private(set) var snapshotIndex: LogIndex
    private(set) var snapshotTerm: Term
    /// `entries[i].index == snapshotIndex + 1 + i`.
    private(set) var entries: [RaftEntry]

    init(snapshotIndex: LogIndex = .zero, snapshotTerm: Term = .zero, entries: [RaftEntry] = []) {
        for (i, entry) in entries.enumerated() {
            precondition(entry.index == snapshotIndex + Int64(i + 1), "log entries must be contiguous")
        }
        self.snapshotIndex = snapshotIndex
        self.snapshotTerm = snapshotTerm
        self.entries = entries
    }

    var firstIndex: LogIndex { self.snapshotIndex + 1 }
    var lastIndex: LogIndex { self.snapshotIndex + Int64(self.entries.count) }
    var lastTerm: Term { self.entries.last?.term ?? self.snapshotTerm }

    /// The term of the entry at `index`, the snapshot's term at its index, nil when unknown
    /// (compacted away or beyond the end).
    func term(at index: LogIndex) -> Term? {
        if index == self.snapshotIndex { return self.snapshotTerm }
        guard index > self.snapshotIndex, index <= self.lastIndex else { return nil }
        return self.entries[Int(self.snapshotIndex.distance(to: index)) - 1].term
    }

    func entry(at index: LogIndex) -> RaftEntry? {
        guard index > self.snapshotIndex, index <= self.lastIndex else { return nil }
        return self.entries[Int(self.snapshotIndex.distance(to: index)) - 1]
    }

    /// Log Matching (§5.3): whether this log has an entry at `index` with `term`.
    func matches(index: LogIndex, term: Term) -> Bool {
        self.term(at: index) == term
    }

    /// Up to `count` entries from `index` (which must be after the snapshot).
    func entries(from index: LogIndex, count: Int) -> [RaftEntry] {
        guard index > self.snapshotIndex, index <= self.lastIndex else { return [] }
        let start = Int(self.snapshotIndex.distance(to: index)) - 1
        return Array(self.entries[start..<min(self.entries.count, start + count)])
    }

    /// Entries in (after, through].
    func entries(after: LogIndex, through: LogIndex) -> [RaftEntry] {
        guard through > after else { return [] }
        return self.entries(from: after + 1, count: Int(after.distance(to: through)))
    }

    /// The first index of the term that holds `index` (the hint a rejecting follower sends).
    func firstIndex(ofTermAt index: LogIndex) -> LogIndex {
        guard let term = self.term(at: index) else { return index }
        var first = index
        while first > self.firstIndex, self.term(at: first - 1) == term { first = first - 1 }
        return first
    }

    /// The last index whose term is ≤ `term` and ≤ `index` (leader-side use of a follower's hint).
    func lastIndex(withTermAtMost term: Term, before index: LogIndex) -> LogIndex {
        var candidate = min(index, self.lastIndex)
        while candidate > self.snapshotIndex, let t = self.term(at: candidate), t > term { candidate = candidate - 1 }
        return candidate
    }

    /// §5.4.1: whether a log ending at (`index`, `term`) is at least as up to date as this one.
    func isUpToDate(lastIndex index: LogIndex, lastTerm term: Term) -> Bool {
        term > self.lastTerm || (term == self.lastTerm && index >= self.lastIndex)
    }

    mutating func append(_ entry: RaftEntry) {
        precondition(entry.index == self.lastIndex + 1, "append at \(entry.index) after \(self.lastIndex)")
        precondition(entry.term >= self.lastTerm, "terms in a log never decrease")
        self.entries.append(entry)
    }

    /// Removes every entry after `index`.
    mutating func truncate(after index: LogIndex) {
        precondition(index >= self.snapshotIndex, "cannot truncate into the snapshot")
        self.entries.removeLast(Int(index.distance(to: self.lastIndex)))
    }

    /// Drops entries through `index`, now covered by a snapshot.
    mutating func compact(through index: LogIndex) {
        precondition(index > self.snapshotIndex && index <= self.lastIndex, "compaction point \(index) out of range")
        let term = self.term(at: index)!
        self.entries.removeFirst(Int(self.snapshotIndex.distance(to: index)))
        self.snapshotIndex = index
        self.snapshotTerm = term
    }

    /// Replaces the log with a received snapshot, keeping entries after it if they agree (§7).
    mutating func restore(index: LogIndex, term: Term) {
        if self.matches(index: index, term: term) && index <= self.lastIndex {
            self.compact(through: index)
        } else {
            self.entries = []
            self.snapshotIndex = index
            self.snapshotTerm = term
        }
    }

    /// The configuration in force at the end of the log: the last configuration entry, or the
    /// one the snapshot recorded (§6: a server uses the latest configuration in its log, committed or not).
    func configuration(snapshotConfiguration: RaftConfiguration) -> (RaftConfiguration, at: LogIndex) {
        for entry in self.entries.reversed() {
            if case .configuration(let configuration) = entry.payload { return (configuration, entry.index) }
        }
        return (snapshotConfiguration, self.snapshotIndex)
    }

    /// The configuration as of `index`.
    func configuration(at index: LogIndex, snapshotConfiguration: RaftConfiguration) -> RaftConfiguration {
        for entry in self.entries.reversed() where entry.index <= index {
            if case .configuration(let configuration) = entry.payload { return configuration }
        }
        return snapshotConfiguration
    }
}
