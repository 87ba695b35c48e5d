import RafkaCore

/// A simulated network between numbered nodes: every message is delivered after a delay drawn
/// from `delayTicks` (so messages reorder), may be dropped or duplicated, and links can be cut.
/// Deterministic for a given seed. Pure: time is the caller's tick count.
public struct SimNetwork<Message: Sendable>: Sendable {
    public struct Faults: Sendable {
        public var dropProbability: Double = 0
        public var duplicateProbability: Double = 0
        public var delayTicks: ClosedRange<Int> = 1...1

        public init(dropProbability: Double = 0, duplicateProbability: Double = 0, delayTicks: ClosedRange<Int> = 1...1) {
            self.dropProbability = dropProbability
            self.duplicateProbability = duplicateProbability
            self.delayTicks = delayTicks
        }
    }

    struct InFlight: Sendable {
        var deliverAt: Int
        var sequence: UInt64
        var from: NodeID
        var to: NodeID
        var message: Message
    }

    public var faults: Faults
    private var inFlight: [InFlight] = []
    private var sequence: UInt64 = 0
    /// Directed links that drop everything.
    private var cut: Set<Pair> = []

    struct Pair: Hashable, Sendable {
        var from: NodeID
        var to: NodeID
    }

    public init(faults: Faults = Faults()) {
        self.faults = faults
    }

    public var messagesInFlight: Int { self.inFlight.count }

    public mutating func send(_ message: Message, from: NodeID, to: NodeID, now: Int, random: inout SeededRandom) {
        if self.cut.contains(Pair(from: from, to: to)) { return }
        if Double.random(in: 0..<1, using: &random) < self.faults.dropProbability { return }
        let copies = Double.random(in: 0..<1, using: &random) < self.faults.duplicateProbability ? 2 : 1
        for _ in 0..<copies {
            let delay = Int.random(in: self.faults.delayTicks, using: &random)
            self.sequence += 1
            self.inFlight.append(InFlight(deliverAt: now + delay, sequence: self.sequence, from: from, to: to, message: message))
        }
    }

    /// Messages due at `now`, in delivery order; a cut made after sending still drops them.
    public mutating func deliver(now: Int) -> [(from: NodeID, to: NodeID, message: Message)] {
        var due: [InFlight] = []
        var remaining: [InFlight] = []
        for item in self.inFlight {
            if item.deliverAt <= now { due.append(item) } else { remaining.append(item) }
        }
        self.inFlight = remaining
        due.sort { ($0.deliverAt, $0.sequence) < ($1.deliverAt, $1.sequence) }
        return due.filter { !self.cut.contains(Pair(from: $0.from, to: $0.to)) }.map { ($0.from, $0.to, $0.message) }
    }

    /// Splits `nodes` into groups that cannot reach each other.
    public mutating func partition(_ groups: [[NodeID]]) {
        self.cut = []
        for (i, group) in groups.enumerated() {
            for (j, other) in groups.enumerated() where i != j {
                for from in group {
                    for to in other { self.cut.insert(Pair(from: from, to: to)) }
                }
            }
        }
    }

    /// Cuts every link to and from `node`.
    public mutating func isolate(_ node: NodeID, among nodes: [NodeID]) {
        for other in nodes where other != node {
            self.cut.insert(Pair(from: node, to: other))
            self.cut.insert(Pair(from: other, to: node))
        }
    }

    public mutating func heal() {
        self.cut = []
    }

    /// Drops everything in flight to or from `node` (its connections died with it).
    public mutating func dropAll(involving node: NodeID) {
        self.inFlight.removeAll { $0.from == node || $0.to == node }
    }
}
