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
    /// The partitions in order, as requests list them.
    private let order: [Int32]
    private let measureFrom: Int64
    private let stop: ConsumeLoad.Stop
    private let promise: EventLoopPromise<LatencyHistogram>
    private var histogram = LatencyHistogram()
    /// With `--fetch-sessions` on Fetch v7 and later; nil otherwise (every request lists every partition).
    private var session: FetchSessionState?

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
        self.order = positions.keys.sorted()
        self.measureFrom = measureFrom
        self.stop = stop
        self.promise = connection.eventLoop.makePromise()
        self.session = load.settings.fetchSessions && version >= 7 ? FetchSessionState() : nil
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
        let listed =
            self.session?.next(self.order, positions: self.positions) ?? self.order.map { ($0, self.positions[$0]!) }
        if let session = self.session {
            request.sessionId = session.id
            request.sessionEpoch = session.epoch
        }
        if !listed.isEmpty || self.session == nil {
            var topic = FetchRequest.FetchTopic()
            topic.topic = self.load.topic.name
            topic.topicId = self.load.topic.id
            topic.partitions = listed.map {
                .init(partition: $0.key, fetchOffset: $0.value, partitionMaxBytes: settings.partitionFetchBytesMax)
            }
            request.topics = [topic]
        }
        self.load.counters.fetches.add(1, ordering: .relaxed)
        if request.sessionEpoch > 0 { self.load.counters.incrementalFetches.add(1, ordering: .relaxed) }
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
                try lane.received(try result.get(), listed: listed, sent: sent, arrived: arrived)
            } catch {
                return lane.promise.fail(error)
            }
            lane.fetch()
        }
    }

    private func received(
        _ response: FetchResponse,
        listed: [(key: Int32, value: Int64)],
        sent: Int64,
        arrived: Int64
    ) throws {
        let code = KafkaErrorCode(rawValue: response.errorCode)
        if self.session != nil && FetchSessionState.lost.contains(code) {
            // Evicted, or the broker restarted: the next request is a full one again.
            self.session!.reset()
            self.load.counters.fetchSessionResets.add(1, ordering: .relaxed)
            return
        }
        guard response.errorCode == 0 else { throw KafkaClientError("fetch: \(code)") }
        self.session?.answered(sessionID: response.sessionId, listed: listed)
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

/// A consumer's side of an incremental fetch session (KIP-227), kept as the Java consumer keeps
/// it: the first request lists every partition and asks for a session (epoch 0); once the broker
/// gives one, each request lists only the partitions whose position moved since the broker last
/// heard it, and the answer holds only the partitions with something new. A broker that gives
/// no session (id 0) keeps getting full requests; one that lost it gets a full request again.
struct FetchSessionState {
    private(set) var id: Int32 = 0
    private(set) var epoch: Int32 = 0
    /// Each partition's position as the broker last heard it, while a session is open.
    private var told: [Int32: Int64] = [:]

    /// Top-level errors after which the session is gone and a full request starts another.
    static let lost: Set<KafkaErrorCode> = [.fetchSessionIdNotFound, .invalidFetchSessionEpoch]

    /// The partitions of `order` (with their positions) the next request lists: all of them
    /// without a session, else those whose position moved.
    func next(_ order: [Int32], positions: [Int32: Int64]) -> [(key: Int32, value: Int64)] {
        let listed = self.id == 0 ? order : order.filter { self.told[$0] != positions[$0] }
        return listed.map { ($0, positions[$0]!) }
    }

    /// The broker answered the request that listed `listed` (without an error), giving `sessionID`.
    mutating func answered(sessionID: Int32, listed: [(key: Int32, value: Int64)]) {
        if self.epoch == 0 {
            guard sessionID != 0 else { return }  // the broker keeps no session: full requests go on
            self.id = sessionID
            self.told = [:]
        }
        for (partition, position) in listed { self.told[partition] = position }
        self.epoch = self.epoch == Int32.max ? 1 : self.epoch + 1
    }

    mutating func reset() {
        self = FetchSessionState()
    }
}
