import KafkaProtocol
import NIOCore
import RafkaClient
import RafkaCore
import Synchronization

/// What a run measured (`--json` prints this).
public struct BenchResult: Sendable, Codable {
    public var mode: String
    public var topic: String
    public var partitions: Int
    public var recordBytes: Int
    public var compression: String
    public var acks: Int16
    public var targetRate: Double?
    public var recordsPerBatch: Int
    /// The measured phase (e2e: until the consumer had the last record).
    public var seconds: Double
    public var records: Int
    public var recordsPerSecond: Double
    /// 10^6 bytes of record keys and values per second (produce, e2e); of batches as they arrived (consume).
    public var megabytesPerSecond: Double
    /// 10^6 bytes of batches on the wire per second (after compression).
    public var wireMegabytesPerSecond: Double
    /// Produce: from when each record was due (open loop) or sent to its acknowledgement.
    public var produceLatency: LatencySummary?
    /// Open loop: how late each batch left after it was due to leave (its last record's due
    /// time): the benchmark's own share of the latencies above, per batch.
    public var sendLag: LatencySummary?
    /// Consume: from a fetch request to its response, for fetches that brought records.
    public var fetchLatency: LatencySummary?
    /// Consume, e2e: fetch requests sent in the whole run, those that continued an incremental
    /// fetch session (`--fetch-sessions`), and sessions the broker lost.
    public var fetchRequests: Int?
    public var incrementalFetchRequests: Int?
    public var fetchSessionResets: Int?
    /// e2e: from when each record was due to when a consumer received it.
    public var endToEndLatency: LatencySummary?
    /// Error codes the broker answered, by name, with how often; e2e also counts here batches
    /// the ledger saw at a partition and offset another batch still waited at.
    public var errors: [String: Int]
    /// Why batches, or partitions' readers, were sent to a partition's leader again, with how
    /// many times: the partition moved to another leader (the code its old one answered), or
    /// the connection to its leader closed (`LeaderMap`); a batch waiting for a leader that
    /// cannot be reached counts once per attempt.
    public var retries: [String: Int] = [:]
    /// Each second of the run, warm-up included: what a disturbance (a partition moving, a
    /// broker stalling) did, and when.
    public var timeline: [Second] = []

    public struct Second: Sendable, Codable {
        /// When the second ended (Unix time, seconds).
        public var at: Double
        /// Records acknowledged in it (produce, e2e) or received (consume).
        public var records: Int
        /// e2e: records the consumers received in it.
        public var consumed: Int?
        /// Produce, e2e: the highest latency completed in it (acknowledgement; e2e: end to end).
        public var maxLatencyMs: Double?
    }
    /// With --broker-pid: the broker's CPU seconds in the measured phase, per 10^6 payload
    /// bytes and per record, and its resident memory at the end.
    public var brokerCPUSeconds: Double?
    public var brokerCPUSecondsPerMegabyte: Double?
    public var brokerCPUMicrosecondsPerRecord: Double?
    public var brokerResidentBytes: Int?
    /// e2e: acknowledged batches that never arrived before the run gave up waiting.
    public var unmatchedBatches: Int?
    /// e2e: batches that arrived but were never acknowledged: written by a broker whose answer
    /// was lost with its connection, and sent again (`retries`), so their records arrived twice.
    public var unacknowledgedBatches: Int?
}

/// The seconds of a run as they pass (`BenchResult.timeline`).
private final class Timeline: Sendable {
    let seconds = Mutex<[BenchResult.Second]>([])
}

/// Runs one benchmark: resolves (or creates) the topic, starts producers and consumers as the
/// mode asks, prints a progress line every second on a terminal, and returns the result.
public struct BenchRun: Sendable {
    public let settings: BenchSettings
    /// Called every second with a progress line (nil: quiet).
    public let progress: (@Sendable (String) -> Void)?

    public init(settings: BenchSettings, progress: (@Sendable (String) -> Void)? = nil) {
        self.settings = settings
        self.progress = progress
    }

    public func run() async throws -> BenchResult {
        if let problem = self.settings.problem() { throw KafkaClientError(problem) }
        let topic = try await BenchTopic.resolve(self.settings, create: self.settings.mode != .consume)
        let producing = self.settings.mode != .consume
        let consuming = self.settings.mode != .produce
        let templates = producing ? try BatchTemplates(settings: self.settings, partitions: topic.leaders.count) : nil
        let produced = LoadCounters()
        let consumed = LoadCounters()
        let ledger = self.settings.mode == .e2e ? SendLedger() : nil
        let consumer = ConsumeLoad(settings: self.settings, topic: topic, counters: consumed, ledger: ledger)
        // Also for producing: it waits until every partition's leader serves it.
        let startOffsets = try await consumer.startOffsets()

        let start = MonotonicClock.now() + 100_000_000  // let every connection open first
        let measureFrom = start + Int64(self.settings.warmupSeconds * 1e9)
        let stopAt = self.settings.durationSeconds.map { measureFrom + Int64($0 * 1e9) } ?? Int64.max
        let stop = ConsumeLoad.Stop()
        if self.settings.mode == .consume {
            stop.stopAt.store(stopAt, ordering: .relaxed)
            if let records = self.settings.records { stop.measuredRecords.store(records, ordering: .relaxed) }
        }
        var cpuBefore: Double?
        var produceLatency = ProduceLoad.Latencies()
        var fetchLatency = LatencyHistogram()
        let timeline = Timeline()
        try await withThrowingTaskGroup(of: Void.self) { group in
            let counters = producing ? produced : consumed
            let reporter = self.progress
            group.addTask {
                var last = (records: 0, consumed: 0)
                var elapsed = 0
                while !Task.isCancelled {
                    try await Task.sleep(nanoseconds: 1_000_000_000)
                    elapsed += 1
                    let now = (records: counters.records.load(ordering: .relaxed), consumed: consumed.records.load(ordering: .relaxed))
                    var second = BenchResult.Second(
                        at: Double(MonotonicClock.wallMilliseconds()) / 1000, records: now.records - last.records)
                    let phase = MonotonicClock.now() < measureFrom ? "warm-up" : "measuring"
                    var line = "\(elapsed) s \(phase): \(second.records) records/s, \(now.records) in all"
                    if consuming && producing {
                        second.consumed = now.consumed - last.consumed
                        line += ", \(now.consumed) consumed"
                    }
                    if producing {
                        let worst = ledger.map { $0.worstLatency.exchange(0, ordering: .relaxed) }
                            ?? produced.worstLatency.exchange(0, ordering: .relaxed)
                        second.maxLatencyMs = Double(worst) / 1e6
                        let kind = ledger == nil ? "acknowledgement" : "end to end"
                        line += ", \(kind) max \(worst / 1_000_000).\(worst / 100_000 % 10) ms"
                    }
                    timeline.seconds.withLock { $0.append(second) }
                    reporter?(line)
                    last = now
                }
            }
            // The broker's CPU time when the measured phase starts.
            async let cpuAtStart: Double? = {
                try await MonotonicClock.sleep(until: measureFrom)
                return self.settings.brokerPID.flatMap { ProcessStatistics.read(pid: $0)?.cpuSeconds }
            }()
            let offsets = startOffsets
            if producing, let templates {
                let load = ProduceLoad(
                    settings: self.settings, topic: topic, templates: templates, counters: produced, ledger: ledger,
                    consumed: consuming ? consumed : nil)
                if consuming {
                    async let reading = consumer.run(from: offsets, start: start, measureFrom: measureFrom, stop: stop)
                    do {
                        produceLatency = try await load.run(.init(start: start, measureFrom: measureFrom, stopAt: stopAt))
                    } catch {
                        stop.stopAt.store(0, ordering: .relaxed)  // the consumers stop too
                        throw error
                    }
                    // Everything acknowledged should arrive; give up 30 s after the last acknowledgement.
                    stop.records.store(produced.records.load(ordering: .relaxed), ordering: .relaxed)
                    stop.stopAt.store(MonotonicClock.now() + 30_000_000_000, ordering: .relaxed)
                    fetchLatency = try await reading
                } else {
                    produceLatency = try await load.run(.init(start: start, measureFrom: measureFrom, stopAt: stopAt))
                }
            } else {
                fetchLatency = try await consumer.run(from: offsets, start: start, measureFrom: measureFrom, stop: stop)
            }
            cpuBefore = try await cpuAtStart
            group.cancelAll()
        }
        // e2e: until the consumer had every record, so that a consumer falling behind lowers the rate.
        let lastProduced = producing ? produced.lastMeasured.load(ordering: .relaxed) : 0
        let lastConsumed = consuming ? consumed.lastMeasured.load(ordering: .relaxed) : 0
        let end = max(measureFrom + 1, lastProduced, lastConsumed)
        let seconds = Double(end - measureFrom) / 1e9
        let counters = producing ? produced : consumed
        let records = counters.measuredRecords.load(ordering: .relaxed)
        let payloadBytes = counters.measuredPayloadBytes.load(ordering: .relaxed)
        var result = BenchResult(
            mode: self.settings.mode.rawValue, topic: topic.name, partitions: topic.leaders.count, recordBytes: self.settings.recordBytes,
            compression: "\(self.settings.compression)", acks: self.settings.acks, targetRate: self.settings.targetRate,
            recordsPerBatch: templates?.recordsPerBatch ?? 0, seconds: seconds, records: records,
            recordsPerSecond: Double(records) / seconds, megabytesPerSecond: Double(payloadBytes) / seconds / 1e6,
            wireMegabytesPerSecond: Double(counters.measuredWireBytes.load(ordering: .relaxed)) / seconds / 1e6,
            produceLatency: producing ? produceLatency.acknowledgements.summary : nil,
            sendLag: self.settings.targetRate == nil ? nil : produceLatency.sendLag.summary,
            fetchLatency: consuming ? fetchLatency.summary : nil,
            endToEndLatency: ledger?.latencies.summary,
            errors: produced.errors.withLock { $0 }.merging(consumed.errors.withLock { $0 }) { $0 + $1 },
            unmatchedBatches: ledger?.unmatched)
        if let shared = ledger?.sharedKeys, shared > 0 { result.errors["two batches at one partition and offset"] = shared }
        result.unacknowledgedBatches = ledger?.unacknowledged
        result.timeline = timeline.seconds.withLock { $0 }
        result.retries = produced.retries.withLock { $0 }.merging(consumed.retries.withLock { $0 }) { $0 + $1 }
        if consuming {
            result.fetchRequests = consumed.fetches.load(ordering: .relaxed)
            result.incrementalFetchRequests = consumed.incrementalFetches.load(ordering: .relaxed)
            result.fetchSessionResets = consumed.fetchSessionResets.load(ordering: .relaxed)
        }
        if let pid = self.settings.brokerPID, let after = ProcessStatistics.read(pid: pid) {
            let cpu = after.cpuSeconds - (cpuBefore ?? 0)
            result.brokerCPUSeconds = cpu
            result.brokerCPUSecondsPerMegabyte = payloadBytes > 0 ? cpu / (Double(payloadBytes) / 1e6) : nil
            result.brokerCPUMicrosecondsPerRecord = records > 0 ? cpu * 1e6 / Double(records) : nil
            result.brokerResidentBytes = after.residentBytes
        }
        return result
    }
}
