import RafkaCore
import RaftCore

extension SimRaftCluster {
    /// Takes the node's Ready and starts its fsync; messages wait for the sync to complete.
    mutating func processReady(_ id: NodeID) {
        guard var core = self.nodes[id]!.core else { return }
        self.checkLeadership(id, core)
        guard core.hasReady else { return }
        let ready = core.ready()
        self.nodes[id]!.core = core
        if core.commitIndex < self.nodes[id]!.lastCommit {
            self.violation("node \(id) commit index went back from \(self.nodes[id]!.lastCommit) to \(core.commitIndex)")
        }
        self.nodes[id]!.lastCommit = core.commitIndex
        let delay = Int.random(in: self.options.syncTicks, using: &self.random)
        self.nodes[id]!.pending.append(PendingSync(completesAt: self.now + delay, ready: ready))
        if delay == 0 { self.completeSyncs(id) }
    }

    /// Finishes every fsync that is due, in order: persist, send, apply, report back.
    mutating func completeSyncs(_ id: NodeID) {
        while let first = self.nodes[id]!.pending.first, first.completesAt <= self.now, self.nodes[id]!.core != nil {
            self.nodes[id]!.pending.removeFirst()
            self.finish(id, first.ready)
        }
    }

    private mutating func finish(_ id: NodeID, _ ready: RaftReady) {
        self.persist(id, ready)
        for message in ready.messages {
            self.network.send(message, from: id, to: message.to, now: self.now, random: &self.random)
        }
        if let snapshot = ready.snapshot { self.nodes[id]!.store = Self.decodeStore(snapshot.data) }
        for entry in ready.committed { self.apply(id, entry) }
        if let change = ready.leaderChange, change != id {
            // No longer the leader: reads not yet confirmed will never be.
            self.nodes[id]!.reads = [:]
        }
        for state in ready.readStates {
            if let read = self.nodes[id]!.reads.removeValue(forKey: state.requestID) {
                self.nodes[id]!.confirmedReads.append((state.index, read.history, read.key))
            }
        }
        var core = self.nodes[id]!.core!
        if let snapshot = ready.snapshot { core.persisted(through: snapshot.index, term: snapshot.term) }
        if let last = ready.entries.last { core.persisted(through: last.index, term: last.term) }
        if let last = ready.committed.last {
            core.applied(through: last.index)
        } else if let snapshot = ready.snapshot {
            core.applied(through: snapshot.index)
        }
        self.nodes[id]!.core = core
        self.serveConfirmedReads(id)
        self.maybeCompact(id)
    }

    private mutating func persist(_ id: NodeID, _ ready: RaftReady) {
        var disk = self.nodes[id]!.disk
        if let snapshot = ready.snapshot {
            disk.snapshot = snapshot
            disk.entries.removeAll { $0.index <= snapshot.index }
        }
        if let first = ready.entries.first {
            disk.entries.removeAll { $0.index >= first.index }
            for entry in ready.entries {
                let previousTerm = disk.entries.last?.term ?? (disk.snapshot.map { $0.index == entry.index - 1 ? $0.term : nil } ?? nil)
                self.checkLogMatching(entry, previousTerm: previousTerm ?? (entry.index.rawValue == 1 ? .zero : nil))
                disk.entries.append(entry)
            }
        }
        if let hardState = ready.hardState { disk.hardState = hardState }
        self.nodes[id]!.disk = disk
    }

    private mutating func apply(_ id: NodeID, _ entry: RaftEntry) {
        if let earlier = self.applied[entry.index] {
            if earlier != entry { self.violation("state machine safety: index \(entry.index) applied as two entries") }
        } else {
            self.applied[entry.index] = entry
        }
        if self.committed[entry.index] == nil { self.committed[entry.index] = entry }
        guard case .command(let bytes) = entry.payload, let (requestID, key, value) = Self.decode(bytes) else { return }
        self.nodes[id]!.store[key] = value
        if let position = self.nodes[id]!.writes.removeValue(forKey: requestID) {
            self.history[position].completedAt = self.now
        }
    }

    private mutating func serveConfirmedReads(_ id: NodeID) {
        guard let applied = self.nodes[id]!.core?.appliedIndex else { return }
        var remaining: [(index: LogIndex, history: Int, key: String)] = []
        for read in self.nodes[id]!.confirmedReads {
            if read.index <= applied {
                self.history[read.history].kind = .read(self.nodes[id]!.store[read.key])
                self.history[read.history].completedAt = self.now
            } else {
                remaining.append(read)
            }
        }
        self.nodes[id]!.confirmedReads = remaining
    }

    private mutating func maybeCompact(_ id: NodeID) {
        guard var core = self.nodes[id]!.core else { return }
        let applied = core.appliedIndex
        guard applied.rawValue >= core.snapshotIndex.rawValue + UInt64(self.options.snapshotEvery) else { return }
        core.compact(through: applied, data: Self.encodeStore(self.nodes[id]!.store))
        self.nodes[id]!.core = core
        self.nodes[id]!.disk.snapshot = core.latestSnapshot
        self.nodes[id]!.disk.entries.removeAll { $0.index <= applied }
    }

    // MARK: Safety checks

    /// §5.2 election safety, and §5.4 leader completeness when a node first leads a term.
    private mutating func checkLeadership(_ id: NodeID, _ core: RaftStateMachine) {
        guard core.isLeader else { return }
        if let existing = self.leaders[core.term] {
            if existing != id { self.violation("election safety: \(existing) and \(id) both lead term \(core.term)") }
            return
        }
        self.leaders[core.term] = id
        for (index, entry) in self.committed where index > core.snapshotIndex {
            if core.entry(at: index) != entry {
                self.violation("leader completeness: leader \(id) of term \(core.term) lacks committed entry \(index)")
                return
            }
        }
    }

    /// §5.3 log matching: entries with the same index and term have identical prefixes. Each
    /// (index, term) gets a hash of its whole prefix; two different prefixes are a violation.
    private mutating func checkLogMatching(_ entry: RaftEntry, previousTerm: Term?) {
        var previousHash: UInt64 = 0
        if entry.index.rawValue > 1 {
            guard let previousTerm, let known = self.chainHashes[entry.index - 1]?[previousTerm] else { return }
            previousHash = known
        }
        var hasher = Hasher()
        hasher.combine(previousHash)
        hasher.combine(entry)
        let hash = UInt64(bitPattern: Int64(hasher.finalize()))
        if let known = self.chainHashes[entry.index]?[entry.term], known != hash {
            self.violation("log matching: two different logs end at index \(entry.index) term \(entry.term)")
        }
        self.chainHashes[entry.index, default: [:]][entry.term] = hash
    }

    mutating func violation(_ text: String) {
        if self.violations.count < 10 { self.violations.append("tick \(self.now): \(text)") }
    }

    // MARK: Encoding

    static func encode(_ requestID: UInt64, _ key: String, _ value: String) -> [UInt8] {
        Array("\(requestID)\u{1}\(key)\u{1}\(value)".utf8)
    }

    static func decode(_ bytes: [UInt8]) -> (UInt64, String, String)? {
        let parts = String(decoding: bytes, as: UTF8.self).split(separator: "\u{1}", omittingEmptySubsequences: false)
        guard parts.count == 3, let id = UInt64(parts[0]) else { return nil }
        return (id, String(parts[1]), String(parts[2]))
    }

    static func encodeStore(_ store: [String: String]) -> [UInt8] {
        Array(store.keys.sorted().map { "\($0)\u{1}\(store[$0]!)" }.joined(separator: "\u{2}").utf8)
    }

    static func decodeStore(_ bytes: [UInt8]) -> [String: String] {
        var store: [String: String] = [:]
        for pair in String(decoding: bytes, as: UTF8.self).split(separator: "\u{2}") {
            let parts = pair.split(separator: "\u{1}", omittingEmptySubsequences: false)
            if parts.count == 2 { store[String(parts[0])] = String(parts[1]) }
        }
        return store
    }
}
