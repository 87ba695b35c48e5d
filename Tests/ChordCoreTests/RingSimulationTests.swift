import ChordCore
import Foundation
import RafkaCore
import RafkaTestKit
import Testing

/// Whole rings under churn, and the placement table. CI runs 1,000 nodes;
/// `RAFKA_RING_NODES=10000 tools/simulate-ring` runs more. A failure prints its seed;
/// `RAFKA_SEED=N` replays it.
@Suite struct RingSimulationTests {
    static let environment = ProcessInfo.processInfo.environment
    static var nodeCounts: [Int] {
        Self.environment["RAFKA_RING_NODES"].map { $0.split(separator: ",").compactMap { Int($0) } } ?? [1000]
    }
    static var seed: UInt64 { Self.environment["RAFKA_SEED"].flatMap(UInt64.init) ?? 1 }

    /// Joins, controlled leaves and crashes (5%, 2% and 3% of the ring, interleaved with
    /// stabilization) over a network losing 1% of messages with 1–2 ticks of delay; once the
    /// network is clean again and the ring settles, every lookup finds the right owner, in at most
    /// ½·log2 N + 1 hops on average (Chord §4.2 and §5). Run twice: by the protocol alone, and
    /// with every node seeded from the membership each second as data nodes are.
    @Test(arguments: Self.nodeCounts, [false, true])
    func lookupsAreRightAfterChurn(nodes: Int, reseeding: Bool) async {
        let seed = Self.seed
        let outcome = await onOwnThread { () -> String? in
            var options = SimChordRing.Options()
            options.nodes = nodes
            options.tokensPerNode = Limits.ringTokensPerNodeDefault
            // Churn under a lossy, jittery network: false suspicions of live nodes happen.
            options.messageLoss = 0.01
            options.delayTicks = 1...2  // round trips stay under the 6-tick request timeout
            options.reseedTicks = reseeding ? 10 : nil
            var ring = SimChordRing(seed: seed, options: options)
            var random = SeededRandom(seed: seed)
            for round in 0..<max(nodes / 10, 10) {
                switch round % 10 {
                case 0, 3, 5, 7, 9: ring.join()
                case 2, 6: ring.leave(ring.randomRunningMember())
                case 1, 4, 8: ring.crash(ring.randomRunningMember())
                default: break
                }
                ring.run(ticks: Int(random.next() % 3))
            }
            ring.options.messageLoss = 0
            ring.options.delayTicks = 1...1
            ring.run(ticks: 60)
            let inconsistent = ring.inconsistentTokens()
            let report = ring.checkLookups(count: 2000)
            let bound = 0.5 * log2(Double(ring.members.count)) + 1
            print(
                "chord simulation, \(nodes) nodes (seed \(seed), \(reseeding ? "seeded every 10 ticks" : "protocol only")): "
                    + "\(ring.members.count) members after churn, "
                    + "\(report.correct)/2000 lookups right, mean hops \(report.meanHops) (bound \(bound)), "
                    + "\(ring.messagesDelivered) messages")
            if !inconsistent.isEmpty {
                return "RAFKA_SEED=\(seed): \(inconsistent.count) tokens with a wrong successor after settling, first "
                    + inconsistent.prefix(5).joined(separator: "; ")
            }
            if report.correct != 2000 { return "RAFKA_SEED=\(seed): \(report.wrong) wrong and \(report.failed) failed lookups" }
            if report.meanHops > bound { return "RAFKA_SEED=\(seed): mean hops \(report.meanHops) over \(bound)" }
            return nil
        }
        #expect(outcome == nil, "\(outcome ?? "")")
    }

    /// The placement table: partition load spread for V = 1, 8, 32, 128 tokens per node, with
    /// random tokens (plain consistent hashing) and with the controllers' allocation; and what a
    /// join moves. The goals: max/mean ≤ 1.3 at the default V, ≤ 1.2/N moved per join.
    @Test(arguments: Self.nodeCounts)
    func placementTable(nodes: Int) async {
        let problems = await onOwnThread { () -> [String] in
            let keys = RingStatistics.partitionKeys(count: nodes * 300, seed: 11)
            var lines = ["placement over \(nodes) nodes, \(keys.count) partitions (load is partitions per node over the mean):"]
            var problems: [String] = []
            for tokens in Set([1, 8, 32, 128, Limits.ringTokensPerNodeDefault]).sorted() {
                for allocated in [false, true] {
                    let ring = RingStatistics.ring(nodes: nodes, tokensPerNode: tokens, allocated: allocated)
                    let leaders = RingStatistics.load(of: ring, keys: keys, replicationFactor: 1)
                    let replicas = RingStatistics.load(of: ring, keys: keys, replicationFactor: 3)
                    lines.append(
                        "  V=\(tokens) \(allocated ? "allocated" : "random   ")  leaders \(leaders)   replicas (RF 3) \(replicas)")
                    if allocated && tokens == Limits.ringTokensPerNodeDefault && max(leaders.maxOverMean, replicas.maxOverMean) > 1.3 {
                        problems.append("default V=\(tokens): load over 1.3× (\(leaders); \(replicas))")
                    }
                }
            }
            let before = RingStatistics.ring(nodes: nodes, tokensPerNode: Limits.ringTokensPerNodeDefault, allocated: true)
            let after = RingStatistics.ring(nodes: nodes + 1, tokensPerNode: Limits.ringTokensPerNodeDefault, allocated: true)
            let moved = RingStatistics.movement(from: before, to: after, keys: keys, replicationFactor: 3)
            lines.append(
                "  a join at V=\(Limits.ringTokensPerNodeDefault) moves \(moved.leaders * Double(nodes))/N of leaders and "
                    + "\(moved.replicas * Double(nodes))/N of replicas (goal ≤ 1.2/N)")
            if moved.leaders > 1.2 / Double(nodes) || moved.replicas > 1.2 / Double(nodes) {
                problems.append("a join moved too much: \(moved)")
            }
            print(lines.joined(separator: "\n"))
            return problems
        }
        #expect(problems.isEmpty, "\(problems)")
    }
}
