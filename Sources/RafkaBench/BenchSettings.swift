import KafkaProtocol
import RafkaCompression

/// What a `rafka-bench` run does. Defaults follow librdkafka's producer (1 MB batches, 5 ms
/// linger, 5 requests in flight per connection).
public struct BenchSettings: Sendable {
    public enum Mode: String, Sendable, Codable, CaseIterable {
        /// Produce and measure acknowledgement latency.
        case produce
        /// Read what a topic holds (or what arrives) and measure fetch latency.
        case consume
        /// Produce and consume at once; latency from a record's intended send time to its arrival.
        case e2e
    }

    /// What the record values hold: `compressible` is half random bytes, half a repeated
    /// pattern (about 2:1 with lz4), `random` does not compress, `zeros` compresses to nothing.
    public enum Payload: String, Sendable, Codable, CaseIterable {
        case compressible, random, zeros
    }

    /// Where a consumer starts.
    public enum StartOffset: String, Sendable, Codable, CaseIterable {
        case earliest, latest
    }

    public var mode: Mode = .produce
    /// `host:port[,host:port…]`.
    public var bootstrap = "127.0.0.1:9092"
    public var topic = "rafka-bench"
    /// Created with this many partitions if missing.
    public var partitions: Int32 = 8
    public var replicationFactor: Int16 = -1
    /// Bytes of each record's value.
    public var recordBytes = 1024
    /// Bytes of each record's key (0: no key), drawn from `keySpace` distinct keys.
    public var keyBytes = 0
    public var keySpace = 1024
    /// How unevenly keys are drawn: key `i` of the key space is drawn in proportion to
    /// 1 / (i + 1)^keySkew (Zipf's law); 0 draws them uniformly, 1 makes the first key about
    /// 13% of 1,024. Records with keys go to their key's partition, so this skews partitions too.
    public var keySkew = 0.0
    public var payload: Payload = .compressible
    public var producers = 1
    public var consumers = 1
    /// 0, 1 or -1 (all).
    public var acks: Int16 = 1
    public var compression: CompressionCodec = .lz4
    /// Largest batch before compression, in bytes: its header and records, each record's framing
    /// included, as Kafka's `batch.size` bounds an uncompressed batch (so one of the default size
    /// fits a broker's default `max.message.bytes` uncompressed too).
    public var batchBytes = 1_000_000
    /// How long a batch may wait to fill when a target rate is set.
    public var lingerMilliseconds = 5.0
    /// Requests in flight per producer connection.
    public var inFlight = 5
    /// Records per second across all producers (open loop); nil: as fast as the window allows.
    public var targetRate: Double?
    /// Measured phase: seconds, or a record count.
    public var durationSeconds: Double? = 10
    public var records: Int?
    /// Seconds produced (and consumed) before measuring starts.
    public var warmupSeconds = 2.0
    public var startOffset: StartOffset = .earliest
    /// Fetch wait and size, as a Kafka consumer's fetch.wait.max.ms / fetch.max.bytes.
    public var fetchWaitMilliseconds: Int32 = 500
    public var fetchBytesMax: Int32 = 52_428_800
    public var partitionFetchBytesMax: Int32 = 1_048_576
    /// Incremental fetch sessions (KIP-227, Fetch v7+), as the Java consumer uses them: after the
    /// first, a fetch lists only the partitions whose position moved. Off by default, as
    /// librdkafka (which sends every partition in every fetch).
    public var fetchSessions = false
    /// e2e at the highest rate: producers wait while the consumers are more than this many
    /// bytes of record values behind, so the rate measured is one the consumers sustain
    /// (0: no limit).
    public var backlogBytesMax = 64_000_000
    /// The broker's process, for its CPU time and resident memory.
    public var brokerPID: Int32?

    public init() {}

    /// Records per batch: as many as the batch size holds, or what the target rate produces within
    /// the linger.
    public var recordsPerBatch: Int {
        let bySize = self.recordsPerBatchBySize
        guard let rate = self.targetRate else { return bySize }
        let perProducer = rate / Double(self.producers)
        return max(1, min(bySize, Int((perProducer * self.lingerMilliseconds / 1000).rounded(.down))))
    }

    /// Records that fill a batch of `batchBytes`.
    var recordsPerBatchBySize: Int { max(1, (self.batchBytes - RecordBatchHeader.size) / self.encodedRecordBytes) }

    /// Bytes one record takes in an uncompressed batch: key, value and framing (its offset delta
    /// counted at the largest a batch of `batchBytes` reaches; timestamp delta 0, no headers).
    var encodedRecordBytes: Int {
        let key = self.keyBytes == 0 ? 1 : kafkaVarintSize(Int64(self.keyBytes)) + self.keyBytes
        let value = kafkaVarintSize(Int64(self.recordBytes)) + self.recordBytes
        let body = 1 + 1 + kafkaVarintSize(Int64(self.batchBytes)) + key + value + 1
        return kafkaVarintSize(Int64(body)) + body
    }

    /// The first problem with these settings, if any.
    public func problem() -> String? {
        if self.recordBytes < 0 { return "--record-bytes must be ≥ 0" }
        if self.keyBytes < 0 { return "--key-bytes must be ≥ 0" }
        if self.keyBytes > 0 && self.keySpace < 1 { return "--key-space must be ≥ 1" }
        if !(self.keySkew >= 0 && self.keySkew <= 10) { return "--key-skew must be between 0 and 10" }
        if self.producers < 1 || self.consumers < 1 { return "--producers and --consumers must be ≥ 1" }
        if ![0, 1, -1].contains(self.acks) { return "--acks must be 0, 1 or all" }
        if self.mode == .e2e && self.acks == 0 { return "e2e needs acknowledgements (--acks 1 or all) to match records to their send times" }
        if self.inFlight < 1 { return "--in-flight must be ≥ 1" }
        if let rate = self.targetRate, rate <= 0 { return "--rate must be positive" }
        if self.durationSeconds == nil && self.records == nil { return "give --duration or --records" }
        if let records = self.records, records < 1 { return "--records must be ≥ 1" }
        if let duration = self.durationSeconds, duration <= 0 { return "--duration must be positive" }
        if self.warmupSeconds < 0 { return "--warmup must be ≥ 0" }
        if self.partitions < 1 { return "--partitions must be ≥ 1" }
        if self.backlogBytesMax < 0 { return "--backlog-bytes must be ≥ 0" }
        return nil
    }
}
