import RafkaCore
import RaftCore

extension SimRaftCluster {
    /// One randomized run: clients write and read through random nodes while nodes crash and
    /// restart, the network partitions and heals, leadership moves and snapshots are taken. At
    /// the end the faults stop and the cluster must converge. Returns every problem found:
    /// safety violations (checked each step), a non-linearizable history, or no convergence.
    public static func chaosRun(seed: UInt64, ticks: Int = 1500, options: Options = Options()) -> ChaosResult {
        var cluster = SimRaftCluster(seed: seed, options: options)
        let keys = ["a", "b", "c"]
        var value = 0
        var operationsPerKey: [String: Int] = [:]
        for _ in 0..<ticks {
            cluster.step()
            let roll = Int.random(in: 0..<1000, using: &cluster.random)
            let node = cluster.ids.randomElement(using: &cluster.random)!
            let key = keys.randomElement(using: &cluster.random)!
            // The checker searches at most 64 operations per key.
            let room = operationsPerKey[key, default: 0] < 60
            switch roll {
            case 0..<60 where room:
                value += 1
                if cluster.write(key, "v\(value)", via: node) { operationsPerKey[key, default: 0] += 1 }
            case 60..<100 where room:
                if cluster.read(key, via: node) { operationsPerKey[key, default: 0] += 1 }
            case 100..<104:
                cluster.crash(node)
            case 104..<112:
                cluster.restart(node)
            case 112..<115:
                let shuffled = cluster.ids.shuffled(using: &cluster.random)
                let cut = Int.random(in: 1..<shuffled.count, using: &cluster.random)
                cluster.network.partition([Array(shuffled[..<cut]), Array(shuffled[cut...])])
            case 115..<121:
                cluster.network.heal()
            case 121..<123:
                if let leader = cluster.leadersNow.first {
                    _ = cluster.transferLeadership(from: leader, to: node)
                }
            default:
                break
            }
            if !cluster.violations.isEmpty { break }
        }
        let problems = cluster.settle()
        return ChaosResult(
            problems: problems, operations: cluster.history.count,
            completedOperations: cluster.history.filter { $0.completedAt != nil }.count,
            committedIndex: cluster.committedIndex, leaderTerms: cluster.leaders.count)
    }

    /// Stops all faults, restarts everyone and runs until every node has applied the same
    /// committed log; then checks the history. Returns the problems found.
    mutating func settle() -> [String] {
        self.network.heal()
        self.network.faults = .init(delayTicks: 1...1)
        for id in self.ids { self.restart(id) }
        var converged = false
        for _ in 0..<(40 * self.options.raft.electionTicks) {
            self.step()
            if self.isConverged() {
                converged = true
                break
            }
        }
        var problems = self.violations
        if !converged {
            let states = self.ids.map { "\($0): \(self.core($0)!.role) term \(self.core($0)!.term) commit \(self.core($0)!.commitIndex) applied \(self.core($0)!.appliedIndex) last \(self.core($0)!.lastIndex)" }
            problems.append("did not converge after faults stopped: \(states.joined(separator: "; "))")
        }
        if let key = self.linearizabilityViolation {
            problems.append("history of key \(key) is not linearizable")
        }
        return problems
    }

    /// One leader, and every node applied everything the leader committed, with equal stores.
    func isConverged() -> Bool {
        let leaders = self.leadersNow
        guard leaders.count == 1, let leader = self.core(leaders[0]) else { return false }
        guard leader.commitIndex == leader.lastIndex else { return false }
        let store = self.store(leaders[0])
        for id in self.ids where leader.configuration.contains(id) {
            guard let core = self.core(id), core.appliedIndex == leader.commitIndex, self.store(id) == store else { return false }
        }
        return true
    }
}

/// What one chaos run found and did (the counts show a run was not vacuous).
public struct ChaosResult: Sendable {
    public var problems: [String]
    public var operations: Int
    public var completedOperations: Int
    public var committedIndex: LogIndex
    /// Terms that had a leader.
    public var leaderTerms: Int
}
