/// A Kafka log offset: the position of a record in one partition's log.
///
/// Kafka offsets and Raft log indices are different things; keeping them as different types
/// means one can never be passed where the other is expected.
public struct Offset: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: Int64

    @inlinable
    public init(rawValue: Int64) { self.rawValue = rawValue }

    @inlinable
    public init(_ rawValue: Int64) { self.rawValue = rawValue }

    /// Kafka's "no offset" marker (-1), used by ListOffsets and Fetch.
    public static let none = Offset(-1)
    public static let zero = Offset(0)

    @inlinable
    public static func < (lhs: Offset, rhs: Offset) -> Bool { lhs.rawValue < rhs.rawValue }

    @inlinable
    public static func + (lhs: Offset, rhs: Int64) -> Offset { Offset(lhs.rawValue + rhs) }

    @inlinable
    public static func - (lhs: Offset, rhs: Offset) -> Int64 { lhs.rawValue - rhs.rawValue }

    public var description: String { String(self.rawValue) }
}

/// The id of a Rafka node (controller or data node), Kafka's "broker id".
public struct NodeID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { String(self.rawValue) }
}

/// One partition of one topic, named the way Kafka clients name it.
public struct TopicPartition: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(_ topic: String, _ partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    /// `topic-partition`, Kafka's directory and log naming.
    public var description: String { "\(self.topic)-\(self.partition)" }
}
