import RafkaCore

/// Chooses a joining node's tokens so that the ring stays balanced: the controller leader runs
/// it when a node first registers, and the tokens are committed with the registration (a
/// restart keeps them, so a node's data stays where it is).
///
/// Each of the V tokens takes an equal part of the newcomer's fair share, 1/(n+1) of the ring,
/// from the member that owns the most, carved off the start of that member's largest arc. The
/// newcomer therefore owns about 1/(n+1), taken from the most loaded: ownership stays within a
/// few percent of the mean, where random tokens need hundreds per node for 1.3× (consistent
/// hashing's load spread shrinks only as 1/√V). A join moves just the newcomer's share.
///
/// Deterministic given the ring and the order of joins, so every controller computes the same.
public struct TokenAllocator: Sendable {
    /// Arcs each member owns: (length, start); the arc is (start, start + length].
    private var arcs: [NodeID: [(length: UInt64, start: RingPosition)]] = [:]
    /// Each member's share of the ring, in positions.
    private var owned: [NodeID: Double] = [:]
    private var byOwnership = MaxHeap()

    /// Starts from `ring`, the current members' tokens.
    public init(ring: RingMap) {
        guard let last = ring.entries.last else { return }
        var previous = last.position
        for entry in ring.entries {
            let length = ring.entries.count == 1 ? UInt64.max : previous.distance(to: entry.position)
            if length > 0 { self.arcs[entry.node, default: []].append((length, previous)) }
            self.owned[entry.node, default: 0] += Double(length)
            previous = entry.position
        }
        for (node, share) in self.owned { self.byOwnership.push(share, node) }
    }

    /// Tokens for `node` (not yet a member), `count` of them, sorted; records them as owned.
    public mutating func allocate(for node: NodeID, count: Int) -> [RingPosition] {
        precondition(count > 0 && count <= Limits.ringTokensPerNodeMax, "token count \(count)")
        precondition(self.owned[node] == nil, "node \(node) already has tokens")
        guard !self.owned.isEmpty else { return self.allocateFirst(for: node, count: count) }
        let share = 18_446_744_073_709_551_616.0 / Double(self.owned.count + 1) / Double(count)
        var tokens: [RingPosition] = []
        var mine: [(length: UInt64, start: RingPosition)] = []
        for _ in 0..<count {
            guard let donor = self.popMostLoaded(), var donorArcs = self.arcs[donor],
                let largest = donorArcs.indices.max(by: { donorArcs[$0].length < donorArcs[$1].length }),
                donorArcs[largest].length >= 2
            else { break }
            let arc = donorArcs[largest]
            let take = min(UInt64(share), arc.length - 1)
            let token = arc.start.advanced(by: take)
            donorArcs[largest] = (arc.length - take, token)
            self.arcs[donor] = donorArcs
            self.owned[donor]! -= Double(take)
            self.byOwnership.push(self.owned[donor]!, donor)
            mine.append((take, arc.start))
            tokens.append(token)
        }
        self.arcs[node] = mine
        self.owned[node] = mine.reduce(0) { $0 + Double($1.length) }
        self.byOwnership.push(self.owned[node]!, node)
        return tokens.sorted()
    }

    /// The first node spreads its tokens evenly, starting at a place its id decides.
    private mutating func allocateFirst(for node: NodeID, count: Int) -> [RingPosition] {
        let start = RingHash.token(node: node, index: 0)
        let step = UInt64.max / UInt64(count)
        let tokens = (0..<count).map { start.advanced(by: UInt64($0) &* step) }.sorted()
        var previous = tokens.last!
        for token in tokens {
            self.arcs[node, default: []].append((count == 1 ? UInt64.max : previous.distance(to: token), previous))
            previous = token
        }
        self.owned[node] = 18_446_744_073_709_551_616.0
        self.byOwnership.push(self.owned[node]!, node)
        return tokens
    }

    /// The member owning the most, skipping stale heap entries (each change pushes a new one).
    private mutating func popMostLoaded() -> NodeID? {
        while let (share, node) = self.byOwnership.pop() {
            if self.owned[node] == share { return node }
        }
        return nil
    }
}

/// A binary max-heap of (share, node), ties broken by the lower node id so that every
/// controller picks the same donor.
struct MaxHeap: Sendable {
    private var items: [(share: Double, node: NodeID)] = []

    private static func above(_ a: (share: Double, node: NodeID), _ b: (share: Double, node: NodeID)) -> Bool {
        a.share > b.share || (a.share == b.share && a.node < b.node)
    }

    mutating func push(_ share: Double, _ node: NodeID) {
        self.items.append((share, node))
        var child = self.items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.above(self.items[child], self.items[parent]) else { break }
            self.items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (Double, NodeID)? {
        guard !self.items.isEmpty else { return nil }
        self.items.swapAt(0, self.items.count - 1)
        let top = self.items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var best = parent
            if left < self.items.count, Self.above(self.items[left], self.items[best]) { best = left }
            if right < self.items.count, Self.above(self.items[right], self.items[best]) { best = right }
            if best == parent { break }
            self.items.swapAt(parent, best)
            parent = best
        }
        return (top.share, top.node)
    }
}
