import KafkaProtocol
import NIOCore
import RafkaClient
import Synchronization

/// The consuming side of a run: `consumers` readers, each fetching its share of the
/// partitions (every `consumers`-th one) from their leaders with one connection per leader,
/// as Kafka consumers assigned partitions do. Batches are counted from their headers (records,
/// bytes); the records are not decompressed, so the reader costs little beside the broker.
struct ConsumeLoad: Sendable {
    let settings: BenchSettings
    let topic: BenchTopic
    let counters: LoadCounters
    let ledger: SendLedger?

    /// When the run ends: a time, a record count, or (e2e) once everything acknowledged arrived.
    final class Stop: Sendable {
        let stopAt = Atomic<Int64>(Int64.max)
        /// Records to receive before stopping, warm-up included (e2e: everything acknowledged).
        let records = Atomic<Int>(Int.max)
        /// Records to receive in the measured phase before stopping (consume --records).
        let measuredRecords = Atomic<Int>(Int.max)
    }

    /// Where each partition starts: its log start or end now. Waits (up to 30 s) while a
    /// partition's leader does not serve it yet (a topic just created, a leader taking over).
    func startOffsets() async throws -> [Int32: Int64] {
        var offsets: [Int32: Int64] = [:]
        let byLeader = Dictionary(grouping: self.topic.partitions) { self.topic.leaders[$0]! }
        let deadline = MonotonicClock.now() + 30_000_000_000
        for (leader, partitions) in byLeader {
            let connection = try await KafkaConnection.connect(
                host: leader.host,
                port: leader.port,
                clientID: "rafka-bench"
            )
            defer { connection.close() }
            var waiting = Set(partitions)
            while !waiting.isEmpty {
                var request = ListOffsetsRequest()
                request.replicaId = -1
                request.topics = [
                    .init(
                        name: self.topic.name,
                        partitions: waiting.sorted().map {
                            .init(partitionIndex: $0, timestamp: self.settings.startOffset == .earliest ? -2 : -1)
                        }
                    )
                ]
                let response = try await connection.send(request)
                for answer in response.topics.first?.partitions ?? [] {
                    let code = KafkaErrorCode(rawValue: answer.errorCode)
                    if answer.errorCode == 0 {
                        offsets[answer.partitionIndex] = answer.offset
                        waiting.remove(answer.partitionIndex)
                    } else if !Self.retriable.contains(code) || MonotonicClock.now() > deadline {
                        throw KafkaClientError("ListOffsets for partition \(answer.partitionIndex): \(code)")
                    }
                }
                if !waiting.isEmpty { try await Task.sleep(nanoseconds: 100_000_000) }
            }
        }
        return offsets
    }

    /// Answers that mean "not yet": the partition is being opened or taken over.
    static let retriable: Set<KafkaErrorCode> = [.notLeaderOrFollower, .leaderNotAvailable, .unknownTopicOrPartition]

    /// Reads from `start` until `stop` says so; returns the latency of fetches that brought
    /// records (request sent to response read), measured from `measureFrom`.
    func run(
        from offsets: [Int32: Int64],
        start: Int64,
        measureFrom: Int64,
        stop: Stop
    ) async throws -> LatencyHistogram {
        defer { self.counters.finished.store(true, ordering: .relaxed) }
        return try await withThrowingTaskGroup(of: LatencyHistogram.self) { group in
            for consumer in 0..<self.settings.consumers {
                let mine = self.topic.partitions.filter { Int($0) % self.settings.consumers == consumer }
                let byLeader = Dictionary(grouping: mine) { self.topic.leaders[$0]! }
                for (leader, partitions) in byLeader {
                    group.addTask {
                        let connection = try await KafkaConnection.connect(
                            host: leader.host,
                            port: leader.port,
                            clientID: "rafka-bench-consumer-\(consumer)"
                        )
                        defer { connection.close() }
                        let positions = Dictionary(uniqueKeysWithValues: partitions.map { ($0, offsets[$0] ?? 0) })
                        let version = try connection.version(for: FetchRequest.self)
                        try await MonotonicClock.sleep(until: start)
                        let lane = connection.eventLoop.flatSubmit {
                            FetchLane(
                                load: self,
                                connection: connection,
                                version: version,
                                positions: positions,
                                measureFrom: measureFrom,
                                stop: stop
                            )
                            .start()
                        }
                        // Another reader failed and the group is cancelled: stop at the next fetch.
                        return try await withTaskCancellationHandler {
                            try await lane.get()
                        } onCancel: {
                            stop.stopAt.store(0, ordering: .relaxed)
                        }
                    }
                }
            }
            var total = LatencyHistogram()
            for try await histogram in group { total.add(histogram) }
            return total
        }
    }
}

/// One consumer connection's fetches, on its event loop (Isolation: the connection's loop): the
/// next fetch leaves as soon as the last one's answer is read, and an arrival is timed when the
/// answer comes off the socket, not when a thread of the concurrency pool gets to it.
private final class FetchLane {
    private let load: ConsumeLoad
    private let connection: KafkaConnection
    private let version: Int16
    private var positions: [Int32: Int64]
    private let measureFrom: Int64
    private let stop: ConsumeLoad.Stop
    private let promise: EventLoopPromise<LatencyHistogram>
    private var histogram = LatencyHistogram()

    init(
        load: ConsumeLoad,
        connection: KafkaConnection,
        version: Int16,
        positions: [Int32: Int64],
        measureFrom: Int64,
        stop: ConsumeLoad.Stop
    ) {
        self.load = load
        self.connection = connection
        self.version = version
        self.positions = positions
        self.measureFrom = measureFrom
        self.stop = stop
        self.promise = connection.eventLoop.makePromise()
    }

    func start() -> EventLoopFuture<LatencyHistogram> {
        self.fetch()
        return self.promise.futureResult
    }

    private var shouldStop: Bool {
        let counters = self.load.counters
        return MonotonicClock.now() >= self.stop.stopAt.load(ordering: .relaxed)
            || counters.records.load(ordering: .relaxed) >= self.stop.records.load(ordering: .relaxed)
            || counters.measuredRecords.load(ordering: .relaxed) >= self.stop.measuredRecords.load(ordering: .relaxed)
    }

    private func fetch() {
        guard !self.shouldStop else { return self.promise.succeed(self.histogram) }
        let settings = self.load.settings
        var request = FetchRequest()
        request.maxWaitMs = settings.fetchWaitMilliseconds
        request.minBytes = 1
        request.maxBytes = settings.fetchBytesMax
        var topic = FetchRequest.FetchTopic()
        topic.topic = self.load.topic.name
        topic.topicId = self.load.topic.id
        topic.partitions = self.positions.keys.sorted().map {
            .init(partition: $0, fetchOffset: self.positions[$0]!, partitionMaxBytes: settings.partitionFetchBytesMax)
        }
        request.topics = [topic]
        let sent = MonotonicClock.now()
        let lane = NIOLoopBound(self, eventLoop: self.connection.eventLoop)
        self.connection.request(
            request,
            version: self.version,
            timeout: .milliseconds(Int64(settings.fetchWaitMilliseconds) + 30_000)
        ).whenComplete { result in
            let arrived = MonotonicClock.now()
            let lane = lane.value
            do {
                try lane.received(try result.get(), sent: sent, arrived: arrived)
            } catch {
                return lane.promise.fail(error)
            }
            lane.fetch()
        }
    }

    private func received(_ response: FetchResponse, sent: Int64, arrived: Int64) throws {
        guard response.errorCode == 0 else {
            throw KafkaClientError("fetch: \(KafkaErrorCode(rawValue: response.errorCode))")
        }
        var records = 0
        var wireBytes = 0
        for answer in response.responses.first?.partitions ?? [] {
            guard answer.errorCode == 0 else {
                self.load.counters.count(error: "fetch \(KafkaErrorCode(rawValue: answer.errorCode))")
                continue
            }
            guard var position = self.positions[answer.partitionIndex], let bytes = answer.records else { continue }
            for (header, batch) in try RecordBatch.split(bytes, allowPartialTail: true)
            where header.nextOffset > position {
                records += Int(header.nextOffset - max(header.baseOffset, position))
                wireBytes += batch.readableBytes
                position = header.nextOffset
                self.load.ledger?.arrived(
                    .init(partition: answer.partitionIndex, baseOffset: header.baseOffset),
                    at: arrived
                )
            }
            self.positions[answer.partitionIndex] = position
        }
        guard records > 0 else { return }
        self.load.counters.records.add(records, ordering: .relaxed)
        if sent >= self.measureFrom {
            self.histogram.record(nanoseconds: arrived - sent)
            let payload = wireBytes  // records are not decompressed: payload is what arrived
            self.load.counters.measured(records: records, payloadBytes: payload, wireBytes: wireBytes, at: arrived)
        }
    }
}
