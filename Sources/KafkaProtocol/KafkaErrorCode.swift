/// A Kafka wire error code. Every code in Kafka's `Errors.java` has a documented `static let`
/// (generated from error-codes.tsv).
///
/// Domain errors map to these codes in one place, in `RafkaServer`; nothing else invents numbers.
public struct KafkaErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible, Error {
    public var rawValue: Int16

    public init(rawValue: Int16) { self.rawValue = rawValue }

    /// Kafka's name, e.g. `NOT_LEADER_OR_FOLLOWER`.
    public var name: String { Self.descriptions[self.rawValue]?.name ?? "UNKNOWN(\(self.rawValue))" }

    /// Kafka's default message for the code.
    public var message: String { Self.descriptions[self.rawValue]?.message ?? "" }

    public var description: String { self.name }
}
