import ChordCore
import RafkaCore

/// Placement measurements over whole rings: how evenly partitions spread, and how many move
/// when a node joins.
public enum RingStatistics {
    /// Partition keys as real topics produce them: `topics` topics of `partitionsPerTopic`.
    public static func partitionKeys(count: Int, seed: UInt64) -> [RingPosition] {
        var random = SeededRandom(seed: seed)
        let perTopic = 100
        var keys: [RingPosition] = []
        keys.reserveCapacity(count)
        var topic = (high: random.next(), low: random.next())
        for index in 0..<count {
            if index % perTopic == 0 { topic = (random.next(), random.next()) }
            keys.append(RingHash.partitionKey(topicID: topic, partition: Int32(index % perTopic)))
        }
        return keys
    }

    public struct Load: Sendable, CustomStringConvertible {
        /// The most loaded node's partition count over the mean.
        public var maxOverMean: Double
        /// The 99th-percentile node's over the mean.
        public var p99OverMean: Double

        public var description: String {
            let format = { (value: Double) in String(Int((value * 100).rounded())).paddedDecimal() }
            return "max/mean \(format(self.maxOverMean)), p99/mean \(format(self.p99OverMean))"
        }
    }

    /// Replicas per node relative to the mean, over `keys` placed with `replicationFactor`.
    public static func load(of ring: RingMap, keys: [RingPosition], replicationFactor: Int) -> Load {
        var counts: [NodeID: Int] = [:]
        for node in Set(ring.entries.map(\.node)) { counts[node] = 0 }
        for key in keys {
            for node in ring.replicas(of: key, count: replicationFactor) { counts[node, default: 0] += 1 }
        }
        let sorted = counts.values.sorted()
        let mean = Double(sorted.reduce(0, +)) / Double(max(sorted.count, 1))
        let p99 = sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
        return Load(maxOverMean: Double(sorted.last ?? 0) / mean, p99OverMean: Double(p99) / mean)
    }

    public struct Movement: Sendable {
        /// Partitions whose leader (first replica) changed.
        public var leaders: Double
        /// Replica slots that moved to another node, over all replica slots.
        public var replicas: Double
    }

    /// What a change from `before` to `after` moves, over `keys`.
    public static func movement(from before: RingMap, to after: RingMap, keys: [RingPosition], replicationFactor: Int) -> Movement {
        var leaders = 0
        var replicas = 0
        for key in keys {
            let old = before.replicas(of: key, count: replicationFactor)
            let new = after.replicas(of: key, count: replicationFactor)
            if old.first != new.first { leaders += 1 }
            replicas += Set(new).subtracting(old).count
        }
        return Movement(
            leaders: Double(leaders) / Double(keys.count), replicas: Double(replicas) / Double(keys.count * replicationFactor))
    }

    /// A ring of `nodes` nodes with `tokensPerNode` tokens each: allocated as the controllers
    /// do (`TokenAllocator`), or random (hashes of the node id, plain consistent hashing).
    public static func ring(nodes: Int, tokensPerNode: Int, allocated: Bool) -> RingMap {
        var tokens: [NodeID: [RingPosition]] = [:]
        var allocator = TokenAllocator(ring: RingMap(tokens: [:]))
        for raw in 1...Int32(nodes) {
            let node = NodeID(raw)
            tokens[node] = allocated
                ? allocator.allocate(for: node, count: tokensPerNode) : RingHash.tokens(node: node, count: tokensPerNode)
        }
        return RingMap(tokens: tokens)
    }
}

extension String {
    /// "123" → "1.23".
    fileprivate func paddedDecimal() -> String {
        let digits = self.count < 3 ? String(repeating: "0", count: 3 - self.count) + self : self
        return String(digits.dropLast(2)) + "." + String(digits.suffix(2))
    }
}
