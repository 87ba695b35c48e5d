import Histogram

#if canImport(Glibc)
import Glibc
#endif

/// Latencies in microseconds, 1 µs to 10 minutes at three significant digits (HdrHistogram).
/// A value, not shared: each worker records into its own and the run adds them up.
public struct LatencyHistogram: Sendable {
    private var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)

    public init() {}

    public mutating func record(nanoseconds: Int64, count: Int = 1) {
        let micros = UInt64(max(1, min(nanoseconds / 1000, 600_000_000)))
        _ = self.histogram.record(micros, count: UInt64(count))
    }

    public mutating func add(_ other: LatencyHistogram) {
        self.histogram.add(other.histogram)
    }

    public var count: UInt64 { self.histogram.totalCount }

    /// The summary a result reports, in milliseconds.
    public var summary: LatencySummary? {
        guard self.histogram.totalCount > 0 else { return nil }
        let ms = { (micros: UInt64) in Double(micros) / 1000 }
        return LatencySummary(
            count: self.histogram.totalCount, mean: self.histogram.mean / 1000, p50: ms(self.histogram.valueAtPercentile(50)),
            p90: ms(self.histogram.valueAtPercentile(90)), p99: ms(self.histogram.valueAtPercentile(99)),
            p999: ms(self.histogram.valueAtPercentile(99.9)), max: ms(self.histogram.max))
    }
}

/// Latency percentiles in milliseconds.
public struct LatencySummary: Sendable, Codable, Equatable {
    public var count: UInt64
    public var mean: Double
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double
}

/// Nanoseconds on the monotonic clock.
enum MonotonicClock {
    static func now() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    static func wallMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    /// Sleeps until `deadline` (monotonic ns); returns at once if it passed.
    static func sleep(until deadline: Int64) async throws {
        let wait = deadline - Self.now()
        if wait > 20_000 { try await Task.sleep(nanoseconds: UInt64(wait)) }
    }
}
