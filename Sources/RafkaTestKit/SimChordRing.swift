import ChordCore
import RafkaCore

/// A deterministic simulation of many data nodes running `ChordStateMachine`s: a seeded clock
/// and network (delay, loss), joins, controlled leaves and crashes, and a controller that
/// fences a crashed node once a neighbour suspects it (as the quorum does in production).
///
/// Runs start from a converged ring (every node seeded with the ground truth, as a node is
/// seeded from the metadata image), then churn goes through the protocol. `truth` is the ring
/// the controllers' membership implies; lookups are checked against it.
public struct SimChordRing {
    public struct Options: Sendable {
        public var nodes = 100
        public var tokensPerNode = 16
        public var chord = ChordOptions()
        /// Probability that a message is lost.
        public var messageLoss = 0.0
        /// Ticks a message takes.
        public var delayTicks: ClosedRange<Int> = 1...1
        /// Ticks between a suspicion of a dead node and its fencing being known everywhere
        /// (the quorum committing the record and data nodes applying it).
        public var fenceDelayTicks = 4
        /// Ticks after which the controllers fence a crashed node that nobody suspected, because
        /// its heartbeats stopped (the node session timeout).
        public var sessionTimeoutTicks = 30
        /// Ticks between seedings of every running node from the controllers' membership, as a
        /// data node's `ChordShell` seeds from its metadata image every second (10 ticks); nil
        /// leaves convergence to the protocol alone.
        public var reseedTicks: Int?

        public init() {}
    }

    public struct LookupReport: Sendable {
        public var correct = 0
        public var wrong = 0
        public var failed = 0
        public var hops: [Int] = []

        public var meanHops: Double { self.hops.isEmpty ? 0 : Double(self.hops.reduce(0, +)) / Double(self.hops.count) }
    }

    /// Loss and delay may change between phases (churn under faults, then a clean settle).
    public var options: Options
    public private(set) var machines: [NodeID: ChordStateMachine] = [:]
    /// Nodes whose process runs (a crashed node is in `members` until fenced).
    public private(set) var running: Set<NodeID> = []
    /// Nodes the controllers count as members (registered, not fenced).
    public private(set) var members: Set<NodeID> = []
    public private(set) var now: UInt64 = 0
    public private(set) var messagesDelivered = 0
    var random: SeededRandom
    var inFlight: [UInt64: [ChordMessage]] = [:]
    var fencings: [UInt64: [NodeID]] = [:]
    var nextNodeID: Int32
    var lookupKeys: [NodeID: [UInt64: RingPosition]] = [:]
    var finished: [(node: NodeID, result: LookupResult)] = []

    public init(seed: UInt64, options: Options) {
        self.options = options
        self.random = SeededRandom(seed: seed)
        self.nextNodeID = Int32(options.nodes) + 1
        // Tokens as the controllers assign them, one registration after another.
        var allocator = TokenAllocator(ring: RingMap(tokens: [:]))
        var tokens: [NodeID: [RingPosition]] = [:]
        for raw in 1...Int32(options.nodes) {
            tokens[NodeID(raw)] = allocator.allocate(for: NodeID(raw), count: options.tokensPerNode)
        }
        let view = RingMap(tokens: tokens)
        for (node, positions) in tokens {
            var machine = ChordStateMachine(node: node, tokens: positions, options: options.chord)
            machine.seed(view)
            self.machines[node] = machine
        }
        self.running = Set(tokens.keys)
        self.members = self.running
    }

    /// The ring the controllers' membership implies.
    public var truth: RingMap {
        RingMap(tokens: Dictionary(uniqueKeysWithValues: self.members.map { ($0, self.machines[$0]!.tokens) }))
    }

    // MARK: Churn

    /// Registers a new node and joins it through a random running member.
    @discardableResult
    public mutating func join() -> NodeID {
        let node = NodeID(self.nextNodeID)
        self.nextNodeID += 1
        var allocator = TokenAllocator(ring: self.truth)
        var machine = ChordStateMachine(
            node: node, tokens: allocator.allocate(for: node, count: self.options.tokensPerNode), options: self.options.chord)
        let bootstrap = self.randomRunningMember()
        machine.join(via: bootstrap)
        self.machines[node] = machine
        self.running.insert(node)
        self.members.insert(node)
        self.drain(node)
        return node
    }

    /// A controlled leave: the node tells its neighbours, stops, and the controllers remove it.
    public mutating func leave(_ node: NodeID) {
        self.machines[node]!.leave()
        self.drain(node)
        self.running.remove(node)
        self.members.remove(node)
        self.scheduleFencing(node, after: self.options.fenceDelayTicks)
    }

    /// kill -9: the node stops answering. Its neighbours suspect it; the controllers fence it.
    public mutating func crash(_ node: NodeID) {
        self.running.remove(node)
        self.scheduleFencing(node, after: self.options.sessionTimeoutTicks)
    }

    public mutating func randomRunningMember() -> NodeID {
        let candidates = self.running.intersection(self.members).sorted()
        return candidates[Int(self.random.next() % UInt64(candidates.count))]
    }

    // MARK: Time

    public mutating func run(ticks: Int) {
        for _ in 0..<ticks { self.step() }
    }

    mutating func step() {
        self.now += 1
        if let fenced = self.fencings.removeValue(forKey: self.now) {
            for node in fenced {
                self.members.remove(node)
                for other in self.running.sorted() { self.machines[other]!.fence(node) }
            }
        }
        let reseed = self.options.reseedTicks.map { self.now % UInt64($0) == 0 } ?? false
        let truth = reseed ? self.truth : RingMap(tokens: [:])
        for node in self.running.sorted() {
            self.machines[node]!.tick()
            if reseed && self.members.contains(node) {
                self.machines[node]!.seed(truth)
            } else if self.machines[node]!.needsBootstrap {
                // It lost touch with everyone it knew: the shell seeds it again from the
                // metadata image (the controllers' membership, crashed nodes not yet fenced
                // included), as a production shell does.
                self.machines[node]!.seed(self.truth)
            }
            self.drain(node)
        }
        for message in self.inFlight.removeValue(forKey: self.now) ?? [] where self.running.contains(message.to) {
            self.messagesDelivered += 1
            self.machines[message.to]!.receive(message)
            self.drain(message.to)
        }
    }

    mutating func drain(_ node: NodeID) {
        let ready = self.machines[node]!.ready()
        precondition(self.options.delayTicks.lowerBound >= 1, "a message takes at least a tick")
        for message in ready.messages {
            if self.options.messageLoss > 0, Double(self.random.next() % 1_000_000) / 1_000_000 < self.options.messageLoss { continue }
            let span = UInt64(self.options.delayTicks.upperBound - self.options.delayTicks.lowerBound + 1)
            let delay = UInt64(self.options.delayTicks.lowerBound) + self.random.next() % span
            self.inFlight[self.now + delay, default: []].append(message)
        }
        for suspect in ready.suspected where !self.running.contains(suspect) && self.members.contains(suspect) {
            // The quorum confirms only what is true: a node that still runs stays (its
            // heartbeats to the controllers go on), a dead one is fenced.
            self.scheduleFencing(suspect, after: self.options.fenceDelayTicks)
        }
        for result in ready.lookups { self.finished.append((node, result)) }
    }

    mutating func scheduleFencing(_ node: NodeID, after ticks: Int) {
        let due = self.now + UInt64(ticks)
        if !(self.fencings[due]?.contains(node) ?? false) { self.fencings[due, default: []].append(node) }
    }

    // MARK: Checks

    /// Looks up `count` random keys from random running members and compares every answer with
    /// `truth`, running the ring until all have finished (or `ticksMax` passed).
    public mutating func checkLookups(count: Int, ticksMax: Int = 500) -> LookupReport {
        let truth = self.truth
        self.finished = []
        var expected: [String: RingEntry] = [:]
        for _ in 0..<count {
            let node = self.randomRunningMember()
            let key = RingPosition(self.random.next())
            let id = self.machines[node]!.lookup(key)
            expected["\(node)/\(id)"] = truth.successor(of: key)
            self.drain(node)
        }
        var ticks = 0
        while self.finished.count < count && ticks < ticksMax {
            self.step()
            ticks += 1
        }
        var report = LookupReport()
        for (node, result) in self.finished {
            guard let want = expected["\(node)/\(result.id)"] else { continue }
            if result.owner == nil {
                report.failed += 1
            } else if result.owner == want {
                report.correct += 1
                report.hops.append(result.hops)
            } else {
                report.wrong += 1
            }
        }
        report.failed += count - self.finished.count
        return report
    }

    /// Tokens whose successor disagrees with `truth`, each described as
    /// "node@token → successor (want …)".
    public func inconsistentTokens() -> [String] {
        let truth = self.truth
        var wrong: [String] = []
        for node in self.running.intersection(self.members).sorted() {
            if self.machines[node]!.isJoining { wrong.append("\(node) still joining") }
            for state in self.machines[node]!.view {
                let next = truth.successor(of: state.token.advanced(by: 1))
                guard state.successor != next else { continue }
                let status = self.members.contains(state.successor.node) ? "member" : "gone"
                let theirs = self.machines[next.node]!.view.first { $0.token == next.position }!
                wrong.append("\(node)@\(state.token) → \(state.successor) [\(status)] (want \(next), whose pred \(String(describing: theirs.predecessor)) succ \(theirs.successor) truth succ \(truth.successor(of: next.position.advanced(by: 1))); of that: \(self.machines[theirs.successor.node]!.view.first { $0.token == theirs.successor.position }.map { "pred \(String(describing: $0.predecessor)) succ \($0.successor)" } ?? "-"))")
            }
        }
        return wrong
    }
}
