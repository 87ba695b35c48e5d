import KafkaProtocol
import NIOCore
import RafkaClient
import HeapModule
import Synchronization

/// A counter shared by tasks.
final class SharedCounter: Sendable {
    let value = Atomic<Int>(0)

    /// Adds `amount`, returning the value before.
    func add(_ amount: Int) -> Int { self.value.add(amount, ordering: .relaxed).oldValue }
}

/// Counters every worker adds to and the progress line reads.
final class LoadCounters: Sendable {
    /// Records and value bytes acknowledged (produce) or received (consume), warm-up included.
    let records = Atomic<Int>(0)
    /// Records, payload bytes and wire bytes in the measured phase.
    let measuredRecords = Atomic<Int>(0)
    let measuredPayloadBytes = Atomic<Int>(0)
    let measuredWireBytes = Atomic<Int>(0)
    /// The last measured completion (monotonic ns).
    let lastMeasured = Atomic<Int64>(0)
    /// The highest latency (ns) since the progress line last took it, warm-up included.
    let worstLatency = Atomic<Int64>(0)
    /// Consumers: set when they stopped (done or failed), so producers stop waiting for them.
    /// Producers: set when one failed, so the others stop too.
    let finished = Atomic<Bool>(false)
    let errors = Mutex<[String: Int]>([:])
    /// What sent a batch (producers) or a partition's reader (consumers) to the partition's
    /// leader again, with how often: the partition moved (its error code), or the connection
    /// to its leader closed.
    let retries = Mutex<[String: Int]>([:])
    /// Consumers: fetch requests sent, those that continued a fetch session (incremental), and
    /// sessions the broker lost (`--fetch-sessions`).
    let fetches = Atomic<Int>(0)
    let incrementalFetches = Atomic<Int>(0)
    let fetchSessionResets = Atomic<Int>(0)

    func count(error: String) {
        self.errors.withLock { $0[error, default: 0] += 1 }
    }

    func count(retry: String) {
        self.retries.withLock { $0[retry, default: 0] += 1 }
    }

    func measured(records: Int, payloadBytes: Int, wireBytes: Int, at time: Int64) {
        self.measuredRecords.add(records, ordering: .relaxed)
        self.measuredPayloadBytes.add(payloadBytes, ordering: .relaxed)
        self.measuredWireBytes.add(wireBytes, ordering: .relaxed)
        self.lastMeasured.max(time, ordering: .relaxed)
    }
}

/// The producing side of a run: `producers` connections (per partition leader), each with
/// `inFlight` requests outstanding. Records without keys go in batches round-robin over the
/// topic's partitions (as Kafka's sticky partitioner does for them); records with keys go to
/// their keys' partitions, each partition its share (`BatchTemplates`). At the highest rate a
/// request carries one batch for every partition of its leader, as Kafka producers send all
/// ready batches at once, up to 16 MiB (`ProducerLane.sendBytesMax`).
///
/// With a target rate the schedule is open-loop: batch `k` of a stream of batches is due at
/// `start + k × batchInterval` whether or not earlier ones were answered, and latency counts
/// from when each record was due, so a stalled broker shows up as latency rather than as
/// fewer requests (coordinated omission). Without keys a producer has one stream; with keys one
/// per partition, at its share of the rate. Batches due together leave in one request, at most
/// one per partition (a second would share the first's acknowledgement, which names only the
/// partition), so a producer behind schedule catches up over several requests.
/// Without a target rate, each of the `inFlight` sends is followed by the next as soon as it
/// is answered, and latency counts from the send.
///
/// Each producer runs on its connection's event loop (`ProducerLane`): its timers, sends and
/// answers need no thread of the concurrency pool, whose wake-ups would otherwise count as
/// latency the broker did not cause.
struct ProduceLoad: Sendable {
    let settings: BenchSettings
    let topic: BenchTopic
    let templates: BatchTemplates
    let counters: LoadCounters
    let ledger: SendLedger?
    /// e2e: what the consumers received, for the backlog limit (`BenchSettings.backlogBytesMax`).
    let consumed: LoadCounters?

    /// Monotonic ns: when the schedule starts, when measuring starts, when producing stops.
    struct Schedule: Sendable {
        var start: Int64
        var measureFrom: Int64
        var stopAt: Int64
    }

    /// What the producers measured of the measured phase.
    struct Latencies: Sendable {
        /// Each record's acknowledgement latency.
        var acknowledgements = LatencyHistogram()
        /// Open loop: how late each batch left after it was due to (its last record's due time):
        /// the producer's own share of the latency, which counts in it.
        var sendLag = LatencyHistogram()

        mutating func add(_ other: Latencies) {
            self.acknowledgements.add(other.acknowledgements)
            self.sendLag.add(other.sendLag)
        }
    }

    /// Runs every producer to the end of the schedule (or `settings.records`).
    func run(_ schedule: Schedule) async throws -> Latencies {
        let claimed = SharedCounter()
        var lanes: [EventLoopFuture<Latencies>] = []
        do {
            for producer in 0..<self.settings.producers {
                lanes.append(try await self.startLane(producer, claimed: claimed, schedule))
            }
        } catch {
            self.counters.finished.store(true, ordering: .relaxed)  // the lanes already started stop
            throw error
        }
        var total = Latencies()
        for lane in lanes { total.add(try await lane.get()) }
        return total
    }

    /// Connects producer `producer` to every leader and starts its lane on one connection's loop.
    private func startLane(
        _ producer: Int,
        claimed: SharedCounter,
        _ schedule: Schedule
    ) async throws -> EventLoopFuture<ProduceLoad.Latencies> {
        let connections = try await self.topic.connect(
            self.topic.partitions,
            clientID: "rafka-bench-producer-\(producer)"
        )
        let versions = try Dictionary(
            uniqueKeysWithValues: connections.map { try ($0.key, $0.value.version(for: ProduceRequest.self)) }
        )
        let loop = connections[self.topic.leaders[self.topic.partitions[producer % self.topic.partitions.count]]!]!
            .eventLoop
        return loop.flatSubmit {
            ProducerLane(
                load: self,
                producer: producer,
                connections: connections,
                versions: versions,
                claimed: claimed,
                schedule: schedule,
                loop: loop
            ).start()
        }
    }
}

/// One producer's sending, on one event loop (Isolation: `loop`). It sends whenever fewer than
/// `inFlight` sends are answered and a batch is due (open loop) or at once (highest rate),
/// and sleeps on the loop's timer otherwise.
private final class ProducerLane {
    /// An open-loop stream of batches: batch `k` is due at `start + k × batchInterval` and
    /// leaves when its last record is due (it filled up, or the linger ran out).
    private struct Stream {
        /// Its batches' set in `BatchTemplates.sets`.
        let set: Int
        /// nil: each batch to the next partition in turn (records without keys).
        let partition: Int32?
        let records: Int
        let recordInterval: Int64
        var batchInterval: Int64 { self.recordInterval * Int64(self.records) }
        /// Batches planned so far.
        var planned = 0
    }

    /// When a stream's next batch leaves.
    private struct Due: Comparable {
        var leaves: Int64
        var stream: Int
        static func < (a: Due, b: Due) -> Bool { (a.leaves, a.stream) < (b.leaves, b.stream) }
    }

    /// A batch about to be sent, and what its acknowledgement is measured against.
    private struct Planned {
        var partition: Int32
        var set: Int
        var variant: Int
        /// When its first record was due (open loop) or now (highest rate).
        var intended: Int64
        var recordInterval: Int64
        var records: Int
        var measured: Bool
        /// When a send of it first failed, its partition moved or its connection lost (nil: it has not).
        var failedSince: Int64? = nil
    }

    private let load: ProduceLoad
    private let producer: Int
    /// A connection to each leader this producer sends to, and the Produce version it speaks.
    private var connections: [BenchTopic.Leader: KafkaConnection]
    private var versions: [BenchTopic.Leader: Int16]
    /// Batches to send again, in the order they failed: their partitions moved to another
    /// leader, or the connection to their leader closed. They keep the time they were due, so
    /// the move counts in their latency.
    private var retrying: [Planned] = []
    /// Waiting out the back-off, asking where partitions went, or connecting to new leaders.
    private var recovering = false
    /// Why the last request failed, for the message if a batch finds no leader in time.
    private var lastFailure: String?
    private let claimed: SharedCounter
    private let schedule: ProduceLoad.Schedule
    private let loop: any EventLoop
    private let promise: EventLoopPromise<ProduceLoad.Latencies>
    /// Open loop: the streams, and when each one's next batch leaves (empty at the highest rate).
    private var streams: [Stream] = []
    private var due = Heap<Due>()
    /// Open loop: the partitions the request `planDue` is filling has a batch for (kept, not
    /// allocated for every request).
    private var inRequest = Set<Int32>()
    /// Highest rate: the partitions batches go to in turn (with keys, those a key hashes to),
    /// how many one send carries (one per partition, as many as fit `sendBytesMax`), and the
    /// batches planned so far.
    private let targets: [Int32]
    private let group: Int
    private var next = 0
    /// What one send carries at most at the highest rate. A Kafka producer sends every ready
    /// batch at once up to its `max.request.size`; with thousands of partitions of megabyte
    /// batches, one batch each would make a request of gigabytes (brokers refuse more than 100
    /// MiB), so the next send goes on with the next partitions.
    static let sendBytesMax = 16 << 20
    private var inFlight = 0
    private var ended = false
    private var completed = false
    private var wakeAt: Int64?
    /// Highest rate with consumers: their count and when it last moved (see `consumersAreBehind`).
    private var consumersSeen = (records: -1, at: Int64(0))
    private var latencies = ProduceLoad.Latencies()
    /// A buffer per template variant (per set) that this lane stamps and sends again and again
    /// (nil while being stamped, or before its first send). The request frame references it
    /// until the socket has taken all of it; a stamp while it is still referenced (or a variant
    /// used twice in one request) copies it first (ByteBuffer is copy-on-write), so bytes in
    /// flight never change and the copy is only paid when the socket lags.
    private var spareBatches: [[ByteBuffer?]]

    init(
        load: ProduceLoad,
        producer: Int,
        connections: [BenchTopic.Leader: KafkaConnection],
        versions: [BenchTopic.Leader: Int16],
        claimed: SharedCounter,
        schedule: ProduceLoad.Schedule,
        loop: any EventLoop
    ) {
        self.load = load
        self.producer = producer
        self.connections = connections
        self.versions = versions
        self.claimed = claimed
        self.schedule = schedule
        self.loop = loop
        self.promise = loop.makePromise()
        let settings = load.settings
        let templates = load.templates
        let partitions = load.topic.partitions
        self.spareBatches = templates.sets.map { Array(repeating: nil, count: $0?.assembled.count ?? 0) }
        self.targets = templates.shares == nil ? partitions : partitions.filter { templates.sets[Int($0)] != nil }
        let batchBytes = templates.sets.compactMap { $0?.assembled.map(\.readableBytes).max() }.max() ?? 1
        self.group = max(1, min(self.targets.count, Self.sendBytesMax / batchBytes))
        guard let rate = settings.targetRate.map({ $0 / Double(settings.producers) }) else { return }
        if let shares = templates.shares {
            for partition in self.targets {
                let set = templates.sets[Int(partition)]!
                // A partition whose keys are drawn less than once in 1,000 s gets a record that often.
                let interval = Int64(max(1, min(1e12, 1e9 / (rate * shares[Int(partition)]))))
                self.streams.append(
                    Stream(set: Int(partition), partition: partition, records: set.recordsPerBatch, recordInterval: interval))
            }
        } else {
            let records = templates.sets[0]!.recordsPerBatch
            self.streams = [Stream(set: 0, partition: nil, records: records, recordInterval: Int64(max(1, 1e9 / rate)))]
        }
        for (index, stream) in self.streams.enumerated() where self.intended(stream) < schedule.stopAt {
            self.due.insert(Due(leaves: self.leaves(stream), stream: index))
        }
    }

    func start() -> EventLoopFuture<ProduceLoad.Latencies> {
        self.wake(at: self.schedule.start)
        return self.promise.futureResult
    }

    private var bound: NIOLoopBound<ProducerLane> { NIOLoopBound(self, eventLoop: self.loop) }

    /// When the next batch of `stream` is due to leave.
    private func leaves(_ stream: Stream) -> Int64 {
        self.intended(stream) + stream.recordInterval * Int64(stream.records - 1)
    }

    /// When the first record of the next batch of `stream` is due.
    private func intended(_ stream: Stream) -> Int64 {
        self.schedule.start + Int64(stream.planned) * stream.batchInterval
    }

    /// Runs `pump` at `time` (monotonic ns), unless a wake-up no later is already set.
    private func wake(at time: Int64) {
        if let set = self.wakeAt, set <= time { return }
        self.wakeAt = time
        let lane = self.bound
        self.loop.scheduleTask(in: .nanoseconds(max(0, time - MonotonicClock.now()))) {
            lane.value.wakeAt = nil
            lane.value.pump()
        }
    }

    /// Sends what waits to be sent again, then what is due, while fewer than `inFlight` sends
    /// are unanswered.
    private func pump() {
        while self.inFlight < self.load.settings.inFlight {
            if self.load.counters.finished.load(ordering: .relaxed) {
                self.ended = true  // another producer failed
                self.retrying.removeAll()
                break
            }
            if !self.retrying.isEmpty && !self.recovering {
                // Nothing sent: every leader waited for is still without a connection, and
                // `recovered` pumps again.
                guard self.send(self.takeRetries()) else { break }
                continue
            }
            if self.ended { break }
            let now = MonotonicClock.now()
            let planned: [Planned]
            if self.streams.isEmpty {
                guard now < self.schedule.stopAt else {
                    self.ended = true
                    break
                }
                if self.consumersAreBehind(now: now) { return self.wake(at: now + 200_000) }
                planned = self.planAtOnce(now: now)
            } else {
                guard let first = self.due.min else {
                    self.ended = true
                    break
                }
                if first.leaves > now + 20_000 { return self.wake(at: first.leaves) }
                planned = self.planDue(now: now)
                if planned.isEmpty { continue }  // streams that reached the end of the schedule
            }
            if let limit = self.load.settings.records {
                let records = planned.reduce(0) { $0 + ($1.measured ? $1.records : 0) }
                if records > 0 && self.claimed.add(records) >= limit {
                    self.ended = true
                    break
                }
            }
            guard self.send(planned) else { break }  // as above
        }
        self.completeIfDone()
    }

    /// Highest rate: the next `group` batches, to the next partitions in turn.
    private func planAtOnce(now: Int64) -> [Planned] {
        let templates = self.load.templates
        let measured = now >= self.schedule.measureFrom
        defer { self.next += self.group }
        return (self.next..<(self.next + self.group)).map { k in
            let partition = self.targets[(k + self.producer) % self.targets.count]
            let setIndex = templates.shares == nil ? 0 : Int(partition)
            let set = templates.sets[setIndex]!
            let round = templates.shares == nil ? k : k / self.targets.count
            return Planned(
                partition: partition, set: setIndex, variant: set.variant(round), intended: now, recordInterval: 0,
                records: set.recordsPerBatch, measured: measured)
        }
    }

    /// Open loop: every batch due to leave by now, in the order due, up to `sendBytesMax` and
    /// to the first that would be a partition's second in the request; streams whose next
    /// batch falls after the schedule's end end.
    private func planDue(now: Int64) -> [Planned] {
        let templates = self.load.templates
        let partitions = self.load.topic.partitions
        var planned: [Planned] = []
        self.inRequest.removeAll(keepingCapacity: true)
        var bytes = 0
        while let first = self.due.min, first.leaves <= now + 20_000, bytes < Self.sendBytesMax {
            var stream = self.streams[first.stream]
            let intended = self.intended(stream)
            guard intended < self.schedule.stopAt else {
                _ = self.due.removeMin()
                continue
            }
            let partition = stream.partition ?? partitions[(stream.planned + self.producer) % partitions.count]
            // One batch per partition in a request, as Kafka producers send: a stream behind
            // schedule sends its next batch in the next request.
            guard self.inRequest.insert(partition).inserted else { break }
            _ = self.due.removeMin()
            let set = templates.sets[stream.set]!
            let measured = intended >= self.schedule.measureFrom
            if measured { self.latencies.sendLag.record(nanoseconds: now - first.leaves) }
            planned.append(
                Planned(
                    partition: partition, set: stream.set, variant: set.variant(stream.planned), intended: intended,
                    recordInterval: stream.recordInterval, records: stream.records, measured: measured))
            bytes += set.assembled[set.variant(stream.planned)].readableBytes
            stream.planned += 1
            self.streams[first.stream] = stream
            // A stream whose next batch falls after the schedule's end ends now, not when that
            // batch would be due (for a cold partition, up to 1,000 s later).
            if self.intended(stream) < self.schedule.stopAt {
                self.due.insert(Due(leaves: self.leaves(stream), stream: first.stream))
            }
        }
        return planned
    }

    /// At the highest rate with consumers: whether they are more than the backlog limit behind
    /// what was acknowledged. Stops counting them once they stopped, or after 30 s without
    /// progress (records lost with acks=0 never arrive), so waiting cannot hang a run.
    private func consumersAreBehind(now: Int64) -> Bool {
        let settings = self.load.settings
        guard let consumed = self.load.consumed, settings.backlogBytesMax > 0,
            !consumed.finished.load(ordering: .relaxed)
        else {
            return false
        }
        let limit = max(1, settings.backlogBytesMax / max(1, settings.recordBytes + settings.keyBytes))
        let records = consumed.records.load(ordering: .relaxed)
        guard self.load.counters.records.load(ordering: .relaxed) - records > limit else {
            self.consumersSeen = (-1, 0)
            return false
        }
        if records != self.consumersSeen.records { self.consumersSeen = (records, now) }
        return now - self.consumersSeen.at < 30_000_000_000
    }

    /// Batches waiting to be sent again, at most one per partition (as any request carries);
    /// the others wait for the next request.
    private func takeRetries() -> [Planned] {
        self.inRequest.removeAll(keepingCapacity: true)
        var taken: [Planned] = []
        var kept: [Planned] = []
        for plan in self.retrying {
            if self.inRequest.insert(plan.partition).inserted { taken.append(plan) } else { kept.append(plan) }
        }
        self.retrying = kept
        return taken
    }

    /// Sets `plan` aside to be sent again once its partition's leader is known (after
    /// `LeaderMap.retryBackoff`, or at once when the answer named a newer leader: `hinted`), for
    /// `reason`.
    private func retry(_ plan: Planned, reason: String?, now: Int64, hinted: Bool = false) {
        var plan = plan
        plan.failedSince = plan.failedSince ?? now
        self.retrying.append(plan)
        if let reason { self.load.counters.count(retry: reason) }
        self.recover(hinted: hinted)
    }

    /// Waits `LeaderMap.retryBackoff`, asks where the partitions went (neither when `hinted`: an
    /// answer named where), connects to leaders this producer has no connection to, and sends the
    /// waiting batches again. One recovery at a time; a batch that finds no leader to take it
    /// within `LeaderMap.patienceNanoseconds` fails the run.
    private func recover(hinted: Bool) {
        guard !self.recovering else { return }
        self.recovering = true
        let lane = self.bound
        let loop = self.loop
        let routes = self.load.topic.routes
        let clientID = "rafka-bench-producer-\(self.producer)"
        loop.scheduleTask(in: hinted ? .zero : LeaderMap.retryBackoff) {
            Task {
                if !hinted { await routes.refresh() }
                let wanted = (try? await loop.submit { lane.value.leadersWithoutConnection() }.get()) ?? []
                var opened: [(leader: BenchTopic.Leader, connection: KafkaConnection)] = []
                var failure: String?
                for leader in wanted {
                    do {
                        opened.append((leader, try await KafkaConnection.connect(
                            host: leader.host, port: leader.port, clientID: clientID, group: loop,
                            connectTimeout: LeaderMap.connectTimeout)))
                    } catch {
                        failure = "connecting to \(leader.host):\(leader.port): \(error)"
                    }
                }
                loop.execute { [opened, failure] in lane.value.recovered(opened, failure: failure) }
            }
        }
    }

    /// The leaders of waiting batches that this producer has no open connection to.
    private func leadersWithoutConnection() -> [BenchTopic.Leader] {
        let leaders = Set(self.retrying.map { self.load.topic.routes.leader(of: $0.partition) })
        return leaders.filter { self.connections[$0]?.isActive != true }
    }

    private func recovered(_ opened: [(leader: BenchTopic.Leader, connection: KafkaConnection)], failure: String?) {
        self.recovering = false
        self.lastFailure = failure ?? self.load.topic.routes.problem ?? self.lastFailure
        for (leader, connection) in opened {
            guard !self.completed, let version = try? connection.version(for: ProduceRequest.self) else {
                connection.close()
                continue
            }
            self.connections[leader]?.close()
            self.connections[leader] = connection
            self.versions[leader] = version
        }
        // Only batches whose leader this producer cannot reach: others wait for a free request slot.
        let now = MonotonicClock.now()
        let unreachable = Set(self.leadersWithoutConnection())
        if let stuck = self.retrying.first(where: {
            now - $0.failedSince! > LeaderMap.patienceNanoseconds
                && unreachable.contains(self.load.topic.routes.leader(of: $0.partition))
        }) {
            let seconds = LeaderMap.patienceNanoseconds / 1_000_000_000
            let last = self.lastFailure.map { " (last failure: \($0))" } ?? ""
            return self.fail(
                KafkaClientError("no leader took a batch of partition \(stuck.partition) within \(seconds) s\(last)"))
        }
        self.pump()
    }

    /// Sends `planned`, one request per leader. A batch whose partition's leader has no open
    /// connection waits for one (`recover`). Returns whether a request went out.
    private func send(_ planned: [Planned]) -> Bool {
        let load = self.load
        let timestamp = MonotonicClock.wallMilliseconds()
        var byLeader: [BenchTopic.Leader: [(plan: Planned, batch: ByteBuffer)]] = [:]
        for plan in planned {
            let leader = load.topic.routes.leader(of: plan.partition)
            guard let connection = self.connections[leader], connection.isActive else {
                // A new leader is connected to first; a closed connection counts as a retry.
                let closed = self.connections[leader] != nil
                self.retry(plan, reason: closed ? LeaderMap.connectionClosed : nil, now: MonotonicClock.now())
                continue
            }
            let set = load.templates.sets[plan.set]!
            // Taken out of its slot before stamping, so that the stamp writes in place.
            var batch = self.spareBatches[plan.set][plan.variant] ?? set.assembled[plan.variant]
            self.spareBatches[plan.set][plan.variant] = nil
            set.stamp(&batch, variant: plan.variant, timestampMilliseconds: timestamp)
            byLeader[leader, default: []].append((plan, batch))
        }
        guard !byLeader.isEmpty else { return false }
        self.inFlight += 1
        let lane = self.bound
        let answers = byLeader.map { leader, batches in
            var request = ProduceRequest()
            request.acks = load.settings.acks
            request.timeoutMs = 30_000
            request.topicData = [
                .init(
                    name: load.topic.name,
                    partitionData: batches.map { .init(index: $0.plan.partition, records: $0.batch) }
                )
            ]
            let connection = self.connections[leader]!
            let version = self.versions[leader]!
            let sent = MonotonicClock.now()
            let answered: EventLoopFuture<ProduceResponse?> =
                load.settings.acks == 0
                ? connection.requestWithoutResponse(request, version: version).map { nil }
                : connection.request(request, version: version, timeout: .seconds(60)).map { $0 }
            let sizes = batches.map { (plan: $0.plan, wireBytes: $0.batch.readableBytes) }
            return answered.hop(to: self.loop).map { response in
                lane.value.acknowledged(response, batches: sizes, sent: sent)
            }.recover { error in
                lane.value.requestFailed(error, batches: sizes.map(\.plan), connection: connection)
            }
        }
        for batches in byLeader.values {
            for (plan, batch) in batches { self.spareBatches[plan.set][plan.variant] = batch }
        }
        EventLoopFuture.whenAllComplete(answers, on: self.loop).whenSuccess { results in
            let this = lane.value
            this.inFlight -= 1
            for case .failure(let error) in results { this.fail(error) }
            // On the next turn of the loop: with acks=0 a write the socket takes at once completes
            // here, inside `send`, and pumping from here would recurse for as long as it does.
            this.loop.execute { lane.value.pump() }
        }
        return true
    }

    private func acknowledged(
        _ response: ProduceResponse?,
        batches: [(plan: Planned, wireBytes: Int)],
        sent: Int64
    ) {
        let done = MonotonicClock.now()
        var baseOffsets: [Int32: Int64] = [:]
        var moved: [Int32: (code: KafkaErrorCode, hinted: Bool)] = [:]
        let endpoints = (response?.nodeEndpoints ?? []).map {
            BenchTopic.Leader(id: $0.nodeId, host: $0.host, port: Int($0.port))
        }
        for answer in response?.responses.first?.partitionResponses ?? [] {
            let code = KafkaErrorCode(rawValue: answer.errorCode)
            if answer.errorCode == 0 {
                baseOffsets[answer.index] = answer.baseOffset
            } else if LeaderMap.moved.contains(code) {
                let hinted = self.load.topic.routes.learn(
                    answer.index, leaderID: answer.currentLeader.leaderId, epoch: answer.currentLeader.leaderEpoch,
                    endpoints: endpoints)
                moved[answer.index] = (code, hinted)
            } else {
                self.load.counters.count(error: "\(code)")
            }
        }
        for (plan, wireBytes) in batches {
            if let (code, hinted) = moved[plan.partition] {
                self.retry(plan, reason: "\(code)", now: done, hinted: hinted)
                continue
            }
            let baseOffset = baseOffsets[plan.partition] ?? -1
            guard response == nil || baseOffset >= 0 else { continue }
            self.load.counters.records.add(plan.records, ordering: .relaxed)
            let record = SendLedger.Sent(
                intendedNanoseconds: plan.recordInterval > 0 ? plan.intended : sent,
                recordIntervalNanoseconds: plan.recordInterval,
                records: plan.records,
                measured: plan.measured
            )
            self.load.ledger?.acknowledged(.init(partition: plan.partition, baseOffset: baseOffset), record)
            self.load.counters.worstLatency.max(done - record.intendedNanoseconds, ordering: .relaxed)
            guard plan.measured else { continue }
            record.latencies(arrivedAt: done, into: &self.latencies.acknowledgements)
            self.load.counters.measured(
                records: plan.records,
                payloadBytes: self.load.templates.sets[plan.set]!.payloadBytes,
                wireBytes: wireBytes,
                at: done
            )
        }
    }

    /// A request that got no answer: the connection closed or was reset (the leader left, or
    /// was killed), or the request timed out, which closes it too. Its batches are sent again
    /// over a new connection, to wherever their partitions are led by then.
    private func requestFailed(_ error: any Error, batches: [Planned], connection: KafkaConnection) {
        connection.close()
        self.lastFailure = "\(error)"
        for plan in batches { self.retry(plan, reason: LeaderMap.connectionClosed, now: MonotonicClock.now()) }
    }

    private func fail(_ error: any Error) {
        self.ended = true
        self.retrying.removeAll()
        self.load.counters.finished.store(true, ordering: .relaxed)
        guard !self.completed else { return }
        self.completed = true
        self.promise.fail(error)
    }

    private func completeIfDone() {
        guard self.ended, self.inFlight == 0, self.retrying.isEmpty, !self.recovering, !self.completed else { return }
        self.completed = true
        self.promise.succeed(self.latencies)
    }
}
