import RafkaCore

/// A whole view of the ring: every live node's tokens, sorted. Built from the metadata image
/// (where the controllers committed each node's tokens) or from a simulation's ground truth.
///
/// Placement is a pure function of this view: a partition's replicas are the first `rf`
/// distinct nodes clockwise from its key, rack-aware when racks are known; the first is the
/// leader. Every node that holds the same view computes the same answer.
public struct RingMap: Sendable, Equatable {
    /// Every token, sorted by position.
    public private(set) var entries: [RingEntry]
    /// Each node's rack, if it has one.
    public private(set) var racks: [NodeID: String]
    /// Distinct nodes on the ring.
    public private(set) var nodeCount: Int
    /// Distinct racks among them (0 when no node has a rack: placement ignores racks).
    private var rackCount: Int

    public init(tokens: [NodeID: [RingPosition]], racks: [NodeID: String] = [:]) {
        var entries: [RingEntry] = []
        entries.reserveCapacity(tokens.values.reduce(0) { $0 + $1.count })
        for (node, positions) in tokens {
            for position in positions { entries.append(RingEntry(position: position, node: node)) }
        }
        // Equal positions (a 2^-64 chance per pair) are ordered by node so every view agrees.
        entries.sort { ($0.position, $0.node) < ($1.position, $1.node) }
        self.entries = entries
        let known = racks.filter { tokens[$0.key] != nil }
        self.racks = known
        let nodes = tokens.filter { !$0.value.isEmpty }.keys
        self.nodeCount = nodes.count
        self.rackCount = known.isEmpty ? 0 : Set(nodes.map { known[$0] ?? "" }).count
    }

    public var isEmpty: Bool { self.entries.isEmpty }

    /// Index of the first entry at or after `key` clockwise (Chord's successor(key)).
    public func successorIndex(of key: RingPosition) -> Int {
        precondition(!self.entries.isEmpty, "successor on an empty ring")
        var low = 0
        var high = self.entries.count
        while low < high {
            let middle = (low + high) / 2
            if self.entries[middle].position < key { low = middle + 1 } else { high = middle }
        }
        return low == self.entries.count ? 0 : low
    }

    /// The entry that owns `key`: the first token at or after it clockwise.
    public func successor(of key: RingPosition) -> RingEntry { self.entries[self.successorIndex(of: key)] }

    /// The replicas of `key`: up to `count` distinct nodes clockwise from it. With racks known,
    /// a node whose rack is already used is passed over while nodes of unused racks remain
    /// further on, then taken in ring order to fill the set (Cassandra's
    /// NetworkTopologyStrategy does the same). The first replica is the preferred leader.
    public func replicas(of key: RingPosition, count: Int) -> [NodeID] {
        guard !self.entries.isEmpty, count > 0 else { return [] }
        let wanted = min(count, self.nodeCount)
        var chosen: [NodeID] = []
        chosen.reserveCapacity(wanted)
        var index = self.successorIndex(of: key)
        // Replica sets are small: linear membership checks beat hashing here.
        guard self.rackCount > 0 else {
            for _ in 0..<self.entries.count {
                if chosen.count == wanted { break }
                let node = self.entries[index].node
                index = index + 1 == self.entries.count ? 0 : index + 1
                if !chosen.contains(node) { chosen.append(node) }
            }
            return chosen
        }
        var passedOver: [NodeID] = []
        var usedRacks: [String] = []
        for _ in 0..<self.entries.count {
            if chosen.count == wanted { break }
            let node = self.entries[index].node
            index = index + 1 == self.entries.count ? 0 : index + 1
            guard !chosen.contains(node), !passedOver.contains(node) else { continue }
            if usedRacks.count < self.rackCount {
                // Nodes without a rack count as one more rack of their own.
                let rack = self.racks[node] ?? ""
                if usedRacks.contains(rack) {
                    passedOver.append(node)
                    continue
                }
                usedRacks.append(rack)
            } else {
                // Every rack is represented: the nodes passed over come first, in ring order.
                while chosen.count < wanted, !passedOver.isEmpty { chosen.append(passedOver.removeFirst()) }
                if chosen.count == wanted { break }
            }
            chosen.append(node)
        }
        for node in passedOver where chosen.count < wanted { chosen.append(node) }
        assert(Set(chosen).count == chosen.count, "replicas must be distinct")
        return chosen
    }

    /// The share of the ring each node owns as first replica (sums to 1).
    public func ownership() -> [NodeID: Double] {
        guard let last = self.entries.last else { return [:] }
        var shares: [NodeID: Double] = [:]
        var previous = last.position
        for entry in self.entries {
            let arc = previous.distance(to: entry.position)
            shares[entry.node, default: 0] += self.entries.count == 1 ? 1 : Double(arc) / 18_446_744_073_709_551_616.0
            previous = entry.position
        }
        return shares
    }
}
