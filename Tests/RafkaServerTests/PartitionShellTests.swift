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
}
