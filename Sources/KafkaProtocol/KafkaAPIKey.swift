/// A Kafka API key (the first field of every request header).
///
/// Every key Kafka defines has a `static let` (generated); `name` gives Kafka's name for logs.
public struct KafkaAPIKey: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int16

    public init(rawValue: Int16) { self.rawValue = rawValue }

    public var name: String { Self.names[self.rawValue] ?? "Unknown(\(self.rawValue))" }

    public var description: String { self.name }

    /// Whether a request of this API at `version` is flexible (compact types, tagged fields,
    /// request header v2). Rafka's own keys (10000 and up) are flexible from version 0.
    public func isFlexibleRequest(_ version: Int16) -> Bool {
        if self.rawValue >= 10_000 { return true }
        guard let first = Self.firstFlexibleRequestVersions[self.rawValue] else { return false }
        return version >= first
    }
}
