/// A Kafka API key (the first field of every request header).
///
/// Every key Kafka defines has a `static let` (generated); `name` gives Kafka's name (or, for
/// Rafka's own keys, Rafka's) for logs and metrics.
public struct KafkaAPIKey: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int16

    public init(rawValue: Int16) { self.rawValue = rawValue }

    public var name: String { Self.names[self.rawValue] ?? Self.rafkaNames[self.rawValue] ?? "Unknown(\(self.rawValue))" }

    /// Rafka's own keys (10000 and up, declared beside their messages), by name.
    static let rafkaNames: [Int16: String] = [
        10001: "RafkaRaftMessage",
        10003: "RafkaRegisterNode",
        10004: "RafkaNodeHeartbeat",
        10005: "RafkaFetchMetadata",
        10006: "RafkaDescribeNodes",
        10007: "RafkaDescribeRing",
        10008: "RafkaPartitionHandoff",
        10009: "RafkaChordMessage",
        10010: "RafkaDescribeCache",
        10011: "RafkaPartitionCopyAhead",
    ]

    public var description: String { self.name }

    /// Whether a request of this API at `version` is flexible (compact types, tagged fields,
    /// request header v2). Rafka's own keys (10000 and up) are flexible from version 0.
    public func isFlexibleRequest(_ version: Int16) -> Bool {
        if self.rawValue >= 10_000 { return true }
        guard let first = Self.firstFlexibleRequestVersions[self.rawValue] else { return false }
        return version >= first
    }
}
