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

/// A Raft term (Raft §5.1): a logical clock that only grows; at most one leader per term.
public struct Term: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    public static let zero = Term(0)

    public static func < (lhs: Term, rhs: Term) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The next term.
    public var next: Term { Term(self.rawValue + 1) }

    public var description: String { String(self.rawValue) }
}

/// The position of an entry in a Raft log (1-based; 0 means "before the first entry").
///
/// Not a Kafka `Offset`: the two are different types so they cannot be mixed up.
public struct LogIndex: RawRepresentable, Hashable, Comparable, Strideable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    public static let zero = LogIndex(0)

    public static func < (lhs: LogIndex, rhs: LogIndex) -> Bool { lhs.rawValue < rhs.rawValue }

    public func distance(to other: LogIndex) -> Int64 { Int64(bitPattern: other.rawValue &- self.rawValue) }

    public func advanced(by n: Int64) -> LogIndex { LogIndex(UInt64(Int64(bitPattern: self.rawValue) + n)) }

    public static func + (lhs: LogIndex, rhs: Int64) -> LogIndex { lhs.advanced(by: rhs) }
    public static func - (lhs: LogIndex, rhs: Int64) -> LogIndex { lhs.advanced(by: -rhs) }

    public var description: String { String(self.rawValue) }
}
