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
/// ready batches at once.
///
/// With a target rate the schedule is open-loop: batch `k` of a producer is due at
/// `start + k × batchInterval` whether or not earlier ones were answered, and latency counts
/// from when each record was due, so a stalled broker shows up as latency rather than as
/// fewer requests (coordinated omission). Without one, each lane sends as soon as its previous
/// request is answered, and latency counts from the send.
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

    /// Runs every producer to the end of the schedule (or `settings.records`); returns the
    /// acknowledgement latencies of the measured records.
    func run(_ schedule: Schedule) async throws -> LatencyHistogram {
        let claimed = SharedCounter()
        return try await withThrowingTaskGroup(of: LatencyHistogram.self) { group in
            for producer in 0..<self.settings.producers {
                let connections = try await self.topic.connect(self.topic.partitions, clientID: "rafka-bench-producer-\(producer)")
                let next = SharedCounter()
                for _ in 0..<self.settings.inFlight {
                    group.addTask {
                        try await self.lane(producer, connections: connections, next: next, claimed: claimed, schedule)
                    }
                }
            }
            var total = LatencyHistogram()
            for try await histogram in group { total.add(histogram) }
            return total
        }
    }

    /// At the highest rate with consumers: waits while they are more than the backlog limit
    /// behind what was acknowledged — until `stopAt`, until they stopped, or for at most 30 s
    /// without progress (records lost with acks=0 never arrive), so waiting cannot hang a run.
    private func waitForConsumers(until stopAt: Int64) async throws {
        guard let consumed = self.consumed, self.settings.backlogBytesMax > 0 else { return }
        let limit = max(1, self.settings.backlogBytesMax / max(1, self.settings.recordBytes + self.settings.keyBytes))
        var seen = consumed.records.load(ordering: .relaxed)
        var progressed = MonotonicClock.now()
        while self.counters.records.load(ordering: .relaxed) - consumed.records.load(ordering: .relaxed) > limit,
            !consumed.finished.load(ordering: .relaxed)
        {
            let now = MonotonicClock.now()
            let records = consumed.records.load(ordering: .relaxed)
            if records != seen { (seen, progressed) = (records, now) }
            guard now < stopAt, now - progressed < 30_000_000_000 else { return }
            try await Task.sleep(nanoseconds: 200_000)
        }
    }

    private func lane(
        _ producer: Int,
        connections: [BenchTopic.Leader: KafkaConnection],
        next: SharedCounter,
        claimed: SharedCounter,
        _ schedule: Schedule
    ) async throws -> LatencyHistogram {
        var histogram = LatencyHistogram()
        let partitions = self.topic.partitions
        let perBatch = self.templates.recordsPerBatch
        // Open loop: nanoseconds between records and between batches of this producer.
        let recordInterval = self.settings.targetRate.map { Int64(1e9 * Double(self.settings.producers) / $0) } ?? 0
        let batchInterval = recordInterval * Int64(perBatch)
        // As fast as possible, a request carries a batch for each partition (as Kafka producers
        // send every ready batch for a broker at once); on a schedule, each batch goes when due.
        let group = batchInterval > 0 ? 1 : partitions.count
        try await MonotonicClock.sleep(until: schedule.start)
        while true {
            let first = next.add(group)
            let intended: Int64
            if batchInterval > 0 {
                intended = schedule.start + Int64(first) * batchInterval
                guard intended < schedule.stopAt else { break }
                // The batch leaves when its last record is due (it filled up) or the linger ran out.
                try await MonotonicClock.sleep(until: intended + recordInterval * Int64(perBatch - 1))
            } else {
                try await self.waitForConsumers(until: schedule.stopAt)
                intended = MonotonicClock.now()
                guard intended < schedule.stopAt else { break }
            }
            let measured = intended >= schedule.measureFrom
            if measured, let limit = self.settings.records, claimed.add(perBatch * group) >= limit { break }
            let timestamp = MonotonicClock.wallMilliseconds()
            var byLeader: [BenchTopic.Leader: [(partition: Int32, batch: ByteBuffer)]] = [:]
            for k in first..<(first + group) {
                let partition = partitions[(k + producer) % partitions.count]
                byLeader[self.topic.leaders[partition]!, default: []].append((partition, self.templates.batch(k, timestampMilliseconds: timestamp)))
            }
            for (leader, batches) in byLeader {
                var request = ProduceRequest()
                request.acks = self.settings.acks
                request.timeoutMs = 30_000
                request.topicData = [.init(name: self.topic.name, partitionData: batches.map { .init(index: $0.partition, records: $0.batch) })]
                let connection = connections[leader]!
                let sent = MonotonicClock.now()
                var baseOffsets: [Int32: Int64] = [:]
                if self.settings.acks == 0 {
                    try await connection.sendWithoutResponse(request)
                } else {
                    let response = try await connection.send(request, timeout: .seconds(60))
                    for answer in response.responses.first?.partitionResponses ?? [] {
                        if answer.errorCode == 0 {
                            baseOffsets[answer.index] = answer.baseOffset
                        } else {
                            self.counters.count(error: "\(KafkaErrorCode(rawValue: answer.errorCode))")
                        }
                    }
                }
                let done = MonotonicClock.now()
                for (partition, batch) in batches {
                    let baseOffset = baseOffsets[partition] ?? -1
                    guard self.settings.acks == 0 || baseOffset >= 0 else { continue }
                    self.counters.records.add(perBatch, ordering: .relaxed)
                    let record = SendLedger.Sent(
                        intendedNanoseconds: batchInterval > 0 ? intended : sent, recordIntervalNanoseconds: recordInterval,
                        records: perBatch, measured: measured)
                    self.ledger?.acknowledged(.init(partition: partition, baseOffset: baseOffset), record)
                    self.counters.worstLatency.max(done - record.intendedNanoseconds, ordering: .relaxed)
                    guard measured else { continue }
                    record.latencies(arrivedAt: done, into: &histogram)
                    self.counters.measured(
                        records: perBatch, payloadBytes: self.templates.payloadBytes, wireBytes: batch.readableBytes, at: done)
                }
            }
        }
        return histogram
    }
}
