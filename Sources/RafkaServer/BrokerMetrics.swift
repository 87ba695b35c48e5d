import NIOConcurrencyHelpers
import NIOCore
import Prometheus
import RafkaCore
import RafkaStorage

/// The broker's Prometheus metrics, served as text on `metrics-listen` (GET /metrics).
///
/// Read at scrape time from what the broker already counts (the hot cache's statistics, the
/// read memory held for fetch responses, the partitions it serves, the event loops' stalls, the
/// process's /proc entries) rather than updated on the hot path; such counters advance by what
/// the source counted since the previous scrape. Requests and connections (`RequestMetrics`)
/// are recorded into the same registry as they end.
final class BrokerMetrics: Sendable {
    private let registry: PrometheusCollectorRegistry
    private let replicas: ReplicaManager
    private let readMemory: MemoryBudget
    private let stalls: LoopStallWatch

    private let partitions: Gauge
    private let cacheBytes: Gauge
    private let cacheBytesMax: Gauge
    private let cacheBatches: Gauge
    private let cachePartitions: Gauge
    private let cacheHitRatio: Gauge
    private let cacheHits: Counter
    private let cacheMisses: Counter
    private let cacheHitBytes: Counter
    private let cacheMissBytes: Counter
    private let cacheEvictedForBytes: Counter
    private let cacheEvictedForAge: Counter
    private let readMemoryHeld: Gauge
    private let readMemoryBudget: Gauge
    private let readMemoryRefusals: Counter
    private let loopStalls: Counter
    private let loopStalledSeconds: Counter
    private let loopLongestStall: Gauge
    private let residentBytes: Gauge
    private let cpuSeconds: Gauge
    /// The hot cache's counters and the read memory's refusals at the previous scrape (scrapes
    /// may overlap).
    private let previous = NIOLockedValueBox((cache: HotCache.Statistics?.none, refusals: Int64(0)))

    init(registry: PrometheusCollectorRegistry, replicas: ReplicaManager, readMemory: MemoryBudget, stalls: LoopStallWatch) {
        self.registry = registry
        self.replicas = replicas
        self.readMemory = readMemory
        self.stalls = stalls
        let r = self.registry
        func name(_ namespace: String, _ subsystem: String?, _ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: namespace, subsystem: subsystem, metricName: metric, unitName: unit, helpText: help)
        }
        let cache = "hot_cache"
        self.partitions = r.makeGauge(descriptor: name("rafka", nil, "partitions", "served", "Partitions this node serves to clients."))
        self.cacheBytes = r.makeGauge(descriptor: name("rafka", cache, "held", "bytes", "Bytes of batches the hot cache holds."))
        self.cacheBytesMax = r.makeGauge(descriptor: name("rafka", cache, "budget", "bytes", "The hot cache's budget (hot-cache-bytes)."))
        self.cacheBatches = r.makeGauge(descriptor: name("rafka", cache, "held", "batches", "Batches the hot cache holds."))
        self.cachePartitions = r.makeGauge(
            descriptor: name("rafka", cache, "held", "partitions", "Partitions with batches in the hot cache."))
        self.cacheHitRatio = r.makeGauge(
            descriptor: name("rafka", cache, "hit", "ratio", "Reads answered from the hot cache over reads that returned data, since start."))
        self.cacheHits = r.makeCounter(descriptor: name("rafka", cache, "hits", "total", "Reads answered from the hot cache."))
        self.cacheMisses = r.makeCounter(descriptor: name("rafka", cache, "misses", "total", "Reads that went to the segment files."))
        self.cacheHitBytes = r.makeCounter(descriptor: name("rafka", cache, "hit_bytes", "total", "Bytes read from the hot cache."))
        self.cacheMissBytes = r.makeCounter(descriptor: name("rafka", cache, "miss_bytes", "total", "Bytes read from the segment files."))
        let evictions = name("rafka", cache, "evictions", "total", "Batches evicted from the hot cache, by reason.")
        self.cacheEvictedForBytes = r.makeCounter(descriptor: evictions, labels: [("reason", "budget")])
        self.cacheEvictedForAge = r.makeCounter(descriptor: evictions, labels: [("reason", "age")])
        let read = "read_memory"
        self.readMemoryHeld = r.makeGauge(
            descriptor: name("rafka", read, "held", "bytes", "Bytes of records held in memory for fetch responses not yet written."))
        self.readMemoryBudget = r.makeGauge(
            descriptor: name("rafka", read, "budget", "bytes", "The budget for such records (max-read-memory-bytes)."))
        let refusals = "Times max-read-memory-bytes refused records a fetch response would hold (sent from segment files instead)."
        self.readMemoryRefusals = r.makeCounter(descriptor: name("rafka", read, "refusals", "total", refusals))
        let loop = "event_loop"
        self.loopStalls = r.makeCounter(
            descriptor: name("rafka", loop, "stalls", "total", "Times an event loop ran its check (every 100 ms) 10 ms or more late."))
        self.loopStalledSeconds = r.makeCounter(
            descriptor: name("rafka", loop, "stalled_seconds", "total", "How late those checks ran, in all."))
        self.loopLongestStall = r.makeGauge(
            descriptor: name("rafka", loop, "longest_stall", "seconds", "The longest such stall since the previous scrape."))
        self.residentBytes = r.makeGauge(descriptor: name("process", nil, "resident_memory", "bytes", "Resident memory size in bytes."))
        self.cpuSeconds = r.makeGauge(descriptor: name("process", nil, "cpu_seconds", "total", "User and system CPU time spent in seconds."))
    }

    /// The Prometheus text exposition, refreshed now.
    func render() -> [UInt8] {
        // Read inside the lock below: overlapping scrapes must not count backwards.
        let statistics = self.previous.withLockedValue { previous in
            let statistics = self.replicas.hotCache.describe()
            let refusals = self.readMemory.refusals
            self.readMemoryRefusals.increment(by: refusals - previous.refusals)
            let last = previous.cache
            self.cacheHits.increment(by: statistics.hits - (last?.hits ?? 0))
            self.cacheMisses.increment(by: statistics.misses - (last?.misses ?? 0))
            self.cacheHitBytes.increment(by: statistics.hitBytes - (last?.hitBytes ?? 0))
            self.cacheMissBytes.increment(by: statistics.missBytes - (last?.missBytes ?? 0))
            self.cacheEvictedForBytes.increment(by: statistics.evictedForBytes - (last?.evictedForBytes ?? 0))
            self.cacheEvictedForAge.increment(by: statistics.evictedForAge - (last?.evictedForAge ?? 0))
            previous = (statistics, refusals)
            return statistics
        }
        let stalls = self.stalls.take()
        self.loopStalls.increment(by: Int64(stalls.count))
        self.loopStalledSeconds.increment(by: Double(stalls.totalNanoseconds) / 1e9)
        self.loopLongestStall.set(to: Double(stalls.longestNanoseconds) / 1e9)
        self.readMemoryHeld.set(to: Double(self.readMemory.usedBytes))
        self.readMemoryBudget.set(to: Double(self.readMemory.capacityBytes))
        self.partitions.set(to: Double(self.replicas.partitionCount))
        self.cacheBytes.set(to: Double(statistics.bytes))
        self.cacheBytesMax.set(to: Double(statistics.bytesMax))
        self.cacheBatches.set(to: Double(statistics.batches))
        self.cachePartitions.set(to: Double(statistics.partitions))
        self.cacheHitRatio.set(to: statistics.hitRatio)
        if let process = ProcessStatistics.read() {
            self.residentBytes.set(to: Double(process.residentBytes))
            self.cpuSeconds.set(to: process.cpuSeconds)
        }
        return self.registry.emitToBuffer()
    }
}
