import Logging
import NIOCore
import NIOPosix
@testable import RafkaServer
import Testing

@Suite struct LoopStallWatchTests {
    /// A task that keeps its loop busy for 300 ms delays the check due meanwhile by about that
    /// much: one stall is counted, as long as the task blocked the loop at most.
    @Test func aTaskThatBlocksItsLoopIsCounted() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let watch = LoopStallWatch(
            period: .milliseconds(5), countedFrom: .milliseconds(150), loggedFrom: .milliseconds(150),
            logger: Logger(label: "test"))
        watch.watch(group)
        let loop = group.next()
        let blocked = try await loop.submit { () -> TimeAmount in
            let start = NIODeadline.now()
            while NIODeadline.now() - start < .milliseconds(300) {}
            return NIODeadline.now() - start
        }.get()
        // The overdue check runs on the loop's next turns; wait for it on the loop, not a clock.
        var stalls = LoopStallWatch.Stalls()
        let deadline = NIODeadline.now() + .seconds(10)
        while stalls.count == 0 && NIODeadline.now() < deadline {
            try await loop.submit {}.get()
            let taken = watch.take()
            stalls.count += taken.count
            stalls.longestNanoseconds = max(stalls.longestNanoseconds, taken.longestNanoseconds)
        }
        #expect(stalls.count >= 1)
        #expect(stalls.longestNanoseconds >= TimeAmount.milliseconds(150).nanoseconds)
        #expect(stalls.longestNanoseconds <= blocked.nanoseconds + TimeAmount.milliseconds(100).nanoseconds)
        watch.stop()
        try await group.shutdownGracefully()
    }
}
