import Foundation
import KafkaProtocol
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
@testable import RafkaServer
import RafkaCore
import RafkaStorage
import Testing

@Suite struct PartitionShellTests {
    /// A partition's log is opened (its files created, or a log recovered) on the thread pool, not
    /// on the event loop that will run it: with every pool thread held, the open waits while the
    /// loop goes on serving, and completes once a thread is free.
    @Test func aLogIsOpenedOnTheThreadPoolNotItsLoop() async throws {
        let directory = NSTemporaryDirectory() + "rafka-shell-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let loop = group.next()
        let released = ConditionLock(value: false)
        let held = pool.runIfActive(eventLoop: loop) {
            released.lock(whenValue: true)
            released.unlock()
        }
        let opening = PartitionShell.open(
            topicPartition: TopicPartition("orders", 0), topicID: KafkaUUID.random(), directory: directory + "/orders-0",
            config: try LogConfig(), cache: .disabled, pageCacheTailBytes: nil, on: loop, threadPool: pool,
            writebackPool: pool, logger: Logger(label: "test"), onFailure: { _, _ in })
        for _ in 0..<20 { try await loop.submit {}.get() }
        #expect(!FileManager.default.fileExists(atPath: directory + "/orders-0"), "nothing opened while the pool is held")
        released.lock()
        released.unlock(withValue: true)
        try await held.get()
        let shell = try await opening.get()
        #expect(shell.eventLoop === loop)
        #expect(FileManager.default.fileExists(atPath: directory + "/orders-0/00000000000000000000.log"))
        try await shell.close().get()
        try await pool.shutdownGracefully()
        try await group.shutdownGracefully()
    }

    /// A shell on one loop over a fresh directory, its fsyncs on a one-thread pool that a test
    /// can hold (`holdFsyncs`), no maintenance running; closed and shut down after `body`.
    private static func withShell(
        _ config: LogConfig,
        _ body: (PartitionShell, any EventLoop, NIOThreadPool) async throws -> Void
    ) async throws {
        let directory = NSTemporaryDirectory() + "rafka-shell-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let fsyncPool = NIOThreadPool(numberOfThreads: 1)
        let writebackPool = NIOThreadPool(numberOfThreads: 1)
        fsyncPool.start()
        writebackPool.start()
        let loop = group.next()
        let shell = try await PartitionShell.open(
            topicPartition: TopicPartition("orders", 0), topicID: KafkaUUID.random(), directory: directory + "/orders-0",
            config: config, cache: .disabled, pageCacheTailBytes: nil, on: loop, threadPool: fsyncPool,
            writebackPool: writebackPool, logger: Logger(label: "test"), onFailure: { _, _ in }
        ).get()
        try await body(shell, loop, fsyncPool)
        try await shell.close().get()
        try await fsyncPool.shutdownGracefully()
        try await writebackPool.shutdownGracefully()
        try await group.shutdownGracefully()
    }

    /// Takes the fsync pool's only thread until the returned function is awaited.
    private static func holdFsyncs(_ pool: NIOThreadPool, _ loop: any EventLoop) -> () async throws -> Void {
        let released = ConditionLock(value: false)
        let held = pool.runIfActive(eventLoop: loop) {
            released.lock(whenValue: true)
            released.unlock()
        }
        return {
            released.lock()
            released.unlock(withValue: true)
            try await held.get()
        }
    }

    /// Starts an append of `values`; the future completes when it is acknowledged, and `answered`
    /// tells whether it was.
    private static func startAppend(
        _ shell: PartitionShell, _ loop: any EventLoop, _ config: LogConfig, _ values: [String]
    ) -> (outcome: EventLoopFuture<AppendOutcome>, answered: @Sendable () -> Bool) {
        let done = loop.makePromise(of: AppendOutcome.self)
        let answered = NIOLockedValueBox(false)
        shell.append(validating: BrokerProtocolTests.batch(values), config: config) { result in
            answered.withLockedValue { $0 = true }
            done.completeWith(result)
        }
        return (done.futureResult, { answered.withLockedValue { $0 } })
    }

    /// As in Kafka, an fsync that `flush.ms` makes due does not hold the acknowledgement of the
    /// append that started it (nor of those arriving while it runs), while an append that reaches
    /// `flush.messages` waits for an fsync that covers it. With the fsync pool's only thread held,
    /// the first append completes at once and the second only once the thread is free.
    @Test func onlyFlushMessagesHoldsAnAppendForItsFsync() async throws {
        let byTime = try LogConfig(overrides: ["flush.ms": "0"])
        try await Self.withShell(byTime) { shell, loop, fsyncPool in
            let release = Self.holdFsyncs(fsyncPool, loop)
            let first = Self.startAppend(shell, loop, byTime, ["a"])
            let byCount = try LogConfig(overrides: ["flush.messages": "1"])
            shell.update(config: byCount)
            let second = Self.startAppend(shell, loop, byCount, ["b"])
            for _ in 0..<20 { try await loop.submit {}.get() }
            #expect(first.answered(), "the flush.ms append is acknowledged while its fsync waits")
            #expect(!second.answered(), "the flush.messages append waits for an fsync")
            try await release()
            let outcome = try await second.outcome.get()
            if case .appended(let info) = outcome {
                #expect(info.firstOffset == 1)
            } else {
                Issue.record("the second append was not appended: \(outcome)")
            }
        }
    }

    /// `flush.ms` bounds how long an appended record waits for an fsync even when no append
    /// follows it: the partition's timer fsyncs it once `flush.ms` has passed since the fsync
    /// before (here, since the log opened). Records appended while that fsync runs get the next
    /// one when it completes. No maintenance runs in this test, so nothing else would fsync.
    @Test func flushMsFsyncsAPartitionThatStoppedReceivingAppends() async throws {
        let config = try LogConfig(overrides: ["flush.ms": "300"])
        try await Self.withShell(config) { shell, loop, fsyncPool in
            _ = try await Self.startAppend(shell, loop, config, ["a"]).outcome.get()
            #expect(try await Self.durableEnd(of: shell, reaching: 1, within: .seconds(3)) == 1)
            // With the fsync pool's thread held, the next timed fsync (or the append's own, on a
            // slow machine) waits, and "c" lands while it is in flight.
            let release = Self.holdFsyncs(fsyncPool, loop)
            _ = try await Self.startAppend(shell, loop, config, ["b"]).outcome.get()
            let started = try await eventually(on: loop, within: .seconds(3)) { try await shell.fsyncInFlight().get() }
            #expect(started, "no fsync started for b")
            _ = try await Self.startAppend(shell, loop, config, ["c"]).outcome.get()
            #expect(try await shell.durableEnd().get() == 1, "no fsync completes while the pool is held")
            try await release()
            #expect(
                try await Self.durableEnd(of: shell, reaching: 3, within: .seconds(3)) == 3,
                "the append made during the fsync is fsynced after it")
        }
    }

    /// A segment rolled by an append is fsynced soon after, without any flush policy and without
    /// a periodic check (no maintenance runs here): the recovery point moves to the new active
    /// segment's base, past every rolled one.
    @Test func rolledSegmentsAreFsyncedWithoutAPeriodicCheck() async throws {
        let config = try LogConfig(overrides: ["segment.bytes": "200"])
        try await Self.withShell(config) { shell, loop, _ in
            for index in 0..<5 {
                _ = try await Self.startAppend(shell, loop, config, [String(repeating: "x", count: 100 + index)]).outcome.get()
            }
            // Each 170-byte batch fills a segment: the fifth append rolled the fourth segment.
            #expect(try await Self.durableEnd(of: shell, reaching: 4, within: .seconds(3)) == 4)
        }
    }

    /// Under `flush.messages=1` an append that rolls a segment is acknowledged only once an fsync
    /// covers it, like any other: the fsync of the rolled segment must not take the one the
    /// append waits for. With the fsync pool held, the rolling append stays unanswered.
    @Test func aRollingAppendUnderFlushMessagesWaitsForItsFsync() async throws {
        let config = try LogConfig(overrides: ["segment.bytes": "200", "flush.messages": "1"])
        try await Self.withShell(config) { shell, loop, fsyncPool in
            _ = try await Self.startAppend(shell, loop, config, [String(repeating: "a", count: 100)]).outcome.get()
            let release = Self.holdFsyncs(fsyncPool, loop)
            let rolling = Self.startAppend(shell, loop, config, [String(repeating: "b", count: 100)])
            for _ in 0..<20 { try await loop.submit {}.get() }
            #expect(!rolling.answered(), "the rolling append was acknowledged before its fsync")
            try await release()
            _ = try await rolling.outcome.get()
            #expect(try await shell.durableEnd().get() == 2)
        }
    }

    /// The shell's durable end once it reaches `offset`, or when `limit` passes.
    private static func durableEnd(of shell: PartitionShell, reaching offset: Int64, within limit: TimeAmount) async throws -> Int64 {
        _ = try await eventually(on: shell.eventLoop, within: limit) { try await shell.durableEnd().get() >= offset }
        return try await shell.durableEnd().get()
    }
}
