import RafkaCore

/// A point of the ring: Chord's identifier space of 2^64 positions, arithmetic modulo 2^64.
public struct RingPosition: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    public static func < (lhs: RingPosition, rhs: RingPosition) -> Bool { lhs.rawValue < rhs.rawValue }

    /// Clockwise distance from `self` to `other` (0 when equal).
    public func distance(to other: RingPosition) -> UInt64 { other.rawValue &- self.rawValue }

    /// The position `offset` steps clockwise.
    public func advanced(by offset: UInt64) -> RingPosition { RingPosition(self.rawValue &+ offset) }

    /// Whether `self` lies in the arc (from, to] walking clockwise. When `from == to` the arc is
    /// the whole ring (a ring of one position owns every key).
    public func isIn(after from: RingPosition, through to: RingPosition) -> Bool {
        from == to || (from.distance(to: self) != 0 && from.distance(to: self) <= from.distance(to: to))
    }

    /// Whether `self` lies strictly inside the arc (from, to) walking clockwise. When
    /// `from == to` that is every position but `from`.
    public func isStrictly(after from: RingPosition, before to: RingPosition) -> Bool {
        let d = from.distance(to: self)
        return d != 0 && (from == to || d < from.distance(to: to))
    }

    public var description: String {
        let hex = String(self.rawValue, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// One position on the ring and the data node that owns it (one of that node's tokens).
public struct RingEntry: Hashable, Sendable, CustomStringConvertible {
    public var position: RingPosition
    public var node: NodeID

    public init(position: RingPosition, node: NodeID) {
        self.position = position
        self.node = node
    }

    public var description: String { "\(self.node)@\(self.position)" }
}

/// The hash functions that put nodes and partitions on the ring. Stable across versions and
/// platforms: tokens and partition keys are persisted and compared between nodes.
public enum RingHash {
    /// SplitMix64's finalizer: every input bit affects every output bit.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The key of partition `partition` of the topic with id `topicID` (its 16 bytes, big-endian
    /// halves): `k = hash64(topicId, partitionIndex)`.
    public static func partitionKey(topicID: (high: UInt64, low: UInt64), partition: Int32) -> RingPosition {
        RingPosition(Self.mix(Self.mix(Self.mix(topicID.high) ^ topicID.low) ^ UInt64(UInt32(bitPattern: partition))))
    }

    /// The `index`-th pseudo-random token of `node`: plain consistent hashing, the baseline the
    /// placement table compares the controllers' allocation (`TokenAllocator`) with.
    public static func token(node: NodeID, index: Int) -> RingPosition {
        RingPosition(Self.mix(Self.mix(0x7261_666B_6100_0000 ^ UInt64(UInt32(bitPattern: node.rawValue))) ^ UInt64(index)))
    }

    /// `count` distinct tokens for `node`, sorted.
    public static func tokens(node: NodeID, count: Int) -> [RingPosition] {
        precondition(count > 0 && count <= Limits.ringTokensPerNodeMax, "token count \(count)")
        var seen = Set<RingPosition>()
        var index = 0
        while seen.count < count {
            seen.insert(Self.token(node: node, index: index))
            index += 1
        }
        return seen.sorted()
    }
}
