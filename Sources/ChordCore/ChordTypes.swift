import RafkaCore

/// Timings and sizes of the Chord protocol, in ticks of the shell's clock.
public struct ChordOptions: Sendable {
    /// Distinct nodes each token keeps after it: enough for the largest replication factor plus
    /// two failures in a row (Chord §5: r successors survive r − 1 simultaneous failures).
    public var successorListLength = 5
    /// Each token asks its successor for its neighbours this often (stabilize), then notifies it.
    public var stabilizeTicks = 2
    /// Each token refreshes one finger this often (fix-fingers).
    public var fixFingersTicks = 2
    /// Predecessors are pinged this often (check-predecessor).
    public var checkPredecessorTicks = 4
    /// A request without an answer after this long suspects its recipient.
    public var requestTimeoutTicks = 6
    /// A lookup gives up after this many hops (a ring in flux may need more than log N).
    public var lookupHopsMax = 128

    public init() {}
}

/// One message between two data nodes' Chord instances. Positions name which of the
/// recipient's tokens a message is about.
public struct ChordMessage: Sendable, Equatable {
    public var from: NodeID
    public var to: NodeID
    public var kind: Kind

    public init(from: NodeID, to: NodeID, kind: Kind) {
        self.from = from
        self.to = to
        self.kind = kind
    }

    public enum Kind: Sendable, Equatable {
        /// Stabilize: "who are the neighbours of your token at `position`?"
        case getNeighbors(requestID: UInt64, position: RingPosition)
        /// The answer: that token's predecessor, its immediate successor (any node's) and the
        /// next distinct other nodes after it (the replica candidates), nearest first.
        case neighbors(requestID: UInt64, position: RingPosition, predecessor: RingEntry?, successor: RingEntry, successors: [RingEntry])
        /// "`candidate` may be the predecessor of your token at `position`."
        case notify(position: RingPosition, candidate: RingEntry)
        /// One step of an iterative lookup: "who owns `key`, or who is closer to it?"
        case findSuccessor(requestID: UInt64, key: RingPosition)
        /// The answer to one step.
        case lookupStep(requestID: UInt64, answer: LookupAnswer)
        /// Check-predecessor.
        case ping(requestID: UInt64)
        case pong(requestID: UInt64)
        /// A controlled leave: forget the sender now instead of waiting for timeouts.
        case leaving
    }
}

/// What one node answers a lookup step with.
public enum LookupAnswer: Sendable, Equatable {
    /// The key belongs to this token (the first at or after the key).
    case owner(RingEntry)
    /// The closest token before the key this node knows of: ask its node next.
    case closer(RingEntry)
    /// This node cannot route the key now (it is rejoining): the step failed, but the node is
    /// alive, so nobody should suspect it.
    case unknown
}

/// A finished lookup.
public struct LookupResult: Sendable, Equatable {
    public var id: UInt64
    public var key: RingPosition
    /// The token owning the key, or nil when the lookup failed (no live route, too many hops).
    public var owner: RingEntry?
    /// Remote steps taken (0 when this node knew the answer).
    public var hops: Int
}

/// What a `ChordStateMachine` asks its shell to do, drained with `ready()`.
public struct ChordReady: Sendable {
    /// Messages to send, in order.
    public var messages: [ChordMessage] = []
    /// Lookups started with `lookup(_:)` that finished.
    public var lookups: [LookupResult] = []
    /// Nodes that stopped answering: the shell reports them to the controller quorum, which
    /// decides whether to fence them.
    public var suspected: [NodeID] = []

    public var isEmpty: Bool { self.messages.isEmpty && self.lookups.isEmpty && self.suspected.isEmpty }
}
