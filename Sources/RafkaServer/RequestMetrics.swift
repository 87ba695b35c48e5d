import KafkaProtocol
import Prometheus
import Synchronization

/// What clients ask of this node, per API, as Prometheus metrics (served on `metrics-listen`):
/// requests answered, their bytes and their responses' bytes, and how long each took from its
/// last byte read to its response taken by the socket, as Kafka's `TotalTimeMs` counts it. The
/// time a request waited behind others of its connection counts; a fetch's includes its wait
/// for records (up to its `max.wait.ms`); a produce with acks=0 ends once it is handled. Also
/// the client connections open, accepted and refused (`max-connections`).
///
/// Recorded as each request ends, on its connection's event loop: a lock for the API's series
/// and one for its histogram, each held for a few additions. A request that closed its
/// connection (malformed, unknown API) is not counted; the log has it.
final class RequestMetrics: Sendable {
    /// Upper bounds of the duration buckets: fine below a few milliseconds, where a broker's
    /// answers to produce requests belong, coarse up to a fetch's longest waits.
    static let bucketsMicroseconds: [Int64] = [
        100, 250, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 25_000, 50_000, 100_000, 250_000,
        500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
    ]

    private struct Series: Sendable {
        let requests: Counter
        let requestBytes: Counter
        let responseBytes: Counter
        let duration: DurationHistogram
    }

    private let registry: PrometheusCollectorRegistry
    /// Made on an API's first request: only APIs the node answered get series, so a client
    /// cannot make more of them than the node has APIs.
    private let series = Mutex<[Int16: Series]>([:])
    private let connectionsOpen: Gauge
    private let connectionsAccepted: Counter
    private let connectionsRefused: Counter

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        self.connectionsOpen = registry.makeGauge(
            descriptor: Self.name("connections", "open", "Client connections open now."))
        self.connectionsAccepted = registry.makeCounter(
            descriptor: Self.name("connections_accepted", "total", "Client connections accepted."))
        self.connectionsRefused = registry.makeCounter(
            descriptor: Self.name("connections_refused", "total", "Client connections closed at once: max-connections were open."))
    }

    private static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "rafka", subsystem: nil, metricName: metric, unitName: unit, helpText: help)
    }

    func connectionAccepted() {
        self.connectionsAccepted.increment()
        self.connectionsOpen.increment()
    }

    func connectionClosed() { self.connectionsOpen.decrement() }

    func connectionRefused() { self.connectionsRefused.increment() }

    /// One request of `api` answered (`responseBytes` 0 when no response is due).
    func record(_ api: KafkaAPIKey, requestBytes: Int, responseBytes: Int, nanoseconds: Int64) {
        let series = self.series(for: api)
        series.requests.increment()
        series.requestBytes.increment(by: Int64(requestBytes))
        series.responseBytes.increment(by: Int64(responseBytes))
        series.duration.record(.nanoseconds(max(0, nanoseconds)))
    }

    private func series(for api: KafkaAPIKey) -> Series {
        self.series.withLock { series in
            if let existing = series[api.rawValue] { return existing }
            let labels = [("api", api.name)]
            let made = Series(
                requests: self.registry.makeCounter(
                    descriptor: Self.name("requests", "total", "Requests answered, by API."), labels: labels),
                requestBytes: self.registry.makeCounter(
                    descriptor: Self.name("request", "bytes_total", "Bytes of the requests answered (frames, size prefix included), by API."),
                    labels: labels),
                responseBytes: self.registry.makeCounter(
                    descriptor: Self.name("response", "bytes_total", "Bytes of their responses, by API."), labels: labels),
                duration: self.registry.makeDurationHistogram(
                    descriptor: Self.name(
                        "request_duration", "seconds",
                        "From a request's last byte read to its response taken by the socket (fetches: their wait included), by API."),
                    labels: labels,
                    buckets: Self.bucketsMicroseconds.map { .microseconds($0) }))
            series[api.rawValue] = made
            return made
        }
    }
}
