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

    @Test(arguments: [3, 5])
    func chaosRunsKeepRaftsSafetyProperties(nodes: Int) {
        var options = SimRaftCluster.Options()
        options.nodes = nodes
        var failures: [String] = []
        var completed = 0
        var leaderTerms = 0
        for seed in Self.seeds {
            let result = SimRaftCluster.chaosRun(seed: seed, options: options)
            completed += result.completedOperations
            leaderTerms += result.leaderTerms
            if !result.problems.isEmpty {
                failures.append("RAFKA_SEED=\(seed) (\(nodes) nodes): \(result.problems.joined(separator: " | "))")
                if failures.count >= 5 { break }
            }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        // The runs did real work: clients were served and leadership changed hands.
        #expect(completed >= Self.seeds.count * 5, "only \(completed) operations completed")
        #expect(leaderTerms >= Self.seeds.count * 2, "only \(leaderTerms) terms had leaders")
        print("raft simulation, \(nodes) nodes: \(Self.seeds.count) seeds, \(completed) client operations completed, \(leaderTerms) led terms")
    }
}
