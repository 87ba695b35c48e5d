import KafkaProtocol
import NIOCore
import RafkaCompression
import RafkaCore
import RafkaStorage
import Testing

@Suite struct HotCacheTests {
    let directory = TemporaryDirectory()

    func open(_ name: String, cache: HotCache, _ overrides: [String: String] = [:]) throws -> PartitionLog {
        try PartitionLog.open(
            directory: self.directory.path + "/" + name, topicPartition: TopicPartition(name, 0), config: LogConfig(overrides: overrides),
            cache: cache
        ).0
    }

    func append(_ log: PartitionLog, _ bytes: ByteBuffer) throws {
        _ = try log.append(Batches.validated(bytes, config: log.config), leaderEpoch: 7, nowMilliseconds: 1_700_000_000_123)
    }

    /// The memory one cached copy of `batch` is counted for: the buffer it is kept in, at
    /// least the batch and at most twice it (ByteBufferAllocator's powers of two).
    func heldBytes(_ batch: ByteBuffer) throws -> Int {
        let probe = HotCache(bytesMax: 1 << 20, maxAgeMilliseconds: 60_000)
        let log = try self.open("probe", cache: probe)
        defer { try? log.deleteFiles() }
        try self.append(log, batch)
        let held = probe.describe().bytes
        #expect(held >= batch.readableBytes && held <= 2 * batch.readableBytes)
        return held
    }

    /// What the cache answers is byte for byte what the segment files hold: offsets, leader
    /// epoch, LogAppendTime stamps and CRCs as written.
    @Test(arguments: ["CreateTime", "LogAppendTime"])
    func cachedReadsEqualTheSegments(timestampType: String) throws {
        defer { self.directory.remove() }
        let cache = HotCache(bytesMax: 1 << 20, maxAgeMilliseconds: 60_000)
        let log = try self.open("t", cache: cache, ["message.timestamp.type": timestampType])
        for tag in ["a", "b", "c"] { try self.append(log, Batches.make(count: 3, tag: tag)) }
        let cached = try log.read(from: 4, maxBytes: 1 << 20, minOneBatch: true)
        #expect(cache.describe().hits == 1 && cache.describe().misses == 0)
        try log.close()
        #expect(cache.describe().bytes == 0, "a closed log leaves the cache")
        let reopened = try self.open("t", cache: .disabled)
        let fromDisk = try reopened.read(from: 4, maxBytes: 1 << 20, minOneBatch: true)
        #expect(cached == fromDisk)
        #expect(try Batches.offsets(cached) == [3, 6])
        for batch in try RecordBatch.split(cached, allowPartialTail: false) {
            #expect(batch.header.partitionLeaderEpoch == 7)
            #expect(RecordBatch.computeCRC(batch.bytes.getSlice(at: batch.bytes.readerIndex, length: batch.bytes.readableBytes)!) == batch.header.crc)
        }
    }

    @Test func readsHonourMaxBytesAndMinOneBatch() throws {
        defer { self.directory.remove() }
        let cache = HotCache(bytesMax: 1 << 20, maxAgeMilliseconds: 60_000)
        let log = try self.open("t", cache: cache)
        for _ in 0..<4 { try self.append(log, Batches.make(count: 1, valueBytes: 500)) }
        let one = try log.read(from: 0, maxBytes: 10, minOneBatch: true)
        #expect(try Batches.offsets(one) == [0])
        #expect(try log.read(from: 0, maxBytes: 10, minOneBatch: false).readableBytes == 0)
        #expect(try Batches.offsets(log.read(from: 1, maxBytes: one.readableBytes * 2 + 100, minOneBatch: true)) == [1, 2])
        #expect(try log.read(from: 4, maxBytes: 1 << 20, minOneBatch: true).readableBytes == 0)
        #expect(cache.describe().misses == 0)
    }

    /// A reader on another thread asks only for what the log's owner published: batches that
    /// end past `end` are not returned, and nil when the one holding the offset does.
    @Test func readsStopAtTheEndAsked() throws {
        defer { self.directory.remove() }
        let cache = HotCache(bytesMax: 1 << 20, maxAgeMilliseconds: 60_000)
        let log = try self.open("t", cache: cache)
        for _ in 0..<3 { try self.append(log, Batches.make(count: 2, valueBytes: 100)) }
        let reader = log.cachedReader
        #expect(try Batches.offsets(#require(reader.read(from: 0, maxBytes: 1 << 20, minOneBatch: true, end: 6))) == [0, 2, 4])
        #expect(try Batches.offsets(#require(reader.read(from: 1, maxBytes: 1 << 20, minOneBatch: true, end: 4))) == [0, 2])
        #expect(reader.read(from: 4, maxBytes: 1 << 20, minOneBatch: true, end: 5) == nil)
        #expect(reader.read(from: 6, maxBytes: 1 << 20, minOneBatch: true, end: 6) == nil)
        #expect(cache.describe().hits == 2)
    }

    /// A read whose size the caller does not admit (the broker's read memory is spent) is nil,
    /// as for batches the cache does not hold, and no hit; `admit` is asked the size returned.
    @Test func readsTheCallerDoesNotAdmitAreNoHits() throws {
        defer { self.directory.remove() }
        let cache = HotCache(bytesMax: 1 << 20, maxAgeMilliseconds: 60_000)
        let log = try self.open("t", cache: cache)
        for _ in 0..<3 { try self.append(log, Batches.make(count: 2, valueBytes: 100)) }
        var asked: [Int] = []
        #expect(log.cachedReader.read(from: 0, maxBytes: 1 << 20, minOneBatch: true, end: 6) { asked.append($0); return false } == nil)
        #expect(cache.describe().hits == 0)
        let all = try #require(log.cachedReader.read(from: 0, maxBytes: 1 << 20, minOneBatch: true, end: 6) { asked.append($0); return true })
        #expect(try Batches.offsets(all) == [0, 2, 4])
        #expect(asked == [all.readableBytes, all.readableBytes])
        #expect(cache.describe().hits == 1)
    }

    /// Over budget, the oldest batches of any partition leave first; reads behind the cache
    /// come from the segments, counted as misses.
    @Test func budgetEvictsOldestFirstAcrossPartitions() throws {
        defer { self.directory.remove() }
        let batch = Batches.make(count: 1, valueBytes: 1000)
        let cache = HotCache(bytesMax: try self.heldBytes(batch) * 10, maxAgeMilliseconds: 60_000)
        let first = try self.open("first", cache: cache)
        let second = try self.open("second", cache: cache)
        for _ in 0..<6 { try self.append(first, batch) }
        for _ in 0..<6 { try self.append(second, batch) }
        let statistics = cache.describe()
        #expect(statistics.batches == 10 && statistics.bytes <= statistics.bytesMax && statistics.evictedForBytes == 2)
        #expect(try Batches.offsets(first.read(from: 0, maxBytes: 1, minOneBatch: true)) == [0])
        #expect(cache.describe().misses == 1)
        #expect(try Batches.offsets(first.read(from: 2, maxBytes: 1, minOneBatch: true)) == [2])
        #expect(try Batches.offsets(second.read(from: 0, maxBytes: 1, minOneBatch: true)) == [0])
        #expect(cache.describe().hits == 2)
        try first.deleteFiles()
        #expect(cache.describe().batches == 6 && cache.describe().partitions == 1)
    }

    @Test func entriesOlderThanTheMaximumAgeLeave() throws {
        defer { self.directory.remove() }
        let cache = HotCache(bytesMax: 1 << 20, maxAgeMilliseconds: 5_000)
        let log = try self.open("t", cache: cache)
        try self.append(log, Batches.make())
        cache.evictExpired(nowMilliseconds: FileSystem.monotonicMilliseconds() + 1_000)
        #expect(cache.describe().batches == 1)
        cache.evictExpired(nowMilliseconds: FileSystem.monotonicMilliseconds() + 5_001)
        #expect(cache.describe().batches == 0 && cache.describe().evictedForAge == 1)
        #expect(try Batches.offsets(log.read(from: 0, maxBytes: 1 << 20, minOneBatch: true)) == [0])
    }

    /// A topic deleted and created again under the same name starts with an empty cache, and
    /// retention takes deleted offsets out of it.
    @Test func recreatedLogsAndRetentionNeverServeOldBatches() throws {
        defer { self.directory.remove() }
        let cache = HotCache(bytesMax: 1 << 20, maxAgeMilliseconds: 60_000)
        let old = try self.open("t", cache: cache, ["segment.bytes": "1024", "retention.bytes": "0"])
        for _ in 0..<3 { try self.append(old, Batches.make(count: 1, valueBytes: 900, tag: "old")) }
        #expect(cache.describe().batches == 3)
        try old.enforceRetention(nowMilliseconds: 1_700_000_000_000)
        #expect(old.logStartOffset == 2 && cache.describe().batches == 1)
        try old.deleteFiles()
        let new = try self.open("t", cache: cache)
        try self.append(new, Batches.make(count: 1, tag: "new"))
        #expect(try Batches.values(new.read(from: 0, maxBytes: 1 << 20, minOneBatch: true)).map { $0.prefix(3) } == ["new"])
    }

    /// Copied batches (a takeover) are not cached; the next append starts a new run, and the
    /// cache never returns a run with a hole.
    @Test func aCopyBreaksTheRun() throws {
        defer { self.directory.remove() }
        let cache = HotCache(bytesMax: 1 << 20, maxAgeMilliseconds: 60_000)
        let source = try self.open("source", cache: .disabled)
        for _ in 0..<2 { try self.append(source, Batches.make(count: 2)) }
        let log = try self.open("t", cache: cache)
        try self.append(log, Batches.make(count: 2))
        try log.appendReplicated(Array(Batches.validated(source.read(from: 2, maxBytes: 1 << 20, minOneBatch: true))))
        #expect(cache.describe().batches == 1)
        try self.append(log, Batches.make(count: 2))
        #expect(cache.describe().batches == 1)
        #expect(try Batches.offsets(log.read(from: 0, maxBytes: 1 << 20, minOneBatch: true)) == [0, 2, 4])
        #expect(cache.describe().misses == 1)
        #expect(try Batches.offsets(log.read(from: 4, maxBytes: 1 << 20, minOneBatch: true)) == [4])
        #expect(cache.describe().hits == 1)
    }

    /// Many logs opened, filled and closed: the cache's bookkeeping stays exact and bounded.
    @Test func churnKeepsTheAccountsExact() throws {
        defer { self.directory.remove() }
        let batch = Batches.make(count: 1, valueBytes: 200)
        let held = try self.heldBytes(batch)
        let cache = HotCache(bytesMax: held * 50, maxAgeMilliseconds: 60_000)
        var open: [PartitionLog] = []
        for round in 0..<200 {
            let log = try self.open("p\(round)", cache: cache)
            for _ in 0..<3 { try self.append(log, batch) }
            open.append(log)
            if open.count > 8 { try open.removeFirst().close() }
        }
        let statistics = cache.describe()
        #expect(statistics.batches == 24 && statistics.bytes == 24 * held && statistics.partitions == 8)
        for log in open { try log.close() }
        #expect(cache.describe().bytes == 0 && cache.describe().batches == 0)
    }

    /// An append with a batch over a tenth of the budget keeps none of its batches (they share
    /// one buffer), and a log dropped without a clean close leaves the cache.
    @Test func oversizedAppendsAndDroppedLogsLeaveNothingBehind() throws {
        defer { self.directory.remove() }
        let small = Batches.make(count: 1, valueBytes: 100)
        let cache = HotCache(bytesMax: small.readableBytes * 40, maxAgeMilliseconds: 60_000)
        do {
            let log = try self.open("t", cache: cache)
            try self.append(log, small)
            #expect(cache.describe().batches == 1)
            var both = small
            both.writeImmutableBuffer(Batches.make(count: 1, valueBytes: small.readableBytes * 5, codec: .none))
            try self.append(log, both)
            #expect(cache.describe().batches == 0 && cache.describe().bytes == 0)
            try self.append(log, small)
            #expect(cache.describe().batches == 1)
        }
        #expect(cache.describe().batches == 0 && cache.describe().partitions == 0)
    }
}
