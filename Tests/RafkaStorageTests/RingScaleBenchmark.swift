import ChordCore
import Foundation
import HashTreeCollections
import KafkaProtocol
import RafkaCore
import RafkaStorage
import RaftCore
import Testing

/// A million partitions over a thousand data nodes, in simulation: what the controllers store
/// and what a ring-epoch change (a node joining) costs until every node serves by the new ring.
/// Prints figures, asserts nothing about speed. `benchmarks/ring_scale` runs it optimized
/// (RAFKA_BENCH=1 enables it; RAFKA_BENCH_NODES and RAFKA_BENCH_TOPICS change the size).
@Suite(.enabled(if: ProcessInfo.processInfo.environment["RAFKA_BENCH"] != nil))
struct RingScaleBenchmark {
    static let environment = ProcessInfo.processInfo.environment

    @Test func millionPartitions() throws {
        let nodeCount = Self.environment["RAFKA_BENCH_NODES"].flatMap(Int.init) ?? 1000
        let topicCount = Self.environment["RAFKA_BENCH_TOPICS"].flatMap(Int.init) ?? 1000
        let partitionsPerTopic = 1000
        let tokensPerNode = Limits.ringTokensPerNodeDefault
        let clock = ContinuousClock()

        // The metadata log as the controllers commit it: registrations, then topics.
        var image = MetadataImage(clusterID: "bench")
        var logBytes = 0
        var offset: UInt64 = 0
        func commit(_ change: MetadataChange) {
            logBytes += change.encoded().count
            offset += 1
            change.apply(to: &image, at: LogIndex(offset))
        }
        var allocator = TokenAllocator(ring: RingMap(tokens: [:]))
        for raw in 1...Int32(nodeCount) {
            let id = NodeID(raw)
            commit(.registerNode(NodeRegistration(
                id: id, host: "10.0.\(raw / 256).\(raw % 256)", port: 9092, rack: "rack-\(raw % 3)", incarnation: Int64(offset + 1),
                fenced: false, tokens: allocator.allocate(for: id, count: tokensPerNode))))
        }
        var random = SeededRandom(seed: 7)
        for index in 0..<topicCount {
            commit(.createTopic(TopicMetadata(
                name: "topic-\(index)", id: KafkaUUID.random(using: &random), partitionCount: Int32(partitionsPerTopic),
                replicationFactor: 3, configs: index % 10 == 0 ? ["retention.ms": "86400000"] : [:])))
        }
        let partitionCount = topicCount * partitionsPerTopic
        let directory = NSTemporaryDirectory() + "rafka-bench-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var snapshotBytes = 0
        let snapshotTime = try clock.measure {
            snapshotBytes = try MetadataSnapshotCodec.encode(image, scratchDirectory: directory).count
        }

        // Every node computes placement from the ring: every partition's key, then its replicas.
        var keys: [RingPosition] = []
        keys.reserveCapacity(partitionCount)
        for topic in image.topics.values {
            for partition in 0..<topic.partitionCount {
                keys.append(RingHash.partitionKey(topicID: (topic.id.high, topic.id.low), partition: partition))
            }
        }
        var ring = image.ring
        var leaders: [NodeID] = []
        let placeAll = clock.measure {
            leaders = keys.map { ring.replicas(of: $0, count: 3)[0] }
        }

        // A node joins: the leader allocates its tokens, every node applies the record, rebuilds
        // its ring and finds the partitions whose replica sets changed.
        let newcomer = NodeID(Int32(nodeCount + 1))
        var tokens: [RingPosition] = []
        let allocate = clock.measure {
            var joinAllocator = TokenAllocator(ring: image.allTokens)
            tokens = joinAllocator.allocate(for: newcomer, count: tokensPerNode)
        }
        let registration = MetadataChange.registerNode(NodeRegistration(
            id: newcomer, host: "10.0.9.9", port: 9092, rack: "rack-0", incarnation: Int64(offset + 1), fenced: false, tokens: tokens))
        let epochBefore = image.ringEpoch
        let apply = clock.measure { commit(registration) }
        let rebuild = clock.measure { ring = image.ring }
        var movedLeaders = 0
        let replaceAll = clock.measure {
            for (index, key) in keys.enumerated() where ring.replicas(of: key, count: 3)[0] != leaders[index] { movedLeaders += 1 }
        }
        // Incrementally: only keys in the arcs the newcomer took can change leader.
        let sortedKeys = keys.sorted()
        var inTakenArcs = 0
        let incremental = clock.measure {
            for token in tokens {
                let index = ring.successorIndex(of: token)
                let previous = ring.entries[(index + ring.entries.count - 1) % ring.entries.count].position
                inTakenArcs += Self.count(sortedKeys, after: previous, through: token)
            }
        }
        // Each node's Chord instance learns the new ring from the image (seed), not hop by hop.
        var machine = ChordStateMachine(node: NodeID(1), tokens: image.nodes[NodeID(1)]!.tokens)
        let seed = clock.measure { machine.seed(ring) }

        let megabytes = { (bytes: Int) in String(format: "%.2f MB", Double(bytes) / 1_000_000) }
        let seconds = { (duration: Duration) in Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18 }
        let ms = { (duration: Duration) in String(format: "%.2f ms", seconds(duration) * 1000) }
        print("""
            ring scale: \(nodeCount) data nodes × \(tokensPerNode) tokens, \(topicCount) topics × \(partitionsPerTopic) partitions = \(partitionCount) partitions (RF 3)
              controller metadata: \(image.nodes.count + image.topics.count) records, log \(megabytes(logBytes)), \
            SQLite snapshot \(megabytes(snapshotBytes)) (written in \(ms(snapshotTime))), \
            \(String(format: "%.1f", Double(snapshotBytes) / Double(partitionCount))) bytes per partition: \
            O(nodes + topics), nothing per partition
              placement of every partition from the ring: \(ms(placeAll)) (\(String(format: "%.0f", seconds(placeAll) * 1e9 / Double(partitionCount))) ns each)
              a join (ring epoch \(epochBefore) → \(image.ringEpoch)): token allocation on the controller leader \(ms(allocate)); \
            on each node: apply \(ms(apply)), ring rebuild \(ms(rebuild)), Chord seed \(ms(seed)), \
            partitions to move found in \(ms(incremental)) (\(inTakenArcs) keys in the taken arcs; a full recompute takes \(ms(replaceAll)) \
            and finds \(movedLeaders) leaders moved, \(String(format: "%.2f", Double(movedLeaders) * Double(nodeCount + 1) / Double(partitionCount)))/N)
              propagation = metadata commit (p50 1.1 ms, benchmarks/metadata_quorum.py) + the node's metadata fetch \
            (a long poll: a round trip) + \(ms(apply + rebuild + incremental)) of work per node
            """)
        #expect(movedLeaders == inTakenArcs, "the incremental search must find exactly the moved leaders")
    }

    /// Keys in (after, through] on the ring, from sorted keys.
    static func count(_ sorted: [RingPosition], after: RingPosition, through: RingPosition) -> Int {
        func firstAbove(_ position: RingPosition) -> Int {
            var low = 0
            var high = sorted.count
            while low < high {
                let middle = (low + high) / 2
                if sorted[middle] <= position { low = middle + 1 } else { high = middle }
            }
            return low
        }
        let start = firstAbove(after)
        let end = firstAbove(through)
        return after < through ? end - start : (sorted.count - start) + end
    }
}
