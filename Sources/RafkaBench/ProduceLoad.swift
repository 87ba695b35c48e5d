import KafkaProtocol
import NIOCore
import RafkaClient
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

    func count(error: String) {
        self.errors.withLock { $0[error, default: 0] += 1 }
    }

    func measured(records: Int, payloadBytes: Int, wireBytes: Int, at time: Int64) {
        self.measuredRecords.add(records, ordering: .relaxed)
        self.measuredPayloadBytes.add(payloadBytes, ordering: .relaxed)
        self.measuredWireBytes.add(wireBytes, ordering: .relaxed)
        self.lastMeasured.max(time, ordering: .relaxed)
    }
}

/// The producing side of a run: `producers` connections (per partition leader), each with
/// `inFlight` requests outstanding, writing batches round-robin over the topic's partitions
/// (as Kafka's sticky partitioner does for records without keys). At the highest rate a
/// request carries one batch for every partition of its leader, as Kafka producers send all
/// ready batches at once, up to 16 MiB (`ProducerLane.sendBytesMax`).
///
/// With a target rate the schedule is open-loop: batch `k` of a producer is due at
/// `start + k × batchInterval` whether or not earlier ones were answered, and latency counts
/// from when each record was due, so a stalled broker shows up as latency rather than as
/// fewer requests (coordinated omission). Without one, each of the `inFlight` sends is followed
/// by the next as soon as it is answered, and latency counts from the send.
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
/// `inFlight` sends are answered and the next batch is due (open loop) or at once (highest rate),
/// and sleeps on the loop's timer otherwise.
private final class ProducerLane {
    private let load: ProduceLoad
    private let producer: Int
    private let connections: [BenchTopic.Leader: KafkaConnection]
    private let versions: [BenchTopic.Leader: Int16]
    private let claimed: SharedCounter
    private let schedule: ProduceLoad.Schedule
    private let loop: any EventLoop
    private let promise: EventLoopPromise<ProduceLoad.Latencies>
    /// Open loop: nanoseconds between records and between batches of this producer (0: highest rate).
    private let recordInterval: Int64
    private let batchInterval: Int64
    /// Batches per send: one on a schedule; at the highest rate one per partition, as many as
    /// fit `sendBytesMax`.
    private let group: Int
    /// What one send carries at most at the highest rate. A Kafka producer sends every ready
    /// batch at once up to its `max.request.size`; with thousands of partitions of megabyte
    /// batches, one batch each would make a request of gigabytes (brokers refuse more than 100
    /// MiB), so the next send goes on with the next partitions.
    static let sendBytesMax = 16 << 20
    private var next = 0
    private var inFlight = 0
    private var ended = false
    private var completed = false
    private var wakeAt: Int64?
    /// Highest rate with consumers: their count and when it last moved (see `consumersAreBehind`).
    private var consumersSeen = (records: -1, at: Int64(0))
    private var latencies = ProduceLoad.Latencies()
    /// A buffer per template variant that this lane stamps and sends again and again (nil
    /// while being stamped, or before its first send). The request frame references it until
    /// the socket has taken all of it; a stamp while it is still referenced (or a variant used
    /// twice in one request) copies it first (ByteBuffer is copy-on-write), so bytes in flight
    /// never change and the copy is only paid when the socket lags.
    private var spareBatches: [ByteBuffer?]

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
        self.recordInterval = settings.targetRate.map { Int64(1e9 * Double(settings.producers) / $0) } ?? 0
        self.batchInterval = self.recordInterval * Int64(load.templates.recordsPerBatch)
        let batchBytes = load.templates.assembled.map(\.readableBytes).max() ?? 1
        self.group =
            self.batchInterval > 0 ? 1 : max(1, min(load.topic.partitions.count, Self.sendBytesMax / batchBytes))
        self.spareBatches = Array(repeating: nil, count: load.templates.assembled.count)
    }

    func start() -> EventLoopFuture<ProduceLoad.Latencies> {
        self.wake(at: self.schedule.start)
        return self.promise.futureResult
    }

    private var bound: NIOLoopBound<ProducerLane> { NIOLoopBound(self, eventLoop: self.loop) }

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

    /// Sends what is due while fewer than `inFlight` sends are unanswered.
    private func pump() {
        let perBatch = self.load.templates.recordsPerBatch
        while !self.ended && self.inFlight < self.load.settings.inFlight {
            if self.load.counters.finished.load(ordering: .relaxed) {
                self.ended = true  // another producer failed
                break
            }
            let now = MonotonicClock.now()
            let intended: Int64
            if self.batchInterval > 0 {
                intended = self.schedule.start + Int64(self.next) * self.batchInterval
                guard intended < self.schedule.stopAt else {
                    self.ended = true
                    break
                }
                // The batch leaves when its last record is due (it filled up) or the linger ran out.
                let leaves = intended + self.recordInterval * Int64(perBatch - 1)
                if leaves > now + 20_000 { return self.wake(at: leaves) }
                if intended >= self.schedule.measureFrom { self.latencies.sendLag.record(nanoseconds: now - leaves) }
            } else {
                guard now < self.schedule.stopAt else {
                    self.ended = true
                    break
                }
                if self.consumersAreBehind(now: now) { return self.wake(at: now + 200_000) }
                intended = now
            }
            let measured = intended >= self.schedule.measureFrom
            if measured, let limit = self.load.settings.records, self.claimed.add(perBatch * self.group) >= limit {
                self.ended = true
                break
            }
            let first = self.next
            self.next += self.group
            self.send(first: first, intended: intended, measured: measured)
        }
        self.completeIfDone()
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

    /// Sends batches `first..<first + group`, one request per leader.
    private func send(first: Int, intended: Int64, measured: Bool) {
        let load = self.load
        let partitions = load.topic.partitions
        let timestamp = MonotonicClock.wallMilliseconds()
        var byLeader: [BenchTopic.Leader: [(partition: Int32, variant: Int, batch: ByteBuffer)]] = [:]
        for k in first..<(first + self.group) {
            let partition = partitions[(k + self.producer) % partitions.count]
            let variant = load.templates.variant(k)
            // Taken out of its slot before stamping, so that the stamp writes in place.
            var batch = self.spareBatches[variant] ?? load.templates.assembled[variant]
            self.spareBatches[variant] = nil
            load.templates.stamp(&batch, variant: variant, timestampMilliseconds: timestamp)
            byLeader[load.topic.leaders[partition]!, default: []].append((partition, variant, batch))
        }
        self.inFlight += 1
        let lane = self.bound
        let answers = byLeader.map { leader, batches in
            var request = ProduceRequest()
            request.acks = load.settings.acks
            request.timeoutMs = 30_000
            request.topicData = [
                .init(
                    name: load.topic.name,
                    partitionData: batches.map { .init(index: $0.partition, records: $0.batch) }
                )
            ]
            let connection = self.connections[leader]!
            let version = self.versions[leader]!
            let sent = MonotonicClock.now()
            let answered: EventLoopFuture<ProduceResponse?> =
                load.settings.acks == 0
                ? connection.requestWithoutResponse(request, version: version).map { nil }
                : connection.request(request, version: version, timeout: .seconds(60)).map { $0 }
            let sizes = batches.map { (partition: $0.partition, wireBytes: $0.batch.readableBytes) }
            return answered.hop(to: self.loop).map { response in
                lane.value.acknowledged(response, batches: sizes, intended: intended, sent: sent, measured: measured)
            }
        }
        for batches in byLeader.values {
            for (_, variant, batch) in batches { self.spareBatches[variant] = batch }
        }
        EventLoopFuture.whenAllComplete(answers, on: self.loop).whenSuccess { results in
            let this = lane.value
            this.inFlight -= 1
            for case .failure(let error) in results { this.fail(error) }
            // On the next turn of the loop: with acks=0 a write the socket takes at once completes
            // here, inside `send`, and pumping from here would recurse for as long as it does.
            this.loop.execute { lane.value.pump() }
        }
    }

    private func acknowledged(
        _ response: ProduceResponse?,
        batches: [(partition: Int32, wireBytes: Int)],
        intended: Int64,
        sent: Int64,
        measured: Bool
    ) {
        let done = MonotonicClock.now()
        let perBatch = self.load.templates.recordsPerBatch
        var baseOffsets: [Int32: Int64] = [:]
        for answer in response?.responses.first?.partitionResponses ?? [] {
            if answer.errorCode == 0 {
                baseOffsets[answer.index] = answer.baseOffset
            } else {
                self.load.counters.count(error: "\(KafkaErrorCode(rawValue: answer.errorCode))")
            }
        }
        for (partition, wireBytes) in batches {
            let baseOffset = baseOffsets[partition] ?? -1
            guard response == nil || baseOffset >= 0 else { continue }
            self.load.counters.records.add(perBatch, ordering: .relaxed)
            let record = SendLedger.Sent(
                intendedNanoseconds: self.batchInterval > 0 ? intended : sent,
                recordIntervalNanoseconds: self.recordInterval,
                records: perBatch,
                measured: measured
            )
            self.load.ledger?.acknowledged(.init(partition: partition, baseOffset: baseOffset), record)
            self.load.counters.worstLatency.max(done - record.intendedNanoseconds, ordering: .relaxed)
            guard measured else { continue }
            record.latencies(arrivedAt: done, into: &self.latencies.acknowledgements)
            self.load.counters.measured(
                records: perBatch,
                payloadBytes: self.load.templates.payloadBytes,
                wireBytes: wireBytes,
                at: done
            )
        }
    }

    private func fail(_ error: any Error) {
        self.ended = true
        self.load.counters.finished.store(true, ordering: .relaxed)
        guard !self.completed else { return }
        self.completed = true
        self.promise.fail(error)
    }

    private func completeIfDone() {
        guard self.ended, self.inFlight == 0, !self.completed else { return }
        self.completed = true
        self.promise.succeed(self.latencies)
    }
}
