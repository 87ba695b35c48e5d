import KafkaProtocol
import NIOCore
import NIOPosix
import RafkaClient
import RafkaCore
@testable import RafkaServer
import Synchronization
import Testing

/// What a partition on the move looks like to clients of the node taking it over, and how data
/// nodes hear of the move: requests for a partition being taken over wait for it
/// (`ReplicaManager.arrivals`), and a metadata long poll is answered as soon as something commits
/// (`RaftShell.waitCommitted`). Run on a standalone broker, whose replica manager and metadata
/// quorum are the ones data nodes and controllers use.
@Suite(.tags(.integration), .serialized) struct MovingPartitionTests {
    /// How many of a test's requests were answered so far, from any task.
    final class Answered: Sendable {
        private let count = Atomic<Int>(0)
        func add() { self.count.add(1, ordering: .relaxed) }
        var value: Int { self.count.load(ordering: .relaxed) }
    }

    /// A produce and a fetch of a partition being taken over wait until it is served, then are
    /// answered as if it had been all along.
    @Test func requestsForAPartitionBeingTakenOverWaitForIt() async throws {
        try await TestBroker.with({ $0.autoCreateTopics = false }) { broker in
            let client = try await broker.connect()
            let created = try await client.send(
                CreateTopicsRequest(topics: [.init(name: "arriving", numPartitions: 1, replicationFactor: 1)], timeoutMs: 5000))
            let topicID = created.topics[0].topicId
            let first = try await client.send(BrokerProtocolTests.produce("arriving", ["before"]), version: 10)
            #expect(first.responses[0].partitionResponses[0].errorCode == 0)
            // As a node taking the partition over sees it: a copy not served yet, and a takeover under way.
            let tp = TopicPartition("arriving", 0)
            let replicas = broker.broker.replicas
            replicas.retire(tp)
            replicas.expectArrival(tp)
            let producer = try await broker.connect()
            let consumer = try await broker.connect()
            let answered = Answered()
            async let produced = {
                defer { answered.add() }
                return try await producer.send(BrokerProtocolTests.produce("arriving", ["after"]), version: 10)
            }()
            async let fetched = {
                defer { answered.add() }
                return try await consumer.send(BrokerProtocolTests.fetch(topicID, offset: 1, maxWaitMs: 20_000), version: 16)
            }()
            try await Task.sleep(for: .milliseconds(300))
            #expect(answered.value == 0, "answered before the partition was served")
            try replicas.serve(tp, leaderEpoch: 0)
            let produce = try await produced.responses[0].partitionResponses[0]
            #expect(produce.errorCode == 0 && produce.baseOffset == 1)
            let fetch = try await fetched.responses[0].partitions[0]
            #expect(fetch.errorCode == 0 && fetch.highWatermark == 2)
            let batches = try RecordBatch.split(fetch.records ?? ByteBuffer())
            #expect(batches.map(\.header.baseOffset) == [1])
            for connection in [client, producer, consumer] { connection.close() }
        }
    }

    /// A takeover that ends without serving the partition (another node leads it after all)
    /// releases the requests waiting for it, which are then turned away; one that never ends
    /// lets them go after their wait.
    @Test func aTakeoverThatEndsOtherwiseReleasesItsWaiters() async throws {
        try await TestBroker.with { broker in
            let replicas = broker.broker.replicas
            let loop = broker.broker.group.next()
            let tp = TopicPartition("elsewhere", 3)
            #expect(!replicas.isArriving(tp))
            try await replicas.whenArrived([tp], on: loop, within: .seconds(30)).get()  // nothing to wait for
            replicas.expectArrival(tp)
            #expect(replicas.isArriving(tp))
            let released = Answered()
            let waiting = replicas.whenArrived([tp], on: loop, within: .seconds(30))
            waiting.whenComplete { _ in released.add() }
            try await Task.sleep(for: .milliseconds(100))
            #expect(released.value == 0)
            replicas.endArrival(tp)
            try await waiting.get()
            #expect(!replicas.isArriving(tp))
            // Still arriving when its wait is up: the request goes on (and is turned away).
            replicas.expectArrival(tp)
            try await replicas.whenArrived([tp], on: loop, within: .milliseconds(50)).get()
            #expect(replicas.isArriving(tp))
            replicas.endArrivals(except: [])
            #expect(!replicas.isArriving(tp))
        }
    }

    /// A data node's long poll of the metadata log: answered when an entry commits, not before;
    /// and after its wait when nothing does.
    @Test func aMetadataLongPollIsAnsweredWhenSomethingCommits() async throws {
        try await TestBroker.with { broker in
            guard case .local(let quorum, _) = broker.broker.control else {
                Issue.record("a standalone broker has its own quorum")
                return
            }
            // Once the broker's own start (registering its node) has committed.
            var settled = await quorum.committed(after: LogIndex(0), limit: 0).commit
            while true {
                try await Task.sleep(for: .milliseconds(100))
                let now = await quorum.committed(after: LogIndex(0), limit: 0).commit
                if now == settled { break }
                settled = now
            }
            let start = settled
            // Nothing commits: answered after its wait, with nothing new.
            await quorum.waitCommitted(after: start, limit: .milliseconds(50))
            #expect(await quorum.committed(after: start, limit: 10).entries.isEmpty)
            let answered = Answered()
            async let polled: Void = {
                await quorum.waitCommitted(after: start, limit: .seconds(30))
                answered.add()
            }()
            try await Task.sleep(for: .milliseconds(200))
            #expect(answered.value == 0, "answered before anything committed")
            let client = try await broker.connect()
            _ = try await client.send(CreateTopicsRequest(topics: [.init(name: "news", numPartitions: 1, replicationFactor: 1)], timeoutMs: 5000))
            await polled
            #expect(!(await quorum.committed(after: start, limit: 10).entries.isEmpty))
            client.close()
        }
    }
}
