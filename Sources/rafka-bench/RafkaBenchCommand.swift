import ArgumentParser
import Foundation
import RafkaBench
import RafkaCompression
import RafkaCore

@main
struct RafkaBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rafka-bench",
        abstract: "Measure a Kafka-compatible broker: produce, consume or end-to-end throughput and latency.",
        discussion: """
            Works against any broker that speaks the Kafka protocol (Rafka, Kafka, Redpanda, Tansu, …). \
            With --rate the load is open-loop: records are due on a fixed schedule whatever the broker does, and \
            latency counts from when each was due, so a stall shows as latency, not as fewer requests. Without it, \
            each of --in-flight requests per connection is sent as soon as the previous one is answered, with a \
            batch for each partition (up to 16 MiB a request). \
            Latencies come from HdrHistogram (µs resolution); MB is 10^6 bytes.
            """,
        subcommands: [Produce.self, Consume.self, EndToEnd.self]
    )
}

struct CommonOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Brokers to start from.", valueName: "host:port,…"))
    var bootstrap = ProcessInfo.processInfo.environment["RAFKA_BOOTSTRAP"] ?? "127.0.0.1:9092"
    @Option(help: "The topic (created if missing, except by consume).") var topic = "rafka-bench"
    @Option(help: "Partitions of a topic the run creates.") var partitions: Int32 = 8
    @Option(help: "Replication factor of a topic the run creates (-1: the broker's default).") var replicationFactor: Int16 = -1
    @Option(help: "Seconds to measure, after the warm-up.") var duration: Double?
    @Option(help: "Records to measure instead of a duration (in whole batches: at least this many).") var records: Int?
    @Option(help: "Seconds of load before measuring.") var warmup = 2.0
    @Option(help: "The broker's process id, for its CPU time and resident memory.") var brokerPid: Int32?
    @Flag(help: "Print the result as JSON (no progress line).") var json = false

    func apply(to settings: inout BenchSettings) {
        settings.bootstrap = self.bootstrap
        settings.topic = self.topic
        settings.partitions = self.partitions
        settings.replicationFactor = self.replicationFactor
        settings.records = self.records
        settings.durationSeconds = self.records == nil ? (self.duration ?? 10) : self.duration
        settings.warmupSeconds = self.warmup
        settings.brokerPID = self.brokerPid
    }
}

struct ProducerOptions: ParsableArguments {
    @Option(help: "Bytes of each record's value.") var recordBytes = 1024
    @Option(help: "Bytes of each record's key (0: no keys).") var keyBytes = 0
    @Option(help: "Distinct keys; records with keys go to their key's partition (murmur2, as Kafka's default partitioner).")
    var keySpace = 1024
    @Option(help: "How unevenly keys are drawn: key i in proportion to 1/(i+1)^skew (Zipf); 0: uniformly.")
    var keySkew = 0.0
    @Option(help: "compressible (half random), random or zeros.") var payload: BenchSettings.Payload = .compressible
    @Option(help: "Producer connections (per partition leader).") var producers = 1
    @Option(help: "0, 1 or all.") var acks = "1"
    @Option(help: "none, gzip, snappy, lz4 or zstd.") var compression = "lz4"
    @Option(help: "Largest batch in bytes before compression, record framing included (batch.size).") var batchBytes = 1_000_000
    @Option(help: "How long a batch may wait to fill at a target rate (linger.ms).") var lingerMs = 5.0
    @Option(help: "Requests in flight per producer connection.") var inFlight = 5
    @Option(help: "Records per second across producers (open loop); omit for as fast as the window allows.") var rate: Double?

    func apply(to settings: inout BenchSettings) throws {
        settings.recordBytes = self.recordBytes
        settings.keyBytes = self.keyBytes
        settings.keySpace = self.keySpace
        settings.keySkew = self.keySkew
        settings.payload = self.payload
        settings.producers = self.producers
        guard let acks = ["0": Int16(0), "1": 1, "all": -1, "-1": -1][self.acks] else {
            throw ValidationError("--acks must be 0, 1 or all")
        }
        settings.acks = acks
        guard let codec = CompressionCodec(name: self.compression) else {
            throw ValidationError("--compression must be none, gzip, snappy, lz4 or zstd")
        }
        settings.compression = codec
        settings.batchBytes = self.batchBytes
        settings.lingerMilliseconds = self.lingerMs
        settings.inFlight = self.inFlight
        settings.targetRate = self.rate
    }
}

struct ConsumerOptions: ParsableArguments {
    @Option(help: "Consumers (each reads every n-th partition).") var consumers = 1
    @Option(help: "Longest a fetch waits for data (fetch.wait.max.ms).") var fetchWaitMs: Int32 = 500
    @Option(help: "Bytes a fetch may return per partition (max.partition.fetch.bytes).") var partitionFetchBytes: Int32 = 1_048_576
    @Option(
        help: "e2e without --rate: producers wait while the consumers are more than this many bytes of record values behind, so the rate measured is one they sustain (0: no limit)."
    ) var backlogBytes = 64_000_000
    @Flag(
        help: "Incremental fetch sessions (KIP-227), as the Java consumer: after the first fetch, one lists only the partitions whose position moved."
    ) var fetchSessions = false

    func apply(to settings: inout BenchSettings) {
        settings.fetchSessions = self.fetchSessions
        settings.consumers = self.consumers
        settings.backlogBytesMax = self.backlogBytes
        settings.fetchWaitMilliseconds = self.fetchWaitMs
        settings.partitionFetchBytesMax = self.partitionFetchBytes
    }
}

extension BenchSettings.Payload: ExpressibleByArgument {}
extension BenchSettings.StartOffset: ExpressibleByArgument {}

struct Produce: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Produce and measure acknowledgement latency and throughput.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var producer: ProducerOptions

    func run() async throws {
        var settings = BenchSettings()
        settings.mode = .produce
        self.common.apply(to: &settings)
        try self.producer.apply(to: &settings)
        try await execute(settings, json: self.common.json)
    }
}

struct Consume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read a topic and measure fetch latency and throughput.",
        discussion: "From the start of each partition (--from earliest) or only what arrives (--from latest).")
    @OptionGroup var common: CommonOptions
    @OptionGroup var consumer: ConsumerOptions
    @Option(help: "earliest or latest.") var from: BenchSettings.StartOffset = .earliest

    func run() async throws {
        var settings = BenchSettings()
        settings.mode = .consume
        self.common.apply(to: &settings)
        self.consumer.apply(to: &settings)
        settings.startOffset = self.from
        try await execute(settings, json: self.common.json)
    }
}

struct EndToEnd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e",
        abstract: "Produce and consume at once; latency from when each record was due to its arrival at a consumer.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var producer: ProducerOptions
    @OptionGroup var consumer: ConsumerOptions

    func run() async throws {
        var settings = BenchSettings()
        settings.mode = .e2e
        self.common.apply(to: &settings)
        try self.producer.apply(to: &settings)
        self.consumer.apply(to: &settings)
        settings.startOffset = .latest
        try await execute(settings, json: self.common.json)
    }
}

func execute(_ settings: BenchSettings, json: Bool) async throws {
    FreedMemory.keepForReuse()
    if let problem = settings.problem() { throw ValidationError(problem) }
    let terminal = isatty(STDERR_FILENO) != 0
    let show: @Sendable (String) -> Void = { line in
        let text = terminal ? "\r\u{1B}[K" + line : line + "\n"
        FileHandle.standardError.write(Data(text.utf8))
    }
    let run = BenchRun(settings: settings, progress: json ? nil : show)
    let result = try await run.run()
    if terminal && !json { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(result), as: UTF8.self))
    } else {
        print(describe(result))
    }
}

/// The result as lines of text.
func describe(_ result: BenchResult) -> String {
    let number = { (value: Double, digits: Int) in String(format: "%.\(digits)f", value) }
    var lines = [
        "\(result.mode) \(result.topic) (\(result.partitions) partitions), \(result.recordBytes)-byte records, "
            + "\(result.compression), acks=\(result.acks == -1 ? "all" : String(result.acks)), "
            + (result.targetRate.map { "target \(number($0, 0)) records/s" } ?? "max rate")
            + (result.recordsPerBatch > 0 ? ", \(result.recordsPerBatch) records per batch" : ""),
        "\(result.records) records in \(number(result.seconds, 2)) s: \(number(result.recordsPerSecond, 0)) records/s, "
            + "\(number(result.megabytesPerSecond, 1)) MB/s (\(number(result.wireMegabytesPerSecond, 1)) MB/s on the wire)",
    ]
    let latency = { (name: String, summary: LatencySummary?) in
        guard let summary else { return }
        lines.append(
            "\(name) ms: p50 \(number(summary.p50, 3))  p90 \(number(summary.p90, 3))  p99 \(number(summary.p99, 3))  "
                + "p99.9 \(number(summary.p999, 3))  max \(number(summary.max, 3))  (\(summary.count) samples)")
    }
    latency("produce latency", result.produceLatency)
    latency("send lag (batches leaving late)", result.sendLag)
    latency("fetch latency", result.fetchLatency)
    latency("end-to-end latency", result.endToEndLatency)
    if let cpu = result.brokerCPUSeconds {
        lines.append(
            "broker: \(number(cpu, 2)) CPU s, \(number(result.brokerCPUSecondsPerMegabyte ?? 0, 4)) s/MB, "
                + "\(number(result.brokerCPUMicrosecondsPerRecord ?? 0, 2)) µs/record, RSS \((result.brokerResidentBytes ?? 0) >> 20) MiB")
    }
    if !result.errors.isEmpty {
        lines.append("errors: " + result.errors.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", "))
    }
    if let unmatched = result.unmatchedBatches, unmatched > 0 {
        lines.append("\(unmatched) acknowledged batches never arrived")
    }
    return lines.joined(separator: "\n")
}
