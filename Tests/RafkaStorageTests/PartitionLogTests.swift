import Foundation
import KafkaProtocol
import NIOCore
import RafkaCompression
import RafkaCore
import RafkaStorage
import Testing

@Suite struct PartitionLogTests {
    let directory = TemporaryDirectory()
    let tp = TopicPartition("orders", 0)

    func open(_ overrides: [String: String] = [:]) throws -> (PartitionLog, PartitionLog.RecoveryReport) {
        try PartitionLog.open(
            directory: self.directory.path + "/orders-0",
            topicPartition: self.tp,
            config: LogConfig(overrides: overrides)
        )
    }

    func append(_ log: PartitionLog, _ bytes: ByteBuffer, now: Int64 = 1_700_000_000_000) throws -> AppendOutcome {
        try log.append(Batches.validated(bytes, config: log.config), nowMilliseconds: now)
    }

    @Test func appendAssignsOffsetsAndReadsBack() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open()
        #expect(try self.append(log, Batches.make(count: 3, tag: "a")).info?.firstOffset == 0)
        #expect(try self.append(log, Batches.make(count: 2, tag: "b")).info?.firstOffset == 3)
        #expect(log.logEndOffset == 5)
        let all = try log.read(from: 0, maxBytes: 1 << 20, minOneBatch: true)
        #expect(try Batches.offsets(all) == [0, 3])
        #expect(try Batches.values(all).map { $0.prefix(3) } == ["a-0", "a-1", "a-2", "b-0", "b-1"])
        // Reading from inside a batch returns that whole batch (the client skips earlier records).
        #expect(try Batches.offsets(log.read(from: 4, maxBytes: 1 << 20, minOneBatch: true)) == [3])
        #expect(try log.read(from: 5, maxBytes: 1 << 20, minOneBatch: true).readableBytes == 0)
        #expect(throws: StorageError.self) { try log.read(from: 6, maxBytes: 100, minOneBatch: true) }
    }

    /// A new leader's copy: batches appended as they were (offsets kept), an empty copy starting
    /// where the source's log starts, gaps and overlaps refused, and it all survives a reopen.
    @Test func replicatedBatchesKeepTheirOffsets() throws {
        defer { self.directory.remove() }
        let sourceDirectory = TemporaryDirectory()
        defer { sourceDirectory.remove() }
        let (source, _) = try PartitionLog.open(
            directory: sourceDirectory.path,
            topicPartition: TopicPartition("t", 0),
            config: LogConfig()
        )
        for tag in ["a", "b", "c"] { _ = try self.append(source, Batches.make(count: 2, tag: tag)) }
        let all = try Batches.validated(source.read(from: 0, maxBytes: 1 << 20, minOneBatch: true))
        let (copy, _) = try self.open()
        // Retention took the first batch at the source: the copy starts at offset 2.
        #expect(try copy.appendReplicated(Array(all[1...1])) == 2)
        #expect(copy.logStartOffset == 2 && copy.logEndOffset == 4)
        #expect(throws: StorageError.self) { try copy.appendReplicated(Array(all[0...0])) }
        #expect(try copy.appendReplicated(Array(all[2...2])) == 2)
        try copy.close()
        let (reopened, _) = try self.open()
        #expect(reopened.logStartOffset == 2 && reopened.logEndOffset == 6)
        #expect(
            try Batches.values(reopened.read(from: 2, maxBytes: 1 << 20, minOneBatch: true)).map { $0.prefix(3) } == [
                "b-0", "b-1", "c-0", "c-1",
            ]
        )
    }

    @Test func maxBytesReturnsWholeBatchesButAlwaysOne() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open()
        for _ in 0..<4 { _ = try self.append(log, Batches.make(count: 1, valueBytes: 500)) }
        let one = try log.read(from: 0, maxBytes: 10, minOneBatch: true)
        #expect(try Batches.offsets(one) == [0])
        #expect(try log.read(from: 0, maxBytes: 10, minOneBatch: false).readableBytes == 0)
        let two = try log.read(from: 0, maxBytes: one.readableBytes * 2 + 100, minOneBatch: true)
        #expect(try Batches.offsets(two) == [0, 1])
    }

    /// Behind the cache a read is a span of one segment, not its bytes: whole batches up to the
    /// limit, their boundaries found from the sparse index and the batch headers after its last
    /// entry below the limit, and the bytes read through the span are the batches appended.
    /// Spans under `KafkaFrame.spliceBytesMin` are read at once (a frame would copy them anyway).
    /// A span keeps its segment's file readable after retention deleted the segment.
    @Test(arguments: ["100", "1000000"])
    func readsBehindTheCacheAreSpansOfWholeBatches(indexIntervalBytes: String) throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open([
            "segment.bytes": "1000000", "index.interval.bytes": indexIntervalBytes, "retention.bytes": "1",
        ])
        var sizes: [Int] = []
        var offsets: [Int64] = []
        for i in 0..<40 {
            let batch = Batches.make(count: 1 + i % 3, valueBytes: 500 + 71 * i, tag: "s\(i)")
            sizes.append(batch.readableBytes)
            offsets.append(try #require(self.append(log, batch).info?.firstOffset))
        }
        let starts = sizes.indices.map { sizes[..<$0].reduce(0, +) }
        for (first, maxBytes) in [(0, 1), (0, 2_000), (0, 20_000), (5, 23_456), (12, 1_000_000), (39, 50)] {
            let records = try log.readRecords(from: offsets[first], maxBytes: maxBytes, minOneBatch: true)
            let fitting = (first..<sizes.count).prefix { starts[$0] + sizes[$0] - starts[first] <= maxBytes }.count
            let expected = sizes[first..<(first + max(1, fitting))].reduce(0, +)
            #expect(records.byteCount == expected, "batch \(first), \(maxBytes) bytes")
            #expect(try RecordBatch.split(records.bytes()).count == max(1, fitting))
            switch records {
            case .file(let span):
                #expect(span.position == starts[first] && expected >= KafkaFrame.spliceBytesMin)
            case .memory:
                #expect(expected < KafkaFrame.spliceBytesMin, "batch \(first), \(maxBytes) bytes were read, not a span")
            }
        }
        guard case .file(let held) = try log.readRecords(from: 0, maxBytes: 1 << 20, minOneBatch: true) else {
            Issue.record("not a span")
            return
        }
        let expected = try log.read(from: 0, maxBytes: 1 << 20, minOneBatch: true)
        try log.roll()
        _ = try self.append(log, Batches.make(count: 1))
        #expect(try log.enforceRetention(nowMilliseconds: 1_700_000_000_000) > 0 && log.logStartOffset > 0)
        try log.takeDeferredFileWork().run()
        #expect(try LogRecords.file(held).bytes() == expected)
    }

    /// A span knows whether the OS page cache holds it: freshly written it does, once its pages
    /// are written back and dropped it does not, and reading it brings them back.
    @Test func aSpanTellsWhetherThePageCacheHoldsIt() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open()
        for i in 0..<8 { _ = try self.append(log, Batches.make(count: 4, valueBytes: 1_000, tag: "p\(i)")) }
        guard case .file(let span) = try log.readRecords(from: 0, maxBytes: 1 << 20, minOneBatch: true) else {
            Issue.record("not a span")
            return
        }
        #expect(span.isResident)
        try span.file.releasePages(0..<(span.position + span.length))
        #expect(!span.isResident)
        _ = try LogRecords.file(span).bytes()
        #expect(span.isResident)
    }

    /// Finding a span reads batch headers, which on a partition's loop must not wait for the
    /// device: `findInPageCache` gives up where a header's page is not cached, `find` reads it,
    /// and both find the same span; once `find` brought the pages back, the first finds it too.
    @Test func findingASpanInThePageCacheGivesUpOnlyWhereAPageIsMissing() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open(["index.interval.bytes": "1000000"])
        for i in 0..<8 { _ = try self.append(log, Batches.make(count: 4, valueBytes: 1_000, tag: "h\(i)")) }
        guard case .search(let search) = try log.startRead(from: 4, maxBytes: 1 << 20, minOneBatch: true),
            case .file(let warm) = try #require(try search.findInPageCache())
        else {
            Issue.record("a read behind the cache is not a span found in the page cache")
            return
        }
        try warm.file.releasePages(0..<(warm.position + warm.length))
        #expect(try search.findInPageCache() == nil)
        guard case .file(let found) = try search.find() else {
            Issue.record("find did not find the span")
            return
        }
        #expect(found.position == warm.position && found.length == warm.length && warm.position > 0)
        guard case .file(let again) = try #require(try search.findInPageCache()) else {
            Issue.record("the span is no longer a span")
            return
        }
        #expect(again.position == warm.position && again.length == warm.length)
    }

    /// After a restart the offset indexes of closed segments are loaded on first read; a read
    /// that must not touch the files (a partition's loop) gets the index files to read instead,
    /// adopts what was read, and starts again. An index file that is missing is left out, and
    /// loading it there scans the segment.
    @Test func indexesOfClosedSegmentsCanBeReadElsewhere() throws {
        defer { self.directory.remove() }
        let overrides = ["segment.bytes": "2000", "index.interval.bytes": "100"]
        let (log, _) = try self.open(overrides)
        for i in 0..<30 { _ = try self.append(log, Batches.make(count: 2, valueBytes: 100, tag: "i\(i)")) }
        #expect(log.segmentCount > 3)
        try log.close()
        let folder = self.directory.path + "/orders-0/"
        let indexes = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".index") }.sorted()
        // The first segment's index file is gone (a crash before it was written), the second's
        // is garbage: both are rebuilt from their segments where the index is read, off the loop.
        try FileManager.default.removeItem(atPath: folder + indexes[0])
        try Data(repeating: 0xff, count: 24).write(to: URL(fileURLWithPath: folder + indexes[1]))
        let (reopened, _) = try self.open(overrides)
        let third = Int64(indexes[2].prefix(20))!
        for target in [Int64(0), Int64(indexes[1].prefix(20))! + 1, third + 3] {
            guard case .loadIndex(let load) = try reopened.startRead(from: target, maxBytes: 700, minOneBatch: true, loadingIndex: false)
            else {
                Issue.record("offset \(target) of a closed segment started without loading its index")
                continue
            }
            reopened.adopt(try load.read())
            guard case .search = try reopened.startRead(from: target, maxBytes: 700, minOneBatch: true, loadingIndex: false)
            else {
                Issue.record("an adopted index was asked for again")
                continue
            }
            let first = try RecordBatch.split(reopened.read(from: target, maxBytes: 1, minOneBatch: true))[0].header
            #expect(first.baseOffset <= target && target <= first.lastOffset)
        }
    }

    @Test func rollsBySizeAndReadsAcrossSegments() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open(["segment.bytes": "2000", "index.interval.bytes": "100"])
        for i in 0..<30 { _ = try self.append(log, Batches.make(count: 2, valueBytes: 100, tag: "r\(i)")) }
        #expect(log.segmentCount > 3)
        var offset: Int64 = 0
        var values: [String] = []
        while offset < log.logEndOffset {
            let bytes = try log.read(from: offset, maxBytes: 700, minOneBatch: true)
            let batches = try RecordBatch.split(bytes)
            values += try Batches.values(bytes)
            offset = batches.last!.header.nextOffset
        }
        #expect(values.count == 60)
        // Every offset finds its batch through the sparse index.
        for target in Int64(0)..<60 {
            let first = try RecordBatch.split(log.read(from: target, maxBytes: 1, minOneBatch: true))[0].header
            #expect(first.baseOffset <= target && target <= first.lastOffset)
        }
    }

    @Test func retentionBySizeKeepsTheNewest() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open(["segment.bytes": "1000", "retention.bytes": "2500"])
        for _ in 0..<40 { _ = try self.append(log, Batches.make(count: 1, valueBytes: 200)) }
        let before = log.segmentCount
        let deleted = try log.enforceRetention(nowMilliseconds: 1_700_000_000_000)
        #expect(deleted > 0 && log.segmentCount == before - deleted)
        #expect(log.sizeBytes <= 2500 + 1000)
        #expect(log.logStartOffset > 0)
        #expect(throws: StorageError.self) { try log.read(from: 0, maxBytes: 100, minOneBatch: true) }
        #expect(try log.read(from: log.logStartOffset, maxBytes: 100, minOneBatch: true).readableBytes > 0)
    }

    @Test func retentionByTimeDeletesExpiredSegmentsIncludingTheActiveOne() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open(["segment.bytes": "1000", "retention.ms": "60000"])
        for _ in 0..<10 { _ = try self.append(log, Batches.make(count: 1, valueBytes: 200, timestamp: 1_000)) }
        #expect(log.segmentCount > 1)
        _ = try log.enforceRetention(nowMilliseconds: 1_000 + 59_000)
        #expect(log.logStartOffset == 0)
        _ = try log.enforceRetention(nowMilliseconds: 1_000 + 61_000)
        #expect(log.segmentCount == 1)
        #expect(log.logStartOffset == 10 && log.logEndOffset == 10)
        // The segments deleted leave no deferred work behind that would bring their indexes back.
        try log.takeDeferredFileWork().run()
        let names = try FileSystem.list(self.directory.path + "/orders-0")
        let bases = Set(names.filter { $0.hasSuffix(".log") }.map { $0.dropLast(4) })
        let orphans = names.filter { $0.hasSuffix("index") && !bases.contains($0.prefix(20)) }
        #expect(orphans.isEmpty, "\(orphans)")
    }

    /// Retention renames a segment's files on the log's thread and leaves their unlinking (and
    /// the freeing of their blocks) to the deferred file work; files renamed before a crash are
    /// unlinked when the log is opened again, and their records do not come back.
    @Test func retentionUnlinksSegmentsWithTheDeferredWork() throws {
        defer { self.directory.remove() }
        let path = self.directory.path + "/orders-0"
        var (log, _) = try self.open(["segment.bytes": "1000", "retention.bytes": "2500"])
        for _ in 0..<20 { _ = try self.append(log, Batches.make(count: 1, valueBytes: 200)) }
        try log.takeDeferredFileWork().run()
        let before = try FileSystem.list(path).filter { $0.hasSuffix(".log") }.count
        let deleted = try log.enforceRetention(nowMilliseconds: 1_700_000_000_000)
        let start = log.logStartOffset
        #expect(deleted > 0 && start > 0)
        var names = try FileSystem.list(path)
        #expect(names.filter { $0.hasSuffix(".log") }.count == before - deleted)
        #expect(names.filter { $0.hasSuffix(".log.deleted") }.count == deleted)
        try log.takeDeferredFileWork().run()
        #expect(try FileSystem.list(path).allSatisfy { !$0.hasSuffix(".deleted") })

        // Renamed, then the process dies before the deferred work runs.
        for _ in 0..<10 { _ = try self.append(log, Batches.make(count: 1, valueBytes: 200)) }
        #expect(try log.enforceRetention(nowMilliseconds: 1_700_000_000_000) > 0)
        let startBeforeCrash = log.logStartOffset
        #expect(try FileSystem.list(path).contains { $0.hasSuffix(".deleted") })
        (log, _) = try self.open(["segment.bytes": "1000", "retention.bytes": "2500"])
        names = try FileSystem.list(path)
        #expect(names.allSatisfy { !$0.hasSuffix(".deleted") }, "\(names)")
        #expect(log.logStartOffset == startBeforeCrash)
        #expect(log.logEndOffset == 30)
    }

    @Test func segmentMsRollsOnTheSpanOfRecordTimestamps() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open(["segment.ms": "1000"])
        _ = try self.append(log, Batches.make(count: 1, timestamp: 10_000))
        _ = try self.append(log, Batches.make(count: 1, timestamp: 10_500))
        #expect(log.segmentCount == 1)
        _ = try self.append(log, Batches.make(count: 1, timestamp: 11_000))
        #expect(log.segmentCount == 2)
    }

    @Test func offsetForTimestampFindsTheFirstRecordAtOrAfter() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open(["segment.bytes": "600", "index.interval.bytes": "50"])
        for i in 0..<20 {
            _ = try self.append(
                log,
                Batches.make(count: 5, valueBytes: 20, timestamp: 1_000 + Int64(i) * 100, codec: .lz4)
            )
        }
        #expect(try log.offset(forTimestamp: 0)?.offset == 0)
        // Batch i holds offsets 5i…5i+4 with timestamps 1000+100i … +4.
        #expect(try log.offset(forTimestamp: 1_302)! == (1_302, 17))
        #expect(try log.offset(forTimestamp: 1_305)! == (1_400, 20))
        #expect(try log.offset(forTimestamp: 99_999) == nil)
        #expect(try log.maxTimestampAndOffset()! == (2_904, 99))
    }

    /// A search by time is planned from memory and runs where the caller likes; after a
    /// restart, a closed segment's offset index is asked for first (to be read elsewhere), and
    /// the search then answers as before.
    @Test func searchesByTimeRunFromAPlanAndLoadClosedIndexesFirst() throws {
        defer { self.directory.remove() }
        let overrides = ["segment.bytes": "600", "index.interval.bytes": "50"]
        do {
            let (log, _) = try self.open(overrides)
            for i in 0..<20 {
                _ = try self.append(
                    log, Batches.make(count: 5, valueBytes: 20, timestamp: 1_000 + Int64(i) * 100, codec: .lz4))
            }
            #expect(log.segmentCount > 3)
            try log.close()
        }
        let (log, _) = try self.open(overrides)
        guard case .loadIndex(let load) = try log.startTimeSearch(for: 1_302, loadingIndex: false) else {
            Issue.record("a closed segment's search by time started without loading its index")
            return
        }
        log.adopt(try load.read())
        guard case .search(let search) = try log.startTimeSearch(for: 1_302, loadingIndex: false) else {
            Issue.record("an adopted index was asked for again")
            return
        }
        #expect(try search.find()! == (1_302, 17))
        guard case .search(let latest) = try log.startMaxTimestampSearch(loadingIndex: false) else {
            Issue.record("the active segment's index is in memory")
            return
        }
        #expect(try latest.find()! == (2_904, 99))
        guard case .search(let none) = try log.startTimeSearch(for: 99_999, loadingIndex: false) else {
            Issue.record("nothing to search needs no index")
            return
        }
        #expect(try none.find() == nil)
    }

    @Test func cleanRestartKeepsEverything() throws {
        defer { self.directory.remove() }
        do {
            let (log, _) = try self.open(["segment.bytes": "1500"])
            for i in 0..<25 { _ = try self.append(log, Batches.make(count: 2, valueBytes: 50, tag: "c\(i)")) }
            try log.close()
        }
        let (log, report) = try self.open(["segment.bytes": "1500"])
        #expect(report.truncatedBytes == 0)
        #expect(report.truncationReason == nil, "a clean restart reports no truncation")
        #expect(log.logEndOffset == 50)
        #expect(try Batches.values(log.read(from: 48, maxBytes: 1 << 20, minOneBatch: true)).count == 2)
        #expect(try log.offset(forTimestamp: 0)?.offset == 0)
    }

    /// What reads and time searches answer for every offset and timestamp of a log written by
    /// `appendTimed` (through the offset and time indexes).
    func answers(_ log: PartitionLog) throws -> [String] {
        var answers: [String] = []
        for offset in 0..<log.logEndOffset {
            answers.append("\(offset): \(try Batches.offsets(log.read(from: offset, maxBytes: 7_000, minOneBatch: true)))")
        }
        for step in stride(from: -5, through: 2_100, by: 7) {
            let found = try log.offset(forTimestamp: 1_700_000_000_000 + Int64(step))
            answers.append("t\(step): \(found.map { "\($0.offset)@\($0.timestamp)" } ?? "none")")
        }
        return answers
    }

    /// Segments of up to 1,000,000 bytes, an index entry every 10,000 bytes.
    static let cleanCloseConfig = ["segment.bytes": "1000000", "index.interval.bytes": "10000"]

    /// Batches `range` of two 3,000-byte records (6 KB), timestamps 10 ms apart.
    func appendTimed(_ log: PartitionLog, _ range: Range<Int>) throws {
        for i in range {
            _ = try self.append(log, Batches.make(count: 2, valueBytes: 3_000, timestamp: 1_700_000_000_000 + Int64(i * 10)))
        }
    }

    /// After a clean close the active segment is not read again: its end and indexes come from
    /// what the close wrote, and they answer every read and time search as a scan's rebuild does,
    /// before and after further appends. The active segment starts with a batch without
    /// timestamps (-1), which gets no time-index entry.
    @Test func aCleanCloseLeavesTheActiveSegmentUnread() throws {
        defer { self.directory.remove() }
        let before: [String]
        do {
            let (log, _) = try self.open(Self.cleanCloseConfig)
            try self.appendTimed(log, 0..<98)
            try log.roll()
            _ = try self.append(log, Batches.make(count: 1, valueBytes: 3_000, timestamp: -1))
            try self.appendTimed(log, 99..<150)
            #expect(log.segmentCount == 2)
            before = try self.answers(log)
            try log.close()
        }
        let checkpoint = self.directory.path + "/orders-0/recovery-point"
        let written = try Data(contentsOf: URL(fileURLWithPath: checkpoint))
        #expect(written.starts(with: Data("299\nepochs 0:0\nclean ".utf8)))
        do {
            let (log, report) = try self.open(Self.cleanCloseConfig)
            #expect(report.scannedBytes == 0)
            #expect(try self.answers(log) == before)
            try self.appendTimed(log, 150..<200)
            let after = try self.answers(log)
            try log.close()
            // The same log opened by scanning (the checkpoint without its clean line) answers alike.
            try "399\n".write(toFile: checkpoint, atomically: true, encoding: .utf8)
            let (scanned, scanReport) = try self.open(Self.cleanCloseConfig)
            #expect(scanReport.scannedBytes > 0)
            #expect(try self.answers(scanned) == after)
        }
    }

    /// A clean close's record is only trusted while the active segment is as it left it (one
    /// written to since, by a start, appends, then a crash, is scanned), and only whole.
    @Test(arguments: [
        "appended after", "torn tail", "last batch damaged", "record cut short", "record claims another end",
        "lengths overflow",
    ])
    func aSegmentChangedSinceTheCleanCloseIsScanned(change: String) throws {
        defer { self.directory.remove() }
        let active: String
        do {
            let (log, _) = try self.open(Self.cleanCloseConfig)
            try self.appendTimed(log, 0..<150)
            active = self.directory.path + "/orders-0/" + String(format: "%020d", log.activeSegmentBaseOffset)
            try log.close()
        }
        let checkpoint = URL(fileURLWithPath: self.directory.path + "/orders-0/recovery-point")
        switch change {
        case "appended after":
            let (log, _) = try self.open(Self.cleanCloseConfig)
            try self.appendTimed(log, 150..<151)
            #expect(log.activeSegmentBaseOffset == Int64(active.suffix(20))!, "still the same segment")
        // No close: as after kill -9.
        case "torn tail":
            let handle = try Foundation.FileHandle(forWritingTo: URL(fileURLWithPath: active + ".log"))
            handle.seekToEndOfFile()
            handle.write(Data(repeating: 7, count: 30))
            try handle.close()
        case "last batch damaged":
            // The same size, the last batch longer than the file: the walk over the headers after the
            // last index entry no longer ends at the segment's end.
            let data = try Data(contentsOf: URL(fileURLWithPath: active + ".log"))
            let last = try RecordBatch.split(ByteBuffer(bytes: data)).last!
            try Self.flipByte(active + ".log", at: data.count - last.bytes.readableBytes + 10)
        case "record cut short":
            // The indexes one time-index entry short: the lengths the record states do not add up.
            try Data(contentsOf: checkpoint).dropLast(12).write(to: checkpoint)
        default:
            // The record's text lines rewritten, its indexes kept.
            // Lines: the recovery point, the epoch history, the record.
            let data = try Data(contentsOf: checkpoint)
            let recordEnd = data.indices.filter { data[$0] == UInt8(ascii: "\n") }[2]
            let lines = String(decoding: data[..<recordEnd], as: UTF8.self).split(separator: "\n")
            var fields = lines[2].split(separator: " ").map(String.init)
            if change == "lengths overflow" {
                fields[4] = String(Int.max)
            } else {
                fields[3] = "302"
            }
            let text = (change == "lengths overflow" ? "300" : "302") + "\n" + lines[1] + "\n" + fields.joined(separator: " ")
            try (Data(text.utf8) + data[recordEnd...]).write(to: checkpoint)
        }
        let (log, report) = try self.open(Self.cleanCloseConfig)
        #expect(report.scannedBytes > 0)
        switch change {
        case "appended after": #expect(log.logEndOffset == 302)
        case "last batch damaged": #expect(log.logEndOffset == 298, "the damaged last batch is cut as a torn tail")
        default: #expect(log.logEndOffset == 300)
        }
        switch change {
        case "torn tail": #expect(report.truncatedBytes == 30)
        case "last batch damaged": #expect(report.truncatedBytes > 6_000)
        default: #expect(report.truncatedBytes == 0)
        }
        #expect(try Batches.offsets(log.read(from: 297, maxBytes: 1, minOneBatch: true)) == [296])
    }

    /// A crash mid-write leaves a partial batch at the end of the active segment: recovery cuts
    /// it and keeps everything before it.
    @Test func tornTailIsTruncated() throws {
        defer { self.directory.remove() }
        var path = ""
        do {
            let (log, _) = try self.open()
            for _ in 0..<5 { _ = try self.append(log, Batches.make(count: 2)) }
            path = self.directory.path + "/orders-0/00000000000000000000.log"
            // No close: as after kill -9. Then the torn write: half of a batch.
        }
        let partial = Batches.make(count: 4, valueBytes: 300)
        let handle = try Foundation.FileHandle(forWritingTo: URL(fileURLWithPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(partial.getBytes(at: 0, length: partial.readableBytes / 2)!))
        try handle.close()
        let (log, report) = try self.open()
        #expect(report.truncatedBytes == partial.readableBytes / 2)
        #expect(report.truncationReason != nil)
        #expect(log.logEndOffset == 10)
        #expect(try self.append(log, Batches.make(count: 1)).info?.firstOffset == 10)
        #expect(try Batches.offsets(log.read(from: 8, maxBytes: 1 << 20, minOneBatch: true)) == [8, 10])
    }

    /// A batch whose bytes changed after it was written (bit rot in the active segment) is cut
    /// there: the CRC catches it.
    @Test func corruptBatchInTheActiveSegmentIsCut() throws {
        defer { self.directory.remove() }
        let path = self.directory.path + "/orders-0/00000000000000000000.log"
        do {
            let (log, _) = try self.open()
            for _ in 0..<4 { _ = try self.append(log, Batches.make(count: 1, valueBytes: 100)) }
        }
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        try Self.flipByte(path, at: size - 20)
        let (log, report) = try self.open()
        #expect(log.logEndOffset == 3)
        #expect(report.truncationReason?.contains("CRC") == true)
    }

    /// A damaged closed segment — bad bytes with good batches after them — is reported by file
    /// name, never cut.
    @Test func corruptClosedSegmentIsReportedByName() throws {
        defer { self.directory.remove() }
        do {
            let (log, _) = try self.open(["segment.bytes": "1500"])
            for _ in 0..<20 { _ = try self.append(log, Batches.make(count: 1, valueBytes: 200)) }
            // Unclean: no close, recovery point still 0.
        }
        let first = self.directory.path + "/orders-0/00000000000000000000.log"
        let size = try FileManager.default.attributesOfItem(atPath: first)[.size] as! Int
        try Self.flipByte(first, at: 100)
        #expect {
            _ = try self.open(["segment.bytes": "1500"])
        } throws: { error in
            guard let error = error as? StorageError else { return false }
            return error.code == .corruptSegment && error.message.contains("00000000000000000000.log")
        }
        #expect(try FileManager.default.attributesOfItem(atPath: first)[.size] as! Int == size)
    }

    /// After a power loss, a rolled segment whose fsync had not finished can end early: past the
    /// recovery point that is where the log ends, later segments go, and the report says so.
    @Test func tornClosedSegmentPastTheRecoveryPointEndsTheLog() throws {
        defer { self.directory.remove() }
        let retry = Batches.make(count: 1, valueBytes: 200, producerID: 3, epoch: 0, sequence: 4)
        do {
            let (log, _) = try self.open(["segment.bytes": "1500"])
            for i in 0..<4 {
                _ = try self.append(
                    log,
                    Batches.make(count: 1, valueBytes: 200, producerID: 3, epoch: 0, sequence: Int32(i))
                )
            }
            _ = try self.append(log, retry)
            for i in 5..<20 {
                _ = try self.append(
                    log,
                    Batches.make(count: 1, valueBytes: 200, producerID: 3, epoch: 0, sequence: Int32(i))
                )
            }
        }
        // The first segment loses its last batch (offset 4), as if its pages never reached the disk.
        let first = self.directory.path + "/orders-0/00000000000000000000.log"
        let data = try Data(contentsOf: URL(fileURLWithPath: first))
        let batches = try RecordBatch.split(ByteBuffer(bytes: data))
        #expect(batches.count == 5)
        try data.prefix(data.count - batches.last!.bytes.readableBytes).write(to: URL(fileURLWithPath: first))
        let (log, report) = try self.open(["segment.bytes": "1500"])
        #expect(log.logEndOffset == 4)
        #expect(log.segmentCount == 1)
        #expect(report.removedSegments.count == 3)
        #expect(report.truncationReason != nil)
        // The producer's retry of the lost batch is written again, not acknowledged as a duplicate.
        #expect(
            try self.append(log, retry)
                == .appended(.init(firstOffset: 4, lastOffset: 4, logAppendTime: -1, logStartOffset: 0, recordCount: 1))
        )
    }

    @Test func idempotentProducerDuplicatesAndGaps() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open()
        let first = Batches.make(count: 3, producerID: 7, epoch: 0, sequence: 0)
        #expect(
            try self.append(log, first)
                == .appended(.init(firstOffset: 0, lastOffset: 2, logAppendTime: -1, logStartOffset: 0, recordCount: 3))
        )
        // The same batch again (a retry): acknowledged with its original offset, not written.
        guard case .duplicate(let info) = try self.append(log, first) else {
            Issue.record("expected a duplicate")
            return
        }
        #expect(info.firstOffset == 0 && log.logEndOffset == 3)
        // A gap in sequence numbers.
        guard
            case .outOfOrderSequence = try self.append(
                log,
                Batches.make(count: 1, producerID: 7, epoch: 0, sequence: 5)
            )
        else {
            Issue.record("expected out of order")
            return
        }
        #expect(
            try self.append(log, Batches.make(count: 2, producerID: 7, epoch: 0, sequence: 3)).info?.firstOffset == 3
        )
        // An older epoch is fenced once a newer one wrote.
        _ = try self.append(log, Batches.make(count: 1, producerID: 7, epoch: 1, sequence: 0))
        guard
            case .invalidProducerEpoch = try self.append(
                log,
                Batches.make(count: 1, producerID: 7, epoch: 0, sequence: 5)
            )
        else {
            Issue.record("expected a fenced epoch")
            return
        }
    }

    @Test(arguments: [true, false])
    func producerStateSurvivesRestart(clean: Bool) throws {
        defer { self.directory.remove() }
        let retry = Batches.make(count: 2, producerID: 9, epoch: 0, sequence: 6)
        do {
            let (log, _) = try self.open(["segment.bytes": "400"])
            for i in 0..<3 {
                _ = try self.append(log, Batches.make(count: 2, producerID: 9, epoch: 0, sequence: Int32(i * 2)))
            }
            _ = try self.append(log, retry)
            if clean { try log.close() }
        }
        let (log, _) = try self.open(["segment.bytes": "400"])
        guard case .duplicate(let info) = try self.append(log, retry) else {
            Issue.record("the retry was not recognised after restart")
            return
        }
        #expect(info.firstOffset == 6)
        #expect(
            try self.append(log, Batches.make(count: 1, producerID: 9, epoch: 0, sequence: 8)).info?.firstOffset == 8
        )
    }

    /// A lone batch in a buffer of its own (a request frame of one partition) is written and
    /// cached where it is when nothing else references it. One whose buffer someone else still
    /// holds is copied and the other holder's bytes stay as they were; one in a much larger
    /// buffer is copied too, so that the cache does not keep that buffer.
    @Test func aLoneBatchIsAppendedWhereItIsUnlessShared() throws {
        defer { self.directory.remove() }
        let cache = HotCache(bytesMax: 1 << 20, maxAgeMilliseconds: 600_000)
        let (log, _) = try PartitionLog.open(
            directory: self.directory.path + "/orders-0", topicPartition: self.tp, config: LogConfig(), cache: cache)
        let now: Int64 = 1_700_000_000_000
        func address(_ bytes: ByteBuffer) -> Int { bytes.withUnsafeReadableBytes { Int(bitPattern: $0.baseAddress) } }
        func cachedAddress(at offset: Int64) -> Int? {
            log.cachedReader.read(from: offset, maxBytes: 1 << 20, minOneBatch: true, end: .max).map(address)
        }
        /// The batch validated from a buffer of `capacity` bytes that nothing else references,
        /// starting at `position`.
        func alone(_ tag: String, capacity: Int? = nil, position: Int = 0) throws -> [ValidatedBatch] {
            let batch = Batches.make(count: 3, valueBytes: 300, tag: tag)
            var buffer = ByteBufferAllocator().buffer(capacity: capacity ?? batch.readableBytes)
            buffer.moveWriterIndex(forwardBy: position)
            buffer.moveReaderIndex(forwardBy: position)
            buffer.writeImmutableBuffer(batch)
            return try Batches.validated(buffer)
        }

        let own = try alone("a")
        let ownAddress = address(own[0].bytes)
        let ownCapacity = own[0].bytes.storageCapacity
        _ = try log.append(consume own, nowMilliseconds: now)
        #expect(cachedAddress(at: 0) == ownAddress)
        #expect(cache.describe().bytes == ownCapacity, "the cache counts the buffer it keeps")

        var held = Batches.make(count: 3, valueBytes: 300, tag: "b")
        var heldBytes = ByteBufferAllocator().buffer(capacity: held.readableBytes)
        heldBytes.writeBuffer(&held)
        #expect(try log.append(Batches.validated(heldBytes), nowMilliseconds: now).info?.firstOffset == 3)
        #expect(cachedAddress(at: 3) != address(heldBytes))
        #expect(try Batches.offsets(heldBytes) == [0], "the other holder's copy was changed")

        let large = try alone("c", capacity: 64 * 1024, position: 30_000)
        let largeAddress = address(large[0].bytes)
        _ = try log.append(consume large, nowMilliseconds: now)
        #expect(cachedAddress(at: 6) != largeAddress)

        let all = try log.read(from: 0, maxBytes: 1 << 20, minOneBatch: true)
        #expect(try Batches.offsets(all) == [0, 3, 6])
        #expect(try Batches.values(all).map { $0.prefix(3) } == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2", "c-0", "c-1", "c-2"])
        let cached = try (0..<3).map { try Batches.offsets(log.cachedReader.read(from: Int64($0 * 3), maxBytes: 1, minOneBatch: true, end: .max)!) }
        #expect(cached == [[0], [3], [6]])
    }

    @Test func logAppendTimeStampsBatches() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open(["message.timestamp.type": "LogAppendTime"])
        let outcome = try self.append(log, Batches.make(count: 2, timestamp: 5), now: 1_234_567)
        #expect(outcome.info?.logAppendTime == 1_234_567)
        let stored = try RecordBatch.split(log.read(from: 0, maxBytes: 1 << 20, minOneBatch: true))[0]
        #expect(stored.header.isLogAppendTime && stored.header.maxTimestamp == 1_234_567)
        try RecordBatch.validateHeader(stored.header, bytes: stored.bytes)
    }

    @Test func flushPolicyAsksForFsyncs() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open(["flush.messages": "5"])
        _ = try self.append(log, Batches.make(count: 3))
        #expect(log.flushRequest(nowMonotonicMilliseconds: 0) == nil)
        _ = try self.append(log, Batches.make(count: 3))
        let request = try #require(log.flushRequest(nowMonotonicMilliseconds: 0))
        #expect(request.throughOffset == 6)
        for file in request.files { try file.sync() }
        try log.flushed(through: request.throughOffset)
        #expect(log.recoveryPoint == 6)
        let (osLog, _) = try PartitionLog.open(
            directory: self.directory.path + "/other-0",
            topicPartition: TopicPartition("other", 0),
            config: LogConfig()
        )
        _ = try osLog.append(Batches.validated(Batches.make(count: 100)), nowMilliseconds: 0)
        #expect(osLog.flushRequest(nowMonotonicMilliseconds: 1 << 40) == nil, "the OS decides by default")
    }

    static func flipByte(_ path: String, at offset: Int) throws {
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data[offset] ^= 0xFF
        try data.write(to: URL(fileURLWithPath: path))
    }
}

extension PartitionLogTests {
    /// Damage in the middle of the active segment, with good batches after it, is not a torn
    /// tail: recovery refuses to cut acknowledged data and names the file instead.
    @Test func damageBeforeTheTailOfTheActiveSegmentIsReportedNotCut() throws {
        defer { self.directory.remove() }
        let path = self.directory.path + "/orders-0/00000000000000000000.log"
        do {
            let (log, _) = try self.open()
            for _ in 0..<4 { _ = try self.append(log, Batches.make(count: 1, valueBytes: 100)) }
        }
        try Self.flipByte(path, at: 70)
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        #expect {
            _ = try self.open()
        } throws: { error in
            (error as? StorageError)?.code == .corruptSegment && "\(error)".contains("00000000000000000000.log")
        }
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int == size)
    }

    /// Every megabyte appended, the log asks for that range's writeback to start (the OS then
    /// writes it out steadily); the call works on this system.
    /// Writeback starts every megabyte; the pages written back before it, all but the newest
    /// `tail` bytes, leave the page cache (and really do).
    @Test(arguments: [0, 1 << 20])
    func writebackIsDueEveryMegabyte(tail: Int) throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open()
        var started: [Range<Int>] = []
        var released: [Range<Int>] = []
        for _ in 0..<60 {
            _ = try self.append(log, Batches.make(count: 10, valueBytes: 10_000, codec: .none))
            if let due = log.writebackDue(pageCacheTailBytes: tail) {
                try due.run()
                started.append(due.start)
                if let release = due.release { released.append(release) }
            }
        }
        #expect(started.count == 5)
        #expect(started.allSatisfy { $0.count >= 1 << 20 })
        #expect(zip(started, started.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        // Each writeback releases what is now more than `tail` behind it, and nothing twice.
        // Whole pages only: the end rounds down to a page.
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let releasedBelow = (started.last!.lowerBound - tail) / page * page
        #expect(released.first?.lowerBound == 0 && released.last?.upperBound == releasedBelow)
        #expect(released.allSatisfy { $0.lowerBound % page == 0 && $0.upperBound % page == 0 })
        #expect(zip(released, released.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        #if os(Linux)
        let path = self.directory.path + "/orders-0/00000000000000000000.log"
        // tmpfs has nothing to write back: its pages cannot leave memory.
        guard Self.filesystemType(of: path) != "tmpfs" else { return }
        let resident = try Self.residentPages(path, range: 0..<releasedBelow)
        #expect(resident.total > 0)
        #expect(resident.resident * 10 <= resident.total)
        #endif
    }

    /// Without a page-cache tail (Kafka's behaviour) writeback still starts, and nothing is released.
    @Test func withoutATailNothingIsReleased() throws {
        defer { self.directory.remove() }
        let (log, _) = try self.open()
        var writebacks = 0
        for _ in 0..<40 {
            _ = try self.append(log, Batches.make(count: 10, valueBytes: 10_000, codec: .none))
            if let due = log.writebackDue(pageCacheTailBytes: nil) {
                #expect(due.release == nil)
                writebacks += 1
            }
        }
        #expect(writebacks == 3)
    }

    /// A roll leaves the closed segment's indexes and the producer snapshot as deferred file
    /// work: the log is right without them (a crash before they run costs a rebuild on open),
    /// and running the work writes them.
    @Test func aRollLeavesItsIndexesAsDeferredFileWork() throws {
        defer { self.directory.remove() }
        let directory = self.directory.path + "/orders-0"
        let first = "00000000000000000000.index"
        do {
            let (log, _) = try self.open(["segment.bytes": "100000"])
            for i in 0..<12 {
                _ = try self.append(log, Batches.make(count: 10, valueBytes: 1000, codec: .none, tag: "a\(i)"))
            }
            #expect(log.segmentCount >= 2)
            #expect(!FileSystem.exists(directory + "/" + first), "the roll itself writes no index")
            #expect(!log.takeDeferredFileWork().isEmpty)
            #expect(log.takeDeferredFileWork().isEmpty, "taken once")
        }  // the work never ran and the log never closed: as after kill -9
        let (log, report) = try self.open(["segment.bytes": "100000"])
        #expect(report.truncatedBytes == 0)
        #expect(log.logEndOffset == 120)
        #expect(try Batches.values(log.read(from: 5, maxBytes: 1 << 20, minOneBatch: true)).first?.prefix(4) == "a0-0")
        for i in 12..<24 {
            _ = try self.append(log, Batches.make(count: 10, valueBytes: 1000, codec: .none, tag: "a\(i)"))
        }
        try log.takeDeferredFileWork().run()
        let names = try FileSystem.list(directory)
        let closedBases = names.filter { $0.hasSuffix(".log") }.sorted().dropLast().map { $0.dropLast(4) }
        #expect(closedBases.count >= 2)
        let rolledSinceReopen = closedBases.dropFirst(closedBases.count - 1)
        for base in rolledSinceReopen {
            #expect(names.contains(base + ".index") && names.contains(base + ".timeindex"), "\(base) indexed")
        }
        #expect(names.contains { $0.hasSuffix(".snapshot") })
        try log.close()
    }

    /// An active segment reserves file blocks ahead of its writes; a rolled one (once its
    /// deferred file work ran) or a closed one gives back what it did not write, and the log
    /// reopens with exactly what was written.
    @Test func segmentsReserveBlocksAheadAndGiveTheRestBack() throws {
        defer { self.directory.remove() }
        let directory = self.directory.path + "/orders-0"
        var reserves = false
        do {
            let (log, _) = try self.open(["segment.bytes": "100000"])
            let probe = try FileHandle.open(self.directory.path + "/probe", create: true)
            reserves = probe.preallocate(offset: 0, length: 1 << 20) && Self.allocatedBytes(probe.path) >= 1 << 20
            for i in 0..<25 {
                _ = try self.append(log, Batches.make(count: 10, valueBytes: 1000, codec: .none, tag: "p\(i)"))
            }
            #expect(log.segmentCount >= 2)
            try log.takeDeferredFileWork().run()  // what the partition's owner runs off its loop
            let files = try FileSystem.list(directory).filter { $0.hasSuffix(".log") }.sorted()
            for closed in files.dropLast() {
                let path = directory + "/" + closed
                #expect(Self.allocatedBytes(path) <= Self.fileBytes(path) + 4096, "\(closed) gave its reservation back")
            }
            let active = directory + "/" + files.last!
            if reserves {
                #expect(
                    Self.allocatedBytes(active) > Self.fileBytes(active) + 4096,
                    "the active segment reserves ahead"
                )
            }
            try log.close()
            #expect(Self.allocatedBytes(active) <= Self.fileBytes(active) + 4096, "closing gives the reservation back")
        }
        let (log, report) = try self.open(["segment.bytes": "100000"])
        #expect(report.truncatedBytes == 0)
        #expect(log.logEndOffset == 250)
        #expect(try Batches.values(log.read(from: 240, maxBytes: 1 << 20, minOneBatch: true)).last?.prefix(4) == "p24-")
    }

    /// A reservation left by a crash (the log never closed) is given back when the reopened log
    /// closes, though the reopened segment did not reserve anything itself.
    @Test func aReservationLeftByACrashIsGivenBack() throws {
        defer { self.directory.remove() }
        do {
            let (log, _) = try self.open()
            for i in 0..<5 {
                _ = try self.append(log, Batches.make(count: 10, valueBytes: 1000, codec: .none, tag: "c\(i)"))
            }
        }  // no close(): as after kill -9
        let directory = self.directory.path + "/orders-0"
        let active = directory + "/" + (try FileSystem.list(directory).first { $0.hasSuffix(".log") }!)
        let (log, _) = try self.open()
        #expect(log.logEndOffset == 50)
        try log.close()
        #expect(Self.allocatedBytes(active) <= Self.fileBytes(active) + 4096)
    }

    static func allocatedBytes(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_blocks) * 512 : -1
    }

    static func fileBytes(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : -1
    }

    /// The type of the filesystem holding `path`: the longest mount point above it in /proc/mounts.
    static func filesystemType(of path: String) -> String? {
        guard let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return nil }
        var best: (mountPoint: String, type: String)?
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count > 2 else { continue }
            let mountPoint = fields[1]
            let above = mountPoint == "/" || path == mountPoint || path.hasPrefix(mountPoint + "/")
            if above && mountPoint.count > (best?.mountPoint.count ?? -1) { best = (mountPoint, fields[2]) }
        }
        return best?.type
    }

    /// Pages of `range` of the file at `path` in the page cache (mincore), and all of them.
    static func residentPages(_ path: String, range: Range<Int>) throws -> (resident: Int, total: Int) {
        let descriptor = Glibc.open(path, O_RDONLY)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        let mapping = mmap(nil, range.upperBound, PROT_READ, MAP_SHARED, descriptor, 0)
        try #require(mapping != MAP_FAILED)
        defer { munmap(mapping, range.upperBound) }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var vector = [UInt8](repeating: 0, count: (range.upperBound + page - 1) / page)
        try #require(mincore(mapping, range.upperBound, &vector) == 0)
        let pages = vector[(range.lowerBound / page)...]
        return (pages.filter { $0 & 1 != 0 }.count, pages.count)
    }
}
