import Foundation
import RafkaCore
import RafkaTestKit
import RaftCore
import Testing

/// Randomized, deterministic runs of whole Raft groups with crashes, partitions, message loss,
/// duplication and reordering. A failure prints its seed; `RAFKA_SEED=N swift test --filter
/// RaftSimulationTests` replays that seed alone, and `RAFKA_SEEDS=100000 tools/simulate` runs
/// many more than CI does.
@Suite struct RaftSimulationTests {
    static let environment = ProcessInfo.processInfo.environment

    static var seeds: [UInt64] {
        if let seed = Self.environment["RAFKA_SEED"].flatMap(UInt64.init) { return [seed] }
        let count = Self.environment["RAFKA_SEEDS"].flatMap(UInt64.init) ?? 2000
        let first = Self.environment["RAFKA_FIRST_SEED"].flatMap(UInt64.init) ?? 1
        return Array(first..<(first + count))
    }

    struct Summary: Sendable {
        var failures: [String] = []
        var completed = 0
        var leaderTerms = 0
    }

    @Test(arguments: [3, 5])
    func chaosRunsKeepRaftsSafetyProperties(nodes: Int) async {
        let seeds = Self.seeds
        let summary = await onOwnThread { Self.run(seeds: seeds, nodes: nodes) }
        #expect(summary.failures.isEmpty, "\(summary.failures.joined(separator: "\n"))")
        // The runs did real work: clients were served and leadership changed hands.
        #expect(summary.completed >= seeds.count * 5, "only \(summary.completed) operations completed")
        #expect(summary.leaderTerms >= seeds.count * 2, "only \(summary.leaderTerms) terms had leaders")
        print(
            "raft simulation, \(nodes) nodes: \(seeds.count) seeds, \(summary.completed) client operations completed, "
                + "\(summary.leaderTerms) led terms")
    }

    static func run(seeds: [UInt64], nodes: Int) -> Summary {
        var options = SimRaftCluster.Options()
        options.nodes = nodes
        var summary = Summary()
        for seed in seeds {
            let result = SimRaftCluster.chaosRun(seed: seed, options: options)
            summary.completed += result.completedOperations
            summary.leaderTerms += result.leaderTerms
            if !result.problems.isEmpty {
                summary.failures.append("RAFKA_SEED=\(seed) (\(nodes) nodes): \(result.problems.joined(separator: " | "))")
                if summary.failures.count >= 5 { break }
            }
        }
        return summary
    }
}
