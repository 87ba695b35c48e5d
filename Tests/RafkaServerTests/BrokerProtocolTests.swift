import KafkaProtocol
import NIOCore
import NIOPosix
import RafkaClient
import RafkaCore
@testable import RafkaServer
import RafkaStorage
import Testing

@Suite(.tags(.integration), .serialized) struct BrokerProtocolTests {
    @Test func apiVersionsEveryVersionAndAnUnknownOne() async throws {
        try await TestBroker.with { broker in
            let socket = try RawSocket(port: broker.port)
            for version in Int16(0)...4 {
                socket.send(requestFrame(ApiVersionsRequest(clientSoftwareName: "t", clientSoftwareVersion: "1"), version: version, correlationID: Int32(version)))
                var frame = try #require(socket.readFrame())
                #expect(frame.readInteger(as: Int32.self) == Int32(version))
                let response = try ApiVersionsResponse.decodeWhole(frame, version: version)
                #expect(response.errorCode == 0)
                #expect(response.apiKeys.contains { $0.apiKey == 0 && $0.minVersion == 3 && $0.maxVersion >= 9 })
            }
            // A version from the future: answered in v0 with UNSUPPORTED_VERSION and our table (KIP-511).
            var future = ByteBuffer()
            future.writeInteger(Int32(0))
            future.writeInteger(Int16(18))
            future.writeInteger(Int16(99))
            future.writeInteger(Int32(77))
            future.writeBytes([0, 1, 0x74, 0x00, 0xFF, 0xFE])  // client id "t", no tags, then a body we cannot know
            future.setInteger(Int32(future.readableBytes - 4), at: 0)
            socket.send(future)
            var frame = try #require(socket.readFrame())
            #expect(frame.readInteger(as: Int32.self) == 77)
            let response = try ApiVersionsResponse.decodeWhole(frame, version: 0)
            #expect(response.errorCode == KafkaErrorCode.unsupportedVersion.rawValue)
            #expect(!response.apiKeys.isEmpty)
        }
    }

    enum HostileFrame: String, CaseIterable, Sendable {
        case unknownAPIKey, unsupportedProduceVersion, negativeSize, overMaximum, belowHeader, lyingLength

        var bytes: ByteBuffer {
            var b = ByteBuffer()
            switch self {
            case .unknownAPIKey:
                b.writeInteger(Int32(10))
                b.writeInteger(Int16(9999))
                b.writeInteger(Int16(0))
                b.writeInteger(Int32(1))
                b.writeInteger(Int16(-1))
            case .unsupportedProduceVersion:
                b = requestFrame(ProduceRequest(), version: 2, correlationID: 1)
            case .negativeSize:
                b.writeInteger(Int32(-1))
            case .overMaximum:
                b.writeInteger(Int32.max)
            case .belowHeader:
                b.writeInteger(Int32(3))
                b.writeBytes([1, 2, 3])
            case .lyingLength:
                b = requestFrame(MetadataRequest(topics: [.init(name: "x")]), version: 1, correlationID: 1)
                b.setInteger(Int32.max, at: b.writerIndex - 7)  // the topic count
            }
            return b
        }
    }

    @Test(arguments: HostileFrame.allCases)
    func hostileFramesCloseTheConnectionAndOthersAreServed(frame: HostileFrame) async throws {
        try await TestBroker.with { broker in
            let hostile = try RawSocket(port: broker.port)
            hostile.send(frame.bytes)
            #expect(hostile.isClosedByPeer(), "\(frame): connection left open")
            let client = try await broker.connect()
            let metadata = try await client.send(MetadataRequest(topics: nil))
            #expect(metadata.brokers.count == 1)
            client.close()
        }
    }

    /// Thirty pipelined requests, some slow (auto-creating topics), come back in order.
    @Test func pipelinedResponsesKeepRequestOrder() async throws {
        try await TestBroker.with { broker in
            let socket = try RawSocket(port: broker.port)
            var burst = ByteBuffer()
            for i in Int32(0)..<30 {
                if i % 3 == 0 {
                    burst.writeImmutableBuffer(requestFrame(MetadataRequest(topics: [.init(name: "auto-\(i)")]), version: 9, correlationID: i))
                } else {
                    burst.writeImmutableBuffer(requestFrame(ApiVersionsRequest(), version: 0, correlationID: i))
                }
            }
            socket.send(burst)
            for i in Int32(0)..<30 {
                var frame = try #require(socket.readFrame())
                #expect(frame.readInteger(as: Int32.self) == i)
            }
        }
    }

    static func batch(_ values: [String]) -> ByteBuffer {
        let records = values.enumerated().map { i, value in
            Record(offsetDelta: Int32(i), value: ByteBuffer(string: value))
        }
        return RecordBatch.build(header: RecordBatchHeader(baseTimestamp: 1_000, maxTimestamp: 1_000), records: records) { $0 }
    }

    static func produce(_ topic: String, _ values: [String], acks: Int16 = 1) -> ProduceRequest {
        ProduceRequest(acks: acks, timeoutMs: 5000, topicData: [.init(name: topic, partitionData: [.init(index: 0, records: Self.batch(values))])])
    }

    static func fetch(_ topic: KafkaUUID, offset: Int64, maxWaitMs: Int32) -> FetchRequest {
        FetchRequest(
            replicaId: -1, maxWaitMs: maxWaitMs, minBytes: 1, maxBytes: 1 << 20,
            topics: [.init(topicId: topic, partitions: [.init(partition: 0, fetchOffset: offset, partitionMaxBytes: 1 << 20)])])
    }

    /// A fetch at the log end waits; a produce wakes it with the new records.
    @Test func longPollFetchIsWokenByProduce() async throws {
        try await TestBroker.with { broker in
            let client = try await broker.connect()
            let created = try await client.send(CreateTopicsRequest(topics: [.init(name: "poll", numPartitions: 1, replicationFactor: 1)], timeoutMs: 1000))
            let topicID = created.topics[0].topicId
            let consumer = try await broker.connect()
            async let fetched = consumer.send(Self.fetch(topicID, offset: 0, maxWaitMs: 30_000), version: 13)
            let produced = try await client.send(Self.produce("poll", ["hello", "world"]), version: 9)
            #expect(produced.responses[0].partitionResponses[0].errorCode == 0)
            let response = try await fetched
            let data = response.responses[0].partitions[0]
            #expect(data.errorCode == 0)
            #expect(data.highWatermark == 2)
            let batches = try RecordBatch.split(data.records!)
            #expect(batches.count == 1 && batches[0].header.recordCount == 2)
            client.close()
            consumer.close()
        }
    }

    /// acks=0 produces get no response, and the next request's response is not confused with one.
    @Test func acksZeroSendsNothing() async throws {
        try await TestBroker.with { broker in
            let socket = try RawSocket(port: broker.port)
            socket.send(requestFrame(Self.produce("quiet", ["a"], acks: 0), version: 9, correlationID: 1))
            socket.send(requestFrame(ApiVersionsRequest(), version: 0, correlationID: 2))
            var frame = try #require(socket.readFrame())
            #expect(frame.readInteger(as: Int32.self) == 2)
            let client = try await broker.connect()
            let offsets = try await client.send(
                ListOffsetsRequest(replicaId: -1, topics: [.init(name: "quiet", partitions: [.init(partitionIndex: 0, timestamp: -1)])]), version: 5)
            #expect(offsets.topics[0].partitions[0].offset == 1)
            client.close()
        }
    }

    /// ListOffsets answers the log ends on the connection's loop from what each partition last
    /// published and searches by time on the partitions' loops; mixed in one request, over two
    /// topics, every partition is answered in request order, and a producer reads its own writes.
    @Test func listOffsetsAnswersEndsAndSearchesInRequestOrder() async throws {
        try await TestBroker.with({ $0.autoCreateTopics = false }) { broker in
            let client = try await broker.connect()
            _ = try await client.send(CreateTopicsRequest(topics: [
                .init(name: "left", numPartitions: 3, replicationFactor: 1, configs: []),
                .init(name: "right", numPartitions: 2, replicationFactor: 1, configs: []),
            ]))
            let produced = try await client.send(
                ProduceRequest(acks: 1, timeoutMs: 5000, topicData: [
                    .init(name: "left", partitionData: [.init(index: 1, records: Self.batch(["a", "b", "c"]))]),
                    .init(name: "right", partitionData: [.init(index: 0, records: Self.batch(["d", "e"]))]),
                ]),
                version: 9)
            #expect(produced.responses.flatMap(\.partitionResponses).allSatisfy { $0.errorCode == 0 })
            typealias Ask = ListOffsetsRequest.ListOffsetsPartition
            let request = ListOffsetsRequest(replicaId: -1, topics: [
                .init(name: "right", partitions: [
                    Ask(partitionIndex: 0, timestamp: -1), Ask(partitionIndex: 0, timestamp: 1_000),
                    Ask(partitionIndex: 5, timestamp: -1), Ask(partitionIndex: 1, timestamp: -2),
                ]),
                .init(name: "left", partitions: [
                    Ask(partitionIndex: 1, timestamp: 2_000), Ask(partitionIndex: 1, timestamp: -1),
                    Ask(partitionIndex: 1, timestamp: -3), Ask(partitionIndex: 2, timestamp: -1),
                    Ask(partitionIndex: 0, timestamp: -7), Ask(partitionIndex: 1, timestamp: -2),
                ]),
            ])
            let response = try await client.send(request, version: 7)
            #expect(response.topics.map(\.name) == ["right", "left"])
            let right = response.topics[0].partitions
            let left = response.topics[1].partitions
            #expect(right.map(\.partitionIndex) == [0, 0, 5, 1])
            #expect(left.map(\.partitionIndex) == [1, 1, 1, 2, 0, 1])
            #expect(right.map(\.errorCode) == [0, 0, KafkaErrorCode.unknownTopicOrPartition.rawValue, 0])
            #expect(right.map(\.offset) == [2, 0, -1, 0])
            #expect(right[1].timestamp == 1_000)
            #expect(left.map(\.errorCode) == [0, 0, 0, 0, KafkaErrorCode.invalidRequest.rawValue, 0])
            #expect(left[0].offset == -1 && left[0].timestamp == -1, "nothing at or after 2,000")
            #expect(left[1].offset == 3)
            #expect(left[2].timestamp == 1_000 && (0..<3).contains(left[2].offset))
            #expect(left[3].offset == 0 && left[5].offset == 0)
            client.close()
        }
    }

    /// KIP-227: a full fetch (epoch 0) opens a session and answers every partition; incremental
    /// fetches (epoch 1, 2, …) list only what changed and are answered only with the partitions
    /// that have something new, long polls included; a stale epoch or an unknown session is
    /// refused; forgetting every partition ends the session; epoch -1 fetches without one.
    @Test func fetchSessionsAnswerOnlyWhatChanged() async throws {
        try await TestBroker.with({ $0.autoCreateTopics = false }) { broker in
            let client = try await broker.connect()
            let producer = try await broker.connect()
            _ = try await client.send(CreateTopicsRequest(topics: [.init(name: "quiet", numPartitions: 4, replicationFactor: 1, configs: [])]))
            @Sendable func fetch(
                _ session: Int32, _ epoch: Int32, _ positions: [(Int32, Int64)] = [], forget: [Int32] = [], wait: Int32 = 0
            ) async throws -> (FetchResponse, [Int32]) {
                let request = FetchRequest(
                    replicaId: -1, maxWaitMs: wait, minBytes: 1, maxBytes: 1 << 20, sessionId: session, sessionEpoch: epoch,
                    topics: positions.isEmpty ? [] : [
                        .init(topic: "quiet", partitions: positions.map { .init(partition: $0.0, fetchOffset: $0.1, partitionMaxBytes: 1 << 20) })
                    ],
                    forgottenTopicsData: forget.isEmpty ? [] : [.init(topic: "quiet", partitions: forget)])
                let response = try await client.send(request, version: 12)
                return (response, response.responses.flatMap { $0.partitions.map(\.partitionIndex) })
            }
            @Sendable func produce(_ partition: Int32, _ values: [String]) async throws {
                let request = ProduceRequest(acks: 1, timeoutMs: 5000, topicData: [
                    .init(name: "quiet", partitionData: [.init(index: partition, records: Self.batch(values))])
                ])
                let answer = try await producer.send(request, version: 9)
                #expect(answer.responses[0].partitionResponses[0].errorCode == 0)
            }

            let (full, all) = try await fetch(0, 0, (0..<4).map { ($0, 0) })
            #expect(full.errorCode == 0 && full.sessionId != 0 && all == [0, 1, 2, 3])
            let id = full.sessionId
            let quiet = try await fetch(id, 1).1
            #expect(quiet == [], "nothing new")
            try await produce(2, ["a", "b"])
            let (news, changed) = try await fetch(id, 2)
            #expect(news.sessionId == id && changed == [2])
            let data = news.responses[0].partitions[0]
            let batches = try RecordBatch.split(try #require(data.records))
            #expect(data.highWatermark == 2 && batches.count == 1)
            let moved = try await fetch(id, 3, [(2, 2)]).1
            #expect(moved == [], "the new position has nothing new")
            let stale = try await fetch(id, 3).0
            #expect(stale.errorCode == KafkaErrorCode.invalidFetchSessionEpoch.rawValue)
            let unknown = try await fetch(id &+ 1, 1).0
            #expect(unknown.errorCode == KafkaErrorCode.fetchSessionIdNotFound.rawValue)
            let rewound = try await fetch(id, 4, [(2, 0)])
            #expect(rewound.1 == [2], "a position moved back reads its records again")
            let again = try #require(rewound.0.responses.first?.partitions.first?.records)
            #expect(try RecordBatch.split(again).count == 1)
            let back = try await fetch(id, 5, [(2, 2)]).1
            #expect(back == [])
            // A long poll over the session's partitions, all quiet, wakes when one of them grows.
            async let waited = fetch(id, 6, wait: 10_000)
            let quietShell = try #require(broker.broker.replicas.shell(for: TopicPartition("quiet", 1)))
            let polling = try await eventually(on: broker.broker.group.next(), within: .seconds(10)) {
                quietShell.waiterCount > 0
            }
            #expect(polling, "the long poll registered no waiter")
            try await produce(1, ["c"])
            let woken = try await waited.1
            #expect(woken == [1])
            let (ended, none) = try await fetch(id, 7, forget: [0, 1, 2, 3])
            #expect(ended.sessionId == 0 && none == [])
            let gone = try await fetch(id, 8).0
            #expect(gone.errorCode == KafkaErrorCode.fetchSessionIdNotFound.rawValue)
            let (legacy, listed) = try await fetch(0, -1, [(3, 0), (1, 0)])
            #expect(legacy.sessionId == 0 && listed == [3, 1])
            #expect(broker.broker.fetchSessions.counts.sessions == 0)
            client.close()
            producer.close()
        }
    }

    @Test func produceErrorsAreReportedPerPartition() async throws {
        try await TestBroker.with({ $0.autoCreateTopics = false }) { broker in
            let client = try await broker.connect()
            _ = try await client.send(CreateTopicsRequest(topics: [.init(name: "small", numPartitions: 1, replicationFactor: 1, configs: [.init(name: "max.message.bytes", value: "200")])]))
            let tooLarge = try await client.send(Self.produce("small", [String(repeating: "x", count: 500)]), version: 9)
            #expect(tooLarge.responses[0].partitionResponses[0].errorCode == KafkaErrorCode.messageTooLarge.rawValue)
            var corrupt = Self.produce("small", ["ok"])
            corrupt.topicData[0].partitionData[0].records!.setInteger(UInt32(1), at: 17)
            let bad = try await client.send(corrupt, version: 9)
            #expect(bad.responses[0].partitionResponses[0].errorCode == KafkaErrorCode.corruptMessage.rawValue)
            let unknown = try await client.send(Self.produce("nope", ["a"]), version: 9)
            #expect(unknown.responses[0].partitionResponses[0].errorCode == KafkaErrorCode.unknownTopicOrPartition.rawValue)
            client.close()
        }
    }

    /// A produce to several topics and partitions (spread over the event loops, one that does not
    /// exist, one batch corrupt) answers every partition, grouped by topic, in request order.
    @Test func aProduceToManyPartitionsAnswersEachInRequestOrder() async throws {
        try await TestBroker.with({ $0.autoCreateTopics = false }) { broker in
            let client = try await broker.connect()
            _ = try await client.send(CreateTopicsRequest(topics: [
                .init(name: "left", numPartitions: 4, replicationFactor: 1, configs: []),
                .init(name: "right", numPartitions: 4, replicationFactor: 1, configs: []),
            ]))
            var corrupt = Self.batch(["bad"])
            corrupt.setInteger(UInt32(1), at: 17)
            let right: [ProduceRequest.PartitionProduceData] =
                [3, 0, 2].map { .init(index: $0, records: Self.batch(["r\($0)"])) } + [.init(index: 9, records: Self.batch(["x"]))]
            let request = ProduceRequest(acks: 1, timeoutMs: 5000, topicData: [
                .init(name: "right", partitionData: right),
                .init(name: "left", partitionData: [.init(index: 1, records: corrupt), .init(index: 2, records: Self.batch(["l", "m"]))]),
            ])
            for round in 0..<2 {
                let response = try await client.send(request, version: 9)
                #expect(response.responses.map(\.name) == ["right", "left"])
                let rights = response.responses[0].partitionResponses
                #expect(rights.map(\.index) == [3, 0, 2, 9])
                #expect(rights.map(\.errorCode) == [0, 0, 0, KafkaErrorCode.unknownTopicOrPartition.rawValue])
                #expect(rights.prefix(3).map(\.baseOffset) == [Int64(round), Int64(round), Int64(round)])
                let lefts = response.responses[1].partitionResponses
                #expect(lefts.map(\.index) == [1, 2])
                #expect(lefts.map(\.errorCode) == [KafkaErrorCode.corruptMessage.rawValue, 0])
                #expect(lefts[1].baseOffset == Int64(2 * round))
            }
            client.close()
        }
    }
}

@Suite(.tags(.integration), .serialized) struct RequestMemoryTests {
    /// Partial frames hold budget only until the frame timeout closes their connections; while
    /// the budget is spent a further large request waits, and proceeds once memory returns.
    @Test func stalledFramesAreClosedAndTheBudgetComesBack() async throws {
        try await TestBroker.with({
            $0.requestBytesMax = 400_000
            $0.requestMemoryBytesMax = 1_000_000
            $0.requestFrameTimeoutMilliseconds = 500
        }) { broker in
            var stalled: [RawSocket] = []
            for _ in 0..<3 {
                let socket = try RawSocket(port: broker.port)
                var partial = ByteBuffer()
                partial.writeInteger(Int32(390_000))
                partial.writeBytes([UInt8](repeating: 0, count: 1000))
                socket.send(partial)
                stalled.append(socket)
            }
            // A big, complete request from a well-behaved client waits for memory, then is served.
            let client = try await broker.connect()
            let topic = String(repeating: "t", count: 200)
            var request = MetadataRequest(topics: (0..<1500).map { _ in .init(name: topic) })
            request.allowAutoTopicCreation = false
            let response = try await client.send(request, version: 4)
            #expect(response.topics.count == 1500)
            for socket in stalled { #expect(socket.isClosedByPeer()) }
            client.close()
        }
    }
}

@Suite(.tags(.integration), .serialized) struct BrokerConcurrencyTests {
    /// Twenty clients auto-creating one topic at the same moment agree on one topic id.
    @Test func concurrentAutoCreationMakesOneTopic() async throws {
        try await TestBroker.with { broker in
            let ids = try await withThrowingTaskGroup(of: KafkaUUID.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        let client = try await broker.connect()
                        defer { client.close() }
                        let response = try await client.send(MetadataRequest(topics: [.init(name: "raced")]), version: 12)
                        return response.topics[0].topicId
                    }
                }
                return try await group.reduce(into: Set<KafkaUUID>()) { $0.insert($1) }
            }
            #expect(ids.count == 1)
            #expect(broker.broker.cache.image.topic(named: "raced")?.id == ids.first)
        }
    }

    /// Changes are validated against the image with every change in flight on top: of creations
    /// racing for one name, or for names that collide ('.' versus '_'), exactly one wins, and a
    /// deletion sees a creation that is not applied yet.
    @Test func concurrentCreationsSeeEachOtherInFlight() async throws {
        try await TestBroker.with { broker in
            let names = (0..<24).map { $0 % 2 == 0 ? "race.\($0 % 3)" : "race_\($0 % 3)" }
            var clients: [KafkaConnection] = []
            for _ in names { clients.append(try await broker.connect()) }
            defer { for client in clients { client.close() } }
            let results = try await withThrowingTaskGroup(of: (String, Int16).self) { group in
                for (name, client) in zip(names, clients) {
                    group.addTask {
                        let request = CreateTopicsRequest(topics: [.init(name: name, numPartitions: 1, replicationFactor: 1)], timeoutMs: 30_000)
                        let response = try await client.send(request, version: 7)
                        return (name, response.topics[0].errorCode)
                    }
                }
                return try await group.reduce(into: [(String, Int16)]()) { $0.append($1) }
            }
            let winners = results.filter { $0.1 == 0 }.map(\.0)
            #expect(winners.count == 3, "one topic per family of colliding names: \(winners)")
            #expect(Set(winners.map { $0.suffix(1) }) == ["0", "1", "2"])
            let losers = Set(results.filter { $0.1 != 0 }.map(\.1))
            #expect(losers.isSubset(of: [KafkaErrorCode.topicAlreadyExists.rawValue, KafkaErrorCode.invalidTopicException.rawValue]))
            let image = broker.broker.cache.image
            #expect(image.topics.count == 3)
            for winner in winners { #expect(image.topic(named: winner) != nil) }
        }
    }

    /// A fetch that lists one partition many times, each asking for 64 MiB, gets at most its
    /// response budget back (read one partition at a time), not 64 MiB per entry.
    @Test func fetchHonoursTheResponseBudgetAcrossPartitions() async throws {
        try await TestBroker.with { broker in
            let client = try await broker.connect()
            let created = try await client.send(CreateTopicsRequest(topics: [.init(name: "big", numPartitions: 1, replicationFactor: 1)]))
            for _ in 0..<20 {
                _ = try await client.send(BrokerProtocolTests.produce("big", (0..<50).map { _ in String(repeating: "v", count: 1000) }), version: 9)
            }
            var request = BrokerProtocolTests.fetch(created.topics[0].topicId, offset: 0, maxWaitMs: 0)
            request.maxBytes = 200_000
            let entry = request.topics[0].partitions[0]
            request.topics[0].partitions = (0..<100).map { _ in
                var copy = entry
                copy.partitionMaxBytes = 64 << 20
                return copy
            }
            let response = try await client.send(request, version: 13)
            let bytes = response.responses[0].partitions.reduce(0) { $0 + ($1.records?.readableBytes ?? 0) }
            #expect(bytes > 0 && bytes <= 200_000 + 60_000)
            #expect(response.responses[0].partitions.count == 100)
            client.close()
        }
    }
}

extension BrokerProtocolTests {
    /// Fetches read a partition's cached batches on their own loop, from the offsets the
    /// partition's loop published: what it holds, empty at the log end, and nil (the partition's
    /// loop answers) past the end or once the log is gone.
    @Test func fetchesReadTheCacheFromPublishedOffsets() async throws {
        try await TestBroker.with { broker in
            let client = try await broker.connect()
            defer { client.close() }
            _ = try await client.send(CreateTopicsRequest(topics: [.init(name: "published", numPartitions: 1, replicationFactor: 1)]))
            _ = try await client.send(BrokerProtocolTests.produce("published", ["a", "b"]), version: 9)
            let shell = try #require(broker.broker.replicas.shell(for: TopicPartition("published", 0)))
            let memory = broker.broker.readMemory
            let read = try #require(shell.readCached(from: 0, maxBytes: 1 << 20, minOneBatch: true, memory: memory))
            #expect(read.highWatermark == 2 && read.logStartOffset == 0)
            let batches = try RecordBatch.split(read.records.bytes(), allowPartialTail: false)
            #expect(batches.map(\.header.baseOffset) == [0])
            let atEnd = try #require(shell.readCached(from: 2, maxBytes: 1 << 20, minOneBatch: true, memory: memory))
            #expect(atEnd.records.byteCount == 0 && atEnd.highWatermark == 2)
            #expect(shell.readCached(from: 3, maxBytes: 1 << 20, minOneBatch: true, memory: memory) == nil)
            // A waiter registered at the end is woken by the next append, on any thread.
            let woken = broker.broker.group.next().makePromise(of: Void.self)
            #expect(shell.addWaiter(observedEnd: 2) { woken.succeed() } != nil)
            #expect(shell.addWaiter(observedEnd: 1) { Issue.record("the log is already past 1") } == nil)
            _ = try await client.send(BrokerProtocolTests.produce("published", ["c"]), version: 9)
            let deadline = woken.futureResult.eventLoop.scheduleTask(in: .seconds(30)) {
                woken.fail(BrokerError(.requestTimedOut, "the waiter was not woken"))
            }
            try await woken.futureResult.get()
            deadline.cancel()
            #expect(shell.readCached(from: 2, maxBytes: 1 << 20, minOneBatch: true, memory: memory)?.highWatermark == 3)
            try await shell.delete().get()
            #expect(shell.readCached(from: 0, maxBytes: 1 << 20, minOneBatch: true, memory: memory) == nil)
        }
    }

    /// Whether all of the broker's read memory comes back within 10 s. What held a reservation
    /// (futures, a written frame's leases, a blocking-pool thread's read) lets go of it just
    /// after the caller has its answer, on whichever thread: this waits for the budget's own
    /// release callbacks (`MemoryBudget.tryReserve`), not for a clock, and gives up at the
    /// deadline.
    static func readMemoryReleased(_ broker: TestBroker) async throws -> Bool {
        let memory = broker.broker.readMemory
        let loop = broker.broker.group.next()
        let released = loop.makePromise(of: Bool.self)
        let done = try await loop.submit { NIOLoopBoundBox(false, eventLoop: loop) }.get()
        @Sendable func attempt() {
            guard !done.value else { return }
            // The whole budget fits only when nothing else holds any of it.
            guard memory.tryReserve(memory.capacityBytes, retry: { loop.execute { attempt() } }) else { return }
            memory.release(memory.capacityBytes)
            done.value = true
            released.succeed(true)
        }
        loop.execute { attempt() }
        let deadline = loop.scheduleTask(in: .seconds(10)) {
            guard !done.value else { return }
            done.value = true
            released.succeed(false)
        }
        defer { deadline.cancel() }
        return try await released.futureResult.get()
    }

    /// The hot cache's batches in a response hold their size of the broker's read memory until
    /// it is written, so that responses a client leaves unread cannot keep batches the cache has
    /// let go without bound. With that memory spent, the same records are sent from the segment
    /// (a miss of the cache, and a refusal of the read memory).
    @Test func theCachesBatchesInAResponseHoldReadMemory() async throws {
        try await TestBroker.with { broker in
            let client = try await broker.connect()
            defer { client.close() }
            let created = try await client.send(
                CreateTopicsRequest(topics: [.init(name: "held", numPartitions: 1, replicationFactor: 1)]))
            let values = (0..<200).map { "held-\($0)-" + String(repeating: "y", count: 300) }
            _ = try await client.send(BrokerProtocolTests.produce("held", values), version: 9)
            let shell = try #require(broker.broker.replicas.shell(for: TopicPartition("held", 0)))
            let memory = broker.broker.readMemory
            var cached = shell.readCached(from: 0, maxBytes: 1 << 20, minOneBatch: true, memory: memory)
            guard case .memory(let bytes) = cached?.records else {
                Issue.record("the cache did not answer: \(String(describing: cached?.records))")
                return
            }
            #expect(memory.usedBytes == bytes.readableBytes)
            cached = nil
            #expect(try await Self.readMemoryReleased(broker))
            // A fetch the cache answers gives its memory back once its response is written.
            let fetch = BrokerProtocolTests.fetch(created.topics[0].topicId, offset: 0, maxWaitMs: 0)
            #expect(try await client.send(fetch, version: 13).responses.first?.partitions.first?.records == bytes)
            #expect(try await Self.readMemoryReleased(broker))

            let cache = broker.broker.replicas.hotCache
            let before = cache.describe()
            let spent = try #require(memory.reserve(memory.capacityBytes))
            #expect(shell.readCached(from: 0, maxBytes: 1 << 20, minOneBatch: true, memory: memory) == nil)
            #expect(memory.refusals == 0)
            let read = try await shell.read(from: 0, maxBytes: 1 << 20, minOneBatch: true, memory: memory).get()
            guard case .file(let span) = read.records else {
                Issue.record("the cache's batches were handed out past the read memory: \(read.records)")
                return
            }
            #expect(try LogRecords.file(span).bytes() == bytes)
            #expect(memory.refusals == 1)
            #expect(cache.describe().hits == before.hits && cache.describe().misses == before.misses + 1)
            #expect(try await client.send(fetch, version: 13).responses.first?.partitions.first?.records == bytes)
            #expect(cache.describe().hits == before.hits && cache.describe().misses == before.misses + 2)
            withExtendedLifetime(spent) {}
        }
    }

    /// Records behind the cache whose pages the OS page cache dropped are read off the event
    /// loops and answered as they were written; ones it holds are sent from the file. What is
    /// read so holds its size of the broker's read memory until the response is gone; with that
    /// memory spent, cold records are sent from the file too.
    @Test func coldRecordsBehindTheCacheAreReadOffTheLoops() async throws {
        try await TestBroker.with({ $0.hotCacheBytes = 0 }) { broker in
            let client = try await broker.connect()
            defer { client.close() }
            let created = try await client.send(
                CreateTopicsRequest(topics: [.init(name: "cold", numPartitions: 1, replicationFactor: 1)]))
            let values = (0..<200).map { "cold-\($0)-" + String(repeating: "x", count: 300) }
            _ = try await client.send(BrokerProtocolTests.produce("cold", values), version: 9)
            let shell = try #require(broker.broker.replicas.shell(for: TopicPartition("cold", 0)))
            let memory = broker.broker.readMemory
            func read() async throws -> PartitionShell.ReadResult {
                try await shell.read(from: 0, maxBytes: 1 << 20, minOneBatch: true, memory: memory).get()
            }
            func released() async throws -> Bool { try await Self.readMemoryReleased(broker) }
            guard case .file(let span) = try await read().records else {
                Issue.record("a warm read is not a span")
                return
            }
            #expect(memory.usedBytes == 0)
            // The kernel may keep a page the advice asked it to drop (one still in another
            // core's LRU batch, under parallel tests): the pages are dropped again until a read
            // finds them gone.
            var cold: PartitionShell.ReadResult?
            for _ in 0..<50 {
                try span.file.releasePages(0..<(span.position + span.length))
                cold = try await read()
                if case .memory = cold?.records { break }
            }
            guard case .memory(let bytes) = cold?.records else {
                Issue.record("a cold read was not read off the loop: \(String(describing: cold?.records))")
                return
            }
            #expect(try bytes == LogRecords.file(span).bytes())
            #expect(memory.usedBytes == span.length)
            cold = nil
            #expect(try await released())

            try span.file.releasePages(0..<(span.position + span.length))
            do {
                let spent = try #require(memory.reserve(memory.capacityBytes))
                guard case .file(let sent) = try await read().records else {
                    Issue.record("a cold read took memory past the budget")
                    return
                }
                #expect(sent.position == span.position && sent.length == span.length)
                withExtendedLifetime(spent) {}
            }

            #expect(try await released())
            try span.file.releasePages(0..<(span.position + span.length))
            let fetch = BrokerProtocolTests.fetch(created.topics[0].topicId, offset: 0, maxWaitMs: 0)
            let fetched = try await client.send(fetch, version: 13)
            let records = try #require(fetched.responses.first?.partitions.first?.records)
            #expect(records == bytes)
            // The response was written and dropped: its memory is back.
            #expect(try await released())
        }
    }

    /// A finished fetch — answered at once, a long-poll woken by an append, or one that reached
    /// its deadline — leaves memory with the records it read (a stored self-reference once kept
    /// every fetch, and its records, alive).
    @Test func finishedFetchesAreFreed() async throws {
        final class Watch: @unchecked Sendable { weak var operation: FetchOperation? }
        try await TestBroker.with { broker in
            let client = try await broker.connect()
            defer { client.close() }
            let created = try await client.send(CreateTopicsRequest(topics: [.init(name: "freed", numPartitions: 1, replicationFactor: 1)]))
            let id = created.topics[0].topicId
            _ = try await client.send(BrokerProtocolTests.produce("freed", ["a", "b"]), version: 9)
            let loop = broker.broker.group.next()
            let context = RequestContext(apiKey: .fetch, apiVersion: 13, correlationID: 1, clientID: nil, eventLoop: loop)
            func fetch(at offset: Int64, waitMs: Int32, whileWaiting: () async throws -> Void = {}) async throws -> Int {
                let watch = Watch()
                let answer = try await loop.submit {
                    let operation = FetchOperation(
                        request: BrokerProtocolTests.fetch(id, offset: offset, maxWaitMs: waitMs), context: context, broker: broker.broker)
                    watch.operation = operation
                    return operation.run()
                }.get()
                try await whileWaiting()
                let (response, _, _) = try await answer.get()
                // The fetch's last callbacks have run: its waiters are removed on the partition's
                // loop (a hop, then a task there), so every loop is drained three times over.
                for _ in 0..<3 {
                    for other in broker.broker.group.makeIterator() { try await other.submit {}.get() }
                }
                #expect(watch.operation == nil, "the fetch at \(offset) waiting \(waitMs) ms is still alive")
                return response.responses[0].partitions[0].records?.readableBytes ?? 0
            }
            #expect(try await fetch(at: 0, waitMs: 0) > 0)
            #expect(try await fetch(at: 2, waitMs: 10_000) { _ = try await client.send(BrokerProtocolTests.produce("freed", ["c"]), version: 9) } > 0)
            #expect(try await fetch(at: 3, waitMs: 20) == 0)
        }
    }
}

@Suite(.tags(.integration), .serialized) struct BrokerLifecycleTests {
    /// A broker stopped at once, before or while its own node's registration commits and is
    /// reconciled, still stops: what waits on the metadata quorum or the reconciler is let go
    /// when they stop, and nothing waits on them afterwards.
    @Test func aBrokerStoppedAtOnceStops() async throws {
        for attempt in 0..<40 {
            let broker = try await TestBroker.start()
            // Stop at a different point of start-up each time: after 0–19 turns of the executor.
            for _ in 0..<(attempt % 20) { await Task.yield() }
            await broker.stop()
        }
    }
}
