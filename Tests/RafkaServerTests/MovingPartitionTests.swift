import KafkaProtocol
import NIOCore
import NIOPosix
import RafkaClient
import RafkaCore
import RafkaStorage
@testable import RafkaServer
import Synchronization
import Testing

/// What a partition on the move looks like to clients of the node taking it over, and how data
/// nodes hear of the move: requests for a partition being taken over wait for it
/// (`ReplicaManager.arrivals`), and a metadata long poll is answered as soon as something commits
/// (`RaftShell.waitCommitted`). Run on a standalone broker, whose replica manager and metadata
/// quorum are the ones data nodes and controllers use.
@Suite(.tags(.integration), .serialized) struct MovingPartitionTests {
    /// Whether a request was answered, set from its loop.
    final class Answered: Sendable {
        private let flag = Atomic<Bool>(false)
        func set() { self.flag.store(true, ordering: .relaxed) }
        var value: Bool { self.flag.load(ordering: .relaxed) }
    }

    /// A produce and a fetch of a partition being taken over wait until it is served, then are
    /// answered as if it had been all along.
    @Test func requestsForAPartitionBeingTakenOverWaitForIt() async throws {
        try await TestBroker.with({ $0.autoCreateTopics = false }) { broker in
            let client = try await broker.connect()
            defer { client.close() }
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
            let loop = broker.broker.group.next()
            let apis = KafkaAPIs(broker: broker.broker)
            let produceContext = RequestContext(apiKey: .produce, apiVersion: 10, correlationID: 1, clientID: nil, eventLoop: loop)
            let fetchContext = RequestContext(apiKey: .fetch, apiVersion: 16, correlationID: 2, clientID: nil, eventLoop: loop)
            let (producedAnswer, fetchedAnswer) = (Answered(), Answered())
            // Both handled on the loop: each reaches the partition, finds it arriving and waits.
            let (produced, fetched) = try await loop.submit {
                let produced = apis.produce(BrokerProtocolTests.produce("arriving", ["after"]), produceContext)
                produced.whenComplete { _ in producedAnswer.set() }
                let fetched = FetchOperation(
                    request: BrokerProtocolTests.fetch(topicID, offset: 1, maxWaitMs: 20_000), context: fetchContext,
                    broker: broker.broker
                ).run()
                fetched.whenComplete { _ in fetchedAnswer.set() }
                return (produced, fetched)
            }.get()
            try await loop.submit {}.get()
            #expect(!producedAnswer.value && !fetchedAnswer.value, "answered before the partition was served")
            try replicas.serve(tp, leaderEpoch: 0)
            let produce = try #require(try await produced.get()).responses[0].partitionResponses[0]
            #expect(produce.errorCode == 0 && produce.baseOffset == 1)
            let fetch = try await fetched.get().0.responses[0].partitions[0]
            #expect(fetch.errorCode == 0 && fetch.highWatermark == 2)
            let batches = try RecordBatch.split(fetch.records ?? ByteBuffer())
            #expect(batches.map(\.header.baseOffset) == [1])
        }
    }

    /// A takeover that ends without serving the partition (another node leads it after all)
    /// releases the requests waiting for it; one that has gone on for `arrivalWaitMax` holds
    /// none, so they get its error at once.
    @Test func aTakeoverThatEndsOtherwiseOrRunsLongReleasesItsWaiters() async throws {
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
            waiting.whenComplete { _ in released.set() }
            try await loop.submit {}.get()
            #expect(!released.value)
            replicas.endArrival(tp)
            try await waiting.get()
            #expect(!replicas.isArriving(tp))
            // Begun longer ago than requests wait: none waits.
            replicas.expectArrival(tp, since: .now() - ReplicaManager.arrivalWaitMax - .seconds(1))
            #expect(!replicas.isArriving(tp))
            try await replicas.whenArrived([tp], on: loop, within: .seconds(30)).get()
            replicas.endArrivals()
        }
    }

    /// OffsetForLeaderEpoch (KIP-320), which a consumer asks after its partition's leader epoch
    /// changed, in standalone (every batch in epoch 0; several epochs are `LeaderEpochHistoryTests`
    /// and test_ring.py's): the current epoch ends at the log end; a newer current epoch than the
    /// broker's, or an unknown partition, is an error; an epoch not reached is undefined.
    @Test func offsetForLeaderEpochAnswersTheLogEnd() async throws {
        try await TestBroker.with({ $0.autoCreateTopics = false }) { broker in
            let client = try await broker.connect()
            defer { client.close() }
            _ = try await client.send(CreateTopicsRequest(topics: [.init(name: "epochs", numPartitions: 1, replicationFactor: 1)], timeoutMs: 5000))
            _ = try await client.send(BrokerProtocolTests.produce("epochs", ["a", "b", "c"]), version: 10)
            func ask(_ topic: String, current: Int32, epoch: Int32) async throws -> OffsetForLeaderEpochResponse.EpochEndOffset {
                let request = OffsetForLeaderEpochRequest(
                    replicaId: -1, topics: [.init(topic: topic, partitions: [.init(partition: 0, currentLeaderEpoch: current, leaderEpoch: epoch)])])
                return try await client.send(request, version: 4).topics[0].partitions[0]
            }
            #expect(try await ask("epochs", current: 0, epoch: 0) == .init(errorCode: 0, partition: 0, leaderEpoch: 0, endOffset: 3))
            #expect(try await ask("epochs", current: -1, epoch: 0).endOffset == 3)
            #expect(try await ask("epochs", current: 0, epoch: 1) == .init(errorCode: 0, partition: 0, leaderEpoch: -1, endOffset: -1))
            #expect(try await ask("epochs", current: 5, epoch: 0).errorCode == KafkaErrorCode.unknownLeaderEpoch.rawValue)
            #expect(try await ask("missing", current: -1, epoch: 0).errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
        }
    }

    /// A data node's long poll of the metadata log: with nothing new it waits (here not at all,
    /// and reports nothing committed); it is answered when an entry commits.
    @Test func aMetadataLongPollIsAnsweredWhenSomethingCommits() async throws {
        try await TestBroker.with { broker in
            guard case .local(let quorum, _) = broker.broker.control else {
                Issue.record("a standalone broker has its own quorum")
                return
            }
            let start = await quorum.committed(after: LogIndex(0), limit: 0).commit
            let topics = await quorum.image.topics.count
            async let polled = quorum.waitCommitted(after: start, limit: .seconds(30))
            let client = try await broker.connect()
            defer { client.close() }
            _ = try await client.send(CreateTopicsRequest(topics: [.init(name: "news", numPartitions: 1, replicationFactor: 1)], timeoutMs: 5000))
            #expect(await polled, "the poll ended without a commit")
            let now = await quorum.committed(after: LogIndex(0), limit: 0).commit
            #expect(await quorum.waitCommitted(after: now, limit: .zero) == false)
            #expect(await quorum.image.topics.count == topics + 1)
        }
    }
}
