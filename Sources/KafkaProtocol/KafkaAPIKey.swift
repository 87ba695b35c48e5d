/// A Kafka API key (the first field of every request header).
///
/// Every key Kafka defines has a `static let` (generated); `name` gives Kafka's name for logs.
public struct KafkaAPIKey: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int16

    public init(rawValue: Int16) { self.rawValue = rawValue }

    public var name: String { Self.names[self.rawValue] ?? "Unknown(\(self.rawValue))" }

    public var description: String { self.name }
}
