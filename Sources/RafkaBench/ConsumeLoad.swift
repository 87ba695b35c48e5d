import KafkaProtocol
import NIOCore
import RafkaClient
import Synchronization

/// The consuming side of a run: `consumers` readers, each fetching its share of the
/// partitions (every `consumers`-th one) from their leaders with one connection per leader,
/// as Kafka consumers assigned partitions do. Batches are counted from their headers (records,
/// bytes); the records are not decompressed, so the reader costs little beside the broker.
/// A partition that moves to another leader during the run is read on from there
/// (`FetchLanes.move`).
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
                let timestamp: Int64 = self.settings.startOffset == .earliest ? -2 : -1
                for (partition, answer) in try await self.listOffsets(waiting.sorted(), timestamp: timestamp, over: connection) {
                    switch answer {
                    case .success(let offset):
                        offsets[partition] = offset
                        waiting.remove(partition)
                    case .failure(let code) where !LeaderMap.moved.contains(code) || MonotonicClock.now() > deadline:
                        throw KafkaClientError("ListOffsets for partition \(partition): \(code)")
                    case .failure:
                        break
                    }
                }
                if !waiting.isEmpty { try await Task.sleep(nanoseconds: 100_000_000) }
            }
        }
        return offsets
    }

    /// Where a reader whose position `was` fell outside `partition`'s log goes on at `leader`:
    /// the log's start if it was below it, its end if it was past it (the records between are
    /// lost).
    func reposition(_ partition: Int32, was: Int64, at leader: BenchTopic.Leader) async throws -> Int64 {
        let connection = try await KafkaConnection.connect(
            host: leader.host, port: leader.port, clientID: "rafka-bench", connectTimeout: LeaderMap.connectTimeout)
        defer { connection.close() }
        var bounds: [Int64] = []
        for timestamp: Int64 in [-2, -1] {  // earliest, latest
            switch try await self.listOffsets([partition], timestamp: timestamp, over: connection)[partition] {
            case .success(let offset): bounds.append(offset)
            case .failure(let code): throw KafkaClientError("ListOffsets for partition \(partition): \(code)")
            case nil: throw KafkaClientError("ListOffsets did not answer for partition \(partition)")
            }
        }
        return min(max(was, bounds[0]), bounds[1])
    }

    /// Offsets of `partitions` at `timestamp` (-2 earliest, -1 latest), or each one's error.
    private func listOffsets(
        _ partitions: [Int32], timestamp: Int64, over connection: KafkaConnection
    ) async throws -> [Int32: Result<Int64, KafkaErrorCode>] {
        var request = ListOffsetsRequest()
        request.replicaId = -1
        request.topics = [
            .init(name: self.topic.name, partitions: partitions.map { .init(partitionIndex: $0, timestamp: timestamp) })
        ]
        let response = try await connection.send(request)
        var answers: [Int32: Result<Int64, KafkaErrorCode>] = [:]
        for answer in response.topics.first?.partitions ?? [] {
            answers[answer.partitionIndex] =
                answer.errorCode == 0 ? .success(answer.offset) : .failure(KafkaErrorCode(rawValue: answer.errorCode))
        }
        return answers
    }

    /// Reads from `start` until `stop` says so; returns the latency of fetches that brought
    /// records (request sent to response read), measured from `measureFrom`.
    func run(
        from offsets: [Int32: Int64],
        start: Int64,
        measureFrom: Int64,
        stop: Stop
    ) async throws -> LatencyHistogram {
        defer { self.counters.finished.store(true, ordering: .relaxed) }
        let lanes = FetchLanes(load: self, measureFrom: measureFrom, stop: stop)
        var opening: [(consumer: Int, leader: BenchTopic.Leader, connection: KafkaConnection, partitions: [Int32: FetchLanes.Moving])] = []
        do {
            for consumer in 0..<self.settings.consumers {
                let mine = self.topic.partitions.filter { Int($0) % self.settings.consumers == consumer }
                for (leader, partitions) in Dictionary(grouping: mine, by: { self.topic.leaders[$0]! }) {
                    let connection = try await KafkaConnection.connect(
                        host: leader.host,
                        port: leader.port,
                        clientID: "rafka-bench-consumer-\(consumer)"
                    )
                    let positions = Dictionary(uniqueKeysWithValues: partitions.map {
                        ($0, FetchLanes.Moving(position: offsets[$0] ?? 0))
                    })
                    opening.append((consumer, leader, connection, positions))
                }
            }
            try await MonotonicClock.sleep(until: start)
            for lane in opening {
                try lanes.open(consumer: lane.consumer, leader: lane.leader, connection: lane.connection, partitions: lane.partitions)
            }
            // The producers failed and the run is cancelled: stop at the next fetch.
            return try await withTaskCancellationHandler {
                try await lanes.finished()
            } onCancel: {
                stop.stopAt.store(0, ordering: .relaxed)
            }
        } catch {
            stop.stopAt.store(0, ordering: .relaxed)  // the other readers stop too
            for lane in opening { lane.connection.close() }
            throw error
        }
    }
}

/// The fetch lanes of a run, one per consumer and leader, and the partitions on their way from
/// one lane to another. A partition whose leader answers that it moved, or whose connection
/// closed, leaves its lane; after `LeaderMap.retryBackoff` it joins its consumer's lane for its
/// new leader, or the one being opened, or opens one, and is read on from its position.
private final class FetchLanes: Sendable {
    struct Key: Hashable, Sendable {
        var consumer: Int
        var leader: BenchTopic.Leader
    }

    /// A partition on its way: where its reader was, whether that position must be looked up
    /// again (it fell outside the log), and since when no leader has served it (kept across
    /// moves, for `LeaderMap.patienceNanoseconds`).
    struct Moving: Sendable {
        var position: Int64
        var reposition = false
        /// nil for a lane's first partitions, which have not moved.
        var since: Int64? = nil
        /// The answer that moved it named a newer leader (`LeaderMap.learn`): tried at once.
        var hinted = false
    }

    private struct Entry: Sendable {
        var id: ObjectIdentifier
        var lane: NIOLoopBound<FetchLane>
        var loop: any EventLoop
    }

    private struct State {
        var lanes: [Key: Entry] = [:]
        /// Lanes being connected, with the partitions that will start in them.
        var opening: [Key: [Int32: Moving]] = [:]
        /// Every lane's result, in the order they were opened.
        var results: [EventLoopFuture<LatencyHistogram>] = []
        /// Lanes being opened and partitions being moved: the run is not over while any are.
        var pending = 0
        var failure: (any Error)?
    }

    let load: ConsumeLoad
    let measureFrom: Int64
    let stop: ConsumeLoad.Stop
    private let state = Mutex(State())

    init(load: ConsumeLoad, measureFrom: Int64, stop: ConsumeLoad.Stop) {
        self.load = load
        self.measureFrom = measureFrom
        self.stop = stop
    }

    /// Whether reading is over: the time is up, or (e2e) every acknowledged record arrived, or
    /// (consume --records) enough were measured.
    var stopped: Bool {
        let counters = self.load.counters
        // e2e: until every acknowledged batch arrived too, since a batch sent again after its
        // connection failed may arrive twice and make up the count.
        return MonotonicClock.now() >= self.stop.stopAt.load(ordering: .relaxed)
            || (counters.records.load(ordering: .relaxed) >= self.stop.records.load(ordering: .relaxed)
                && self.load.ledger?.unmatched ?? 0 == 0)
            || counters.measuredRecords.load(ordering: .relaxed) >= self.stop.measuredRecords.load(ordering: .relaxed)
    }

    /// Starts a lane reading `partitions` of `consumer`'s share from `leader` over `connection`.
    func open(consumer: Int, leader: BenchTopic.Leader, connection: KafkaConnection, partitions: [Int32: Moving]) throws {
        let version = try connection.version(for: FetchRequest.self)
        let key = Key(consumer: consumer, leader: leader)
        self.state.withLock { $0.pending += 1 }
        let loop = connection.eventLoop
        loop.execute {
            let lane = FetchLane(lanes: self, key: key, connection: connection, version: version, partitions: partitions)
            self.state.withLock { state in
                state.lanes[key] = Entry(id: ObjectIdentifier(lane), lane: NIOLoopBound(lane, eventLoop: loop), loop: loop)
                state.results.append(lane.promise.futureResult)
                state.pending -= 1
            }
            lane.start()
        }
    }

    /// `lane` ended: partitions moving to its leader open a new lane.
    func ended(_ lane: FetchLane, key: Key) {
        self.state.withLock { state in
            if state.lanes[key]?.id == ObjectIdentifier(lane) { state.lanes[key] = nil }
        }
    }

    /// A lane failed: the run stops and fails with `error`.
    func failed(_ error: any Error) {
        self.state.withLock { $0.failure = $0.failure ?? error }
        self.stop.stopAt.store(0, ordering: .relaxed)
    }

    private func settled() {
        self.state.withLock { $0.pending -= 1 }
    }

    /// `partition` left `consumer`'s lane: after the back-off, asks where it is led now (at once,
    /// without asking, when the answer named its leader: `Moving.hinted`) and hands it to that
    /// leader's lane (joining one being opened, or opening one), retrying until
    /// `LeaderMap.patienceNanoseconds` have passed since a leader last served it.
    func move(_ partition: Int32, _ moving: Moving, consumer: Int) {
        self.state.withLock { $0.pending += 1 }
        Task {
            var moving = moving
            var problem: String?
            let routes = self.load.topic.routes
            while !self.stopped {
                if moving.hinted {
                    moving.hinted = false
                } else {
                    try? await Task.sleep(nanoseconds: UInt64(LeaderMap.retryBackoff.nanoseconds))
                    await routes.refresh()
                }
                let leader = routes.leader(of: partition)
                let key = Key(consumer: consumer, leader: leader)
                do {
                    if moving.reposition {
                        moving.position = try await self.load.reposition(partition, was: moving.position, at: leader)
                        moving.reposition = false
                    }
                    enum Step { case adopt(Entry), joined, connect }
                    let step = self.state.withLock { state -> Step in
                        if let entry = state.lanes[key] { return .adopt(entry) }
                        if state.opening[key] != nil {
                            state.opening[key]![partition] = moving
                            return .joined
                        }
                        state.opening[key] = [partition: moving]
                        return .connect
                    }
                    switch step {
                    case .adopt(let entry):
                        return entry.loop.execute { [moving] in
                            entry.lane.value.adopt(partition, moving)
                            self.settled()
                        }
                    case .joined:
                        return self.settled()
                    case .connect:
                        let connection: KafkaConnection
                        do {
                            connection = try await KafkaConnection.connect(
                                host: leader.host, port: leader.port, clientID: "rafka-bench-consumer-\(consumer)",
                                connectTimeout: LeaderMap.connectTimeout)
                        } catch {
                            // Whatever joined meanwhile moves again, each keeping its own time.
                            let queued = self.state.withLock { $0.opening.removeValue(forKey: key) } ?? [:]
                            for (other, its) in queued where other != partition { self.move(other, its, consumer: consumer) }
                            throw error
                        }
                        let queued = self.state.withLock { $0.opening.removeValue(forKey: key) } ?? [partition: moving]
                        do {
                            try self.open(consumer: consumer, leader: leader, connection: connection, partitions: queued)
                        } catch {
                            connection.close()
                            self.failed(error)
                        }
                        return self.settled()
                    }
                } catch {
                    problem = "\(leader.host):\(leader.port): \(error)"
                }
                if MonotonicClock.now() - (moving.since ?? 0) > LeaderMap.patienceNanoseconds {
                    let seconds = LeaderMap.patienceNanoseconds / 1_000_000_000
                    let why = problem ?? routes.problem
                    self.failed(
                        KafkaClientError("no leader served partition \(partition) within \(seconds) s\(why.map { " (\($0))" } ?? "")"))
                    break
                }
            }
            self.settled()
        }
    }

    /// Every lane's fetch latencies once every lane ended and no partition is on its way.
    func finished() async throws -> LatencyHistogram {
        var total = LatencyHistogram()
        var awaited = 0
        while true {
            let (next, pending, failure) = self.state.withLock { state in
                (awaited < state.results.count ? state.results[awaited] : nil, state.pending, state.failure)
            }
            if let failure { throw failure }
            if let next {
                total.add(try await next.get())
                awaited += 1
            } else if pending == 0 {
                return total
            } else {
                try await Task.sleep(nanoseconds: 10_000_000)
            }
        }
    }
}

/// One consumer connection's fetches, on its event loop (Isolation: the connection's loop): the
/// next fetch leaves as soon as the last one's answer is read, and an arrival is timed when the
/// answer comes off the socket, not when a thread of the concurrency pool gets to it.
private final class FetchLane {
    private let lanes: FetchLanes
    private let key: FetchLanes.Key
    private let load: ConsumeLoad
    private let connection: KafkaConnection
    private let version: Int16
    private var positions: [Int32: Int64]
    /// The partitions in order, as requests list them.
    private var order: [Int32]
    /// Partitions that came here moving and have not yet been answered without an error: since
    /// when no leader has served them.
    private var unservedSince: [Int32: Int64] = [:]
    private let measureFrom: Int64
    let promise: EventLoopPromise<LatencyHistogram>
    private var histogram = LatencyHistogram()
    /// With `--fetch-sessions` on Fetch v7 and later; nil otherwise (every request lists every partition).
    private var session: FetchSessionState?
    /// No more fetches: the run stopped, every partition moved away, or the lane failed.
    private var ended = false

    init(
        lanes: FetchLanes, key: FetchLanes.Key, connection: KafkaConnection, version: Int16,
        partitions: [Int32: FetchLanes.Moving]
    ) {
        self.lanes = lanes
        self.key = key
        self.load = lanes.load
        self.connection = connection
        self.version = version
        self.positions = partitions.mapValues(\.position)
        self.order = partitions.keys.sorted()
        self.unservedSince = partitions.compactMapValues(\.since)
        self.measureFrom = lanes.measureFrom
        self.promise = connection.eventLoop.makePromise()
        self.session = load.settings.fetchSessions && version >= 7 ? FetchSessionState() : nil
    }

    func start() {
        self.fetch()
    }

    /// Reads `partition` from its position on, from the next fetch.
    func adopt(_ partition: Int32, _ moving: FetchLanes.Moving) {
        guard !self.ended else { return self.lanes.move(partition, moving, consumer: self.key.consumer) }
        self.positions[partition] = moving.position
        if let since = moving.since { self.unservedSince[partition] = since }
        self.order.insert(partition, at: self.order.firstIndex { $0 > partition } ?? self.order.endIndex)
    }

    /// Stops reading `partition` here and sends it to its leader now, for `reason`; with
    /// `reposition`, its position is looked up there again; `hinted`: the answer named the leader.
    private func moveAway(_ partition: Int32, reason: String, now: Int64, reposition: Bool = false, hinted: Bool = false) {
        guard let position = self.positions.removeValue(forKey: partition) else { return }
        self.order.removeAll { $0 == partition }
        let since = self.unservedSince.removeValue(forKey: partition) ?? now
        self.session?.reset()  // the next request lists what is left and starts a session without it
        self.load.counters.count(retry: reason)
        self.lanes.move(
            partition, .init(position: position, reposition: reposition, since: since, hinted: hinted),
            consumer: self.key.consumer)
    }

    private func end(failing error: (any Error)? = nil) {
        self.ended = true
        self.lanes.ended(self, key: self.key)
        self.connection.close()
        if let error {
            self.lanes.failed(error)
            self.promise.fail(error)
        } else {
            self.promise.succeed(self.histogram)
        }
    }

    private func fetch() {
        guard !self.lanes.stopped, !self.positions.isEmpty else { return self.end() }
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
            switch result {
            case .success(let response):
                do {
                    try lane.received(response, listed: listed, sent: sent, arrived: arrived)
                } catch {
                    return lane.end(failing: error)
                }
                lane.fetch()
            case .failure:
                // The connection closed or was reset (the leader left, or was killed), or the
                // fetch timed out, which closes it too: every partition is read on wherever it
                // is led by then.
                for partition in lane.order {
                    lane.moveAway(partition, reason: "fetch \(LeaderMap.connectionClosed)", now: arrived)
                }
                lane.end()
            }
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
        let endpoints = response.nodeEndpoints.map { BenchTopic.Leader(id: $0.nodeId, host: $0.host, port: Int($0.port)) }
        for answer in response.responses.first?.partitions ?? [] {
            guard var position = self.positions[answer.partitionIndex] else { continue }  // moved away
            let code = KafkaErrorCode(rawValue: answer.errorCode)
            if LeaderMap.moved.contains(code) {
                let hinted = self.load.topic.routes.learn(
                    answer.partitionIndex, leaderID: answer.currentLeader.leaderId,
                    epoch: answer.currentLeader.leaderEpoch, endpoints: endpoints)
                self.moveAway(answer.partitionIndex, reason: "fetch \(code)", now: arrived, hinted: hinted)
                continue
            }
            guard answer.errorCode == 0 else {
                self.load.counters.count(error: "fetch \(code)")
                if code == .offsetOutOfRange {
                    // Records this reader had not read are gone (a leader without them took the
                    // partition over, or retention removed them): it goes on at the log's start or
                    // end (`ConsumeLoad.reposition`), as a Kafka consumer resets its offset. The
                    // error stays counted.
                    self.moveAway(answer.partitionIndex, reason: "fetch \(code)", now: arrived, reposition: true)
                }
                continue
            }
            if !self.unservedSince.isEmpty { self.unservedSince[answer.partitionIndex] = nil }
            guard let bytes = answer.records else { continue }
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
