import Benchmark
import Foundation
import KafkaProtocol
import NIOCore
import RafkaCompression
import RafkaCore
import RafkaStorage

// The produce and fetch hot path, one step at a time, on a batch as clients send it: 1,000
// records of 1 KiB (half random bytes, half a repeated pattern), lz4 unless named otherwise.
// Names use no spaces: the benchmark tool stores thresholds under sanitized names but looks
// them up under the names as given.
//
// Allocation counts are what CI checks (benchmarks/Thresholds, `tools/dev test`): each step's
// allocations are per batch or per request, never per record, and a change that adds some
// fails the check. Times are printed for reading, not checked (the machine varies).

/// 1,000 records of 1 KiB, encoded (not compressed).
func plainRecords() -> ByteBuffer {
    var random = SystemRandomNumberGenerator()
    let records = (0..<1000).map { index in
        var value = ByteBuffer()
        for _ in 0..<64 { value.writeInteger(random.next() as UInt64) }
        value.writeRepeatingByte(0x61, count: 512)
        return Record(timestampDelta: Int64(index), offsetDelta: Int32(index), key: nil, value: value)
    }
    var plain = ByteBuffer()
    RecordBatch.encodeRecords(records, into: &plain)
    return plain
}

func batch(_ codec: CompressionCodec, _ plain: ByteBuffer) -> ByteBuffer {
    let header = RecordBatchHeader(
        attributes: Int16(codec.rawValue), lastOffsetDelta: 999, baseTimestamp: 1_700_000_000_000, maxTimestamp: 1_700_000_000_999,
        recordCount: 1000)
    return RecordBatch.assemble(header: header, body: try! codec.compress(plain))
}

/// A Produce v9 request frame body (header and request) carrying `records` for one partition.
func produceFrame(_ records: ByteBuffer) -> ByteBuffer {
    var request = ProduceRequest()
    request.acks = 1
    request.timeoutMs = 30_000
    request.topicData = [.init(name: "bench", partitionData: [.init(index: 0, records: records)])]
    var frame = ByteBuffer()
    RequestHeader(requestApiKey: 0, requestApiVersion: 9, correlationId: 1, clientId: "bench").encode(into: &frame, version: 2)
    request.encode(into: &frame, version: 9)
    return frame
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .microseconds,
        maxDuration: .seconds(2),
        maxIterations: 10_000,
        // Allocations may not grow; a small margin absorbs allocator noise between runs.
        thresholds: [.mallocCountTotal: .init(absolute: [.p90: 2])]
    )
    let plain = plainRecords()
    let lz4 = batch(.lz4, plain)
    let zstd = batch(.zstd, plain)

    Benchmark("CRC32C-1MiB") { benchmark in
        var bytes = ByteBuffer()
        bytes.writeRepeatingByte(7, count: 1 << 20)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { blackHole(CRC32C.checksum(bytes)) }
    }

    Benchmark("ProduceRequest-decode") { benchmark in
        let frame = produceFrame(lz4)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            var body = frame
            blackHole(try RequestHeader(from: &body, version: 2))
            blackHole(try ProduceRequest(from: &body, version: 9))
        }
    }

    Benchmark("RecordBatch-validate-lz4") { benchmark in
        let config = try LogConfig()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try RecordBatchValidator.validate(lz4, config: config, nowMilliseconds: 1_700_000_000_500))
        }
    }

    for (name, codec) in [("LZ4", CompressionCodec.lz4), ("Zstd", .zstd)] {
        Benchmark("\(name)-compress") { benchmark in
            for _ in benchmark.scaledIterations { blackHole(try codec.compress(plain)) }
        }
        Benchmark("\(name)-decompress") { benchmark in
            let compressed = RecordBatch.recordsSection(of: codec == .lz4 ? lz4 : zstd)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(try codec.decompress(compressed, outputBytesMax: 4 << 20))
            }
        }
    }

    /// A log in a fresh directory, with or without the hot cache, and the validated batch.
    func openLog(cached: Bool) throws -> (PartitionLog, [ValidatedBatch], String) {
        let directory = NSTemporaryDirectory() + "rafka-bench-" + UUID().uuidString
        let cache = cached ? HotCache(bytesMax: 1 << 30, maxAgeMilliseconds: 600_000) : HotCache.disabled
        let (log, _) = try PartitionLog.open(
            directory: directory, topicPartition: TopicPartition("bench", 0), config: try LogConfig(), cache: cache)
        return (log, try RecordBatchValidator.validate(lz4, config: try LogConfig(), nowMilliseconds: 1_700_000_000_500), directory)
    }

    Benchmark("Log-append") { benchmark in
        let (log, validated, directory) = try openLog(cached: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try log.append(validated, nowMilliseconds: 1_700_000_000_500))
        }
        benchmark.stopMeasurement()
        try log.deleteFiles()
    }

    for cached in [true, false] {
        Benchmark("Log-read-\(cached ? "hot-cache" : "segment")") { benchmark in
            let (log, validated, directory) = try openLog(cached: cached)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            for _ in 0..<100 { _ = try log.append(validated, nowMilliseconds: 1_700_000_000_500) }
            var offset: Int64 = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(try log.read(from: offset, maxBytes: 1 << 20, minOneBatch: true))
                offset = (offset + 1000) % 100_000
            }
            benchmark.stopMeasurement()
            try log.deleteFiles()
        }
    }
}
