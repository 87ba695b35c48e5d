import Foundation
import NIOCore
import RafkaCore
import RafkaStorage
import Testing

@Suite struct LeaderEpochHistoryTests {
    typealias Entry = LeaderEpochHistory.Entry

    static func history(_ pairs: [(Int32, Int64)]) -> LeaderEpochHistory {
        var history = LeaderEpochHistory()
        for (epoch, offset) in pairs {
            let began = history.record(epoch: epoch, at: offset)
            #expect(began)
        }
        return history
    }

    /// Where an epoch ends, as Kafka's leader epoch cache answers: the current epoch at the log
    /// end; an older one where the next known epoch begins, named by the newest known epoch at
    /// or before it; one older than every entry where the first begins; a newer or negative
    /// one undefined. The current epoch begins at the log end until a batch carries it.
    @Test func anEpochEndsWhereTheNextBegins() {
        let history = Self.history([(3, 0), (7, 100), (9, 250)])
        func end(_ epoch: Int32, current: Int32 = 9) -> [Int64]? {
            history.endOffset(of: epoch, current: current, logEnd: 300).map { [Int64($0.epoch), $0.endOffset] }
        }
        #expect(end(9) == [9, 300])
        #expect(end(8) == [7, 250])
        #expect(end(7) == [7, 250])
        #expect(end(5) == [3, 100])
        #expect(end(3) == [3, 100])
        #expect(end(2) == [2, 0])
        #expect(end(10) == nil)
        #expect(end(-1) == nil)
        // The partition moved on to epoch 11; no batch carries it yet.
        #expect(end(11, current: 11) == [11, 300])
        #expect(end(10, current: 11) == [9, 300])
        #expect(end(9, current: 11) == [9, 300])
        #expect(end(7, current: 11) == [7, 250])
        #expect(end(12, current: 11) == nil)
        // A log with no batches: every epoch up to the current one ends at its end.
        let empty = LeaderEpochHistory()
        #expect(empty.endOffset(of: 4, current: 4, logEnd: 50).map { [Int64($0.epoch), $0.endOffset] } == [4, 50])
        #expect(empty.endOffset(of: 2, current: 4, logEnd: 50).map { [Int64($0.epoch), $0.endOffset] } == [2, 50])
        #expect(empty.endOffset(of: 5, current: 4, logEnd: 50) == nil)
    }

    /// Only a newer epoch begins an entry; a torn tail cut takes the epochs that began in it;
    /// retention moves the running epoch's start up to the log's.
    @Test func entriesFollowAppendsTruncationAndRetention() {
        var history = Self.history([(0, 0), (3, 40)])
        let began = [
            history.record(epoch: 3, at: 60), history.record(epoch: 2, at: 70), history.record(epoch: -1, at: 70),
            history.record(epoch: 5, at: 30),  // behind the last entry's start
            history.record(epoch: 5, at: 80),
        ]
        #expect(began == [false, false, false, false, true])
        #expect(history.entries == [Entry(epoch: 0, startOffset: 0), Entry(epoch: 3, startOffset: 40), Entry(epoch: 5, startOffset: 80)])
        var cut = history
        cut.truncate(toEnd: 80)
        #expect(cut.entries.map(\.epoch) == [0, 3])
        cut.truncate(toEnd: 10)
        #expect(cut.entries == [Entry(epoch: 0, startOffset: 0)])
        var trimmed = history
        trimmed.trim(toStart: 20)
        #expect(trimmed.entries.map(\.startOffset) == [20, 40, 80])
        trimmed.trim(toStart: 40)
        #expect(trimmed.entries == [Entry(epoch: 3, startOffset: 40), Entry(epoch: 5, startOffset: 80)])
        trimmed.trim(toStart: 500)
        #expect(trimmed.entries == [Entry(epoch: 5, startOffset: 500)], "the running epoch stays")
    }

    /// Past its bound the history forgets its second oldest epoch: the oldest still begins at the
    /// log start, and runs on to where the next one kept begins.
    @Test func aFullHistoryForgetsItsSecondOldestEpoch() {
        var history = Self.history([(0, 0), (3, 40), (5, 80)])
        let began = history.record(epoch: 7, at: 90, entriesMax: 3)
        #expect(began)
        #expect(history.entries == [Entry(epoch: 0, startOffset: 0), Entry(epoch: 5, startOffset: 80), Entry(epoch: 7, startOffset: 90)])
        #expect(history.endOffset(of: 3, current: 7, logEnd: 100).map { [Int64($0.epoch), $0.endOffset] } == [0, 80])
        #expect(LeaderEpochHistory(encoded: "0:0 3:40 5:80", entriesMax: 3) != nil)
        #expect(LeaderEpochHistory(encoded: "0:0 3:40 5:80 7:90", entriesMax: 3) == nil)
    }

    @Test func theEncodingRoundTripsAndRefusesWhatIsNotAHistory() {
        let history = Self.history([(0, 0), (3, 40), (12, 9_000_000_000)])
        #expect(history.encoded == "0:0 3:40 12:9000000000")
        #expect(LeaderEpochHistory(encoded: Substring(history.encoded)) == history)
        #expect(LeaderEpochHistory(encoded: "") == LeaderEpochHistory())
        for bad in ["3:40 2:50", "3:40 5:10", "x", "3:", "3:4:5", "3:40,5:50", "-1:0"] {
            #expect(LeaderEpochHistory(encoded: Substring(bad)) == nil, "\(bad)")
        }
    }

    // MARK: In the log

    let directory = TemporaryDirectory()

    func open(_ path: String = "orders-0") throws -> PartitionLog { try self.openReporting(path).0 }

    func openReporting(_ path: String = "orders-0") throws -> (PartitionLog, PartitionLog.RecoveryReport) {
        try PartitionLog.open(
            directory: self.directory.path + "/" + path, topicPartition: TopicPartition("orders", 0), config: LogConfig())
    }

    func append(_ log: PartitionLog, epoch: Int32, count: Int = 2) throws {
        _ = try log.append(
            Batches.validated(Batches.make(count: count), config: log.config), leaderEpoch: epoch,
            nowMilliseconds: 1_700_000_000_000)
    }

    /// The history survives a clean close, a kill (rebuilt past the recovery point by the scan),
    /// a recovery point written before the history was kept (rebuilt from every batch), and a
    /// torn tail (the epoch that began in it is gone); a copy keeps its source's epochs.
    @Test func theLogKeepsItsHistoryThroughRestartsAndCopies() throws {
        defer { self.directory.remove() }
        let expected = [Entry(epoch: 0, startOffset: 0), Entry(epoch: 3, startOffset: 4), Entry(epoch: 5, startOffset: 8)]
        do {
            let log = try self.open()
            // Three segments: a reopen reads none of the closed ones below the recovery point.
            for epoch: Int32 in [0, 0, 3] { try self.append(log, epoch: epoch) }
            try log.roll()
            try self.append(log, epoch: 3)
            try log.roll()
            try self.append(log, epoch: 5)
            #expect(log.leaderEpochs.entries == expected)
            try log.close()
        }
        let checkpoint = self.directory.path + "/orders-0/recovery-point"
        do {
            let log = try self.open()
            #expect(log.leaderEpochs.entries == expected)
            try self.append(log, epoch: 6)
            // No close: as after kill -9; the recovery point still says 10.
        }
        let withSix = expected + [Entry(epoch: 6, startOffset: 10)]
        #expect(try self.open().leaderEpochs.entries == withSix)
        // A torn last batch, of an epoch the checkpoint names (a close wrote it, then the tail
        // was lost): recovery cuts the epoch with the batch.
        do {
            let log = try self.open()
            try self.append(log, epoch: 8, count: 3)
            try log.close()
            let segment = self.directory.path + "/orders-0/" + String(format: "%020d", log.activeSegmentBaseOffset) + ".log"
            let handle = try Foundation.FileHandle(forWritingTo: URL(fileURLWithPath: segment))
            try handle.truncate(atOffset: try handle.seekToEnd() - 10)
            try handle.close()
            #expect(try String(contentsOfFile: checkpoint, encoding: .isoLatin1).contains("\nepochs 0:0 3:4 5:8 6:10 8:12\n"))
        }
        let cut = try self.open()
        #expect(cut.logEndOffset == 12)
        #expect(cut.leaderEpochs.entries == withSix)
        #expect(cut.leaderEpochs.endOffset(of: 8, current: 8, logEnd: 12).map(\.endOffset) == 12)
        #expect(cut.leaderEpochs.endOffset(of: 3, current: 8, logEnd: 12).map(\.endOffset) == 8)
        // A new leader's copy of the log.
        let copy = try self.open("copy")
        while copy.logEndOffset < cut.logEndOffset {  // a read ends with its segment
            try copy.appendReplicated(Batches.validated(cut.read(from: copy.logEndOffset, maxBytes: 1 << 20, minOneBatch: true)))
        }
        #expect(copy.leaderEpochs.entries == withSix)
        try self.append(copy, epoch: 9)
        #expect(copy.leaderEpochs.endOffset(of: 6, current: 9, logEnd: copy.logEndOffset).map(\.endOffset) == 12)
    }

    /// A checkpoint may name epochs that began past its recovery point (appends while its fsync
    /// ran). When a crash lost those records and the log went on in a newer epoch from where it
    /// was cut, recovery trusts the written history only below the recovery point and takes the
    /// rest from the records.
    @Test func epochsPastTheRecoveryPointComeFromTheRecords() throws {
        defer { self.directory.remove() }
        do {
            let log = try self.open()
            for epoch: Int32 in [0, 0, 3, 3, 9] { try self.append(log, epoch: epoch) }
            // No close: as after kill -9.
        }
        // Written when the log held offsets 0-11, the last two in epoch 7, fsynced below 4;
        // offsets 8-11 were lost and epoch 9 began at 8.
        try "4\nepochs 0:0 3:4 7:10\n".write(toFile: self.directory.path + "/orders-0/recovery-point", atomically: true, encoding: .utf8)
        let log = try self.open()
        #expect(log.leaderEpochs.entries == [Entry(epoch: 0, startOffset: 0), Entry(epoch: 3, startOffset: 4), Entry(epoch: 9, startOffset: 8)])
        #expect(log.leaderEpochs.endOffset(of: 7, current: 9, logEnd: 10).map { [Int64($0.epoch), $0.endOffset] } == [3, 8])
    }

    /// A checkpoint of an older version has no history: recovery takes what it scans (here the
    /// active segment) and reads no segment below the recovery point for it, so an epoch older
    /// than the first it knows is answered as ending where that one begins.
    @Test func aCheckpointWithoutAHistoryStartsOneFromTheScan() throws {
        defer { self.directory.remove() }
        do {
            let log = try self.open()
            for epoch: Int32 in [0, 0, 3] { try self.append(log, epoch: epoch) }
            try log.roll()
            for epoch: Int32 in [5, 6] { try self.append(log, epoch: epoch) }
            try log.close()
        }
        try "10\n".write(toFile: self.directory.path + "/orders-0/recovery-point", atomically: true, encoding: .utf8)
        let (log, report) = try self.openReporting()
        #expect(report.scannedBytes > 0 && report.scannedBytes < log.sizeBytes, "the active segment only")
        #expect(log.leaderEpochs.entries == [Entry(epoch: 5, startOffset: 6), Entry(epoch: 6, startOffset: 8)])
        #expect(log.leaderEpochs.endOffset(of: 3, current: 6, logEnd: 10).map { [Int64($0.epoch), $0.endOffset] } == [3, 6])
    }
}
