import KafkaProtocol
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RafkaCore
import RafkaStorage
import RaftCore

/// Sends Raft messages to the other voters (nothing to send for a single voter).
protocol RaftTransport: Sendable {
    func send(_ messages: [RaftMessage])
}

/// The transport of a quorum of one.
struct NoPeersTransport: RaftTransport {
    func send(_ messages: [RaftMessage]) {
        precondition(messages.isEmpty, "a single voter has no one to send to")
    }
}

/// Runs the metadata quorum's `RaftStateMachine` against disk (`RaftLogStore`), a transport and
/// a clock, and applies committed entries to the metadata image.
///
/// Isolation: an actor; one `process()` loop at a time does each Ready in order — persist and
/// fsync (on the thread pool), then send, then apply — so no vote or acknowledgement leaves
/// before it is durable. Events arriving during an fsync feed the core and are picked up by the
/// next turn of the loop. The tick loop runs in `run()`, under the owning service.
actor RaftShell {
    struct Options: Sendable {
        var tickMilliseconds: Int64 = 50
        var raft = RaftOptions()
        /// Compact the log into a SQLite snapshot after this many applied entries.
        var snapshotEveryEntries: UInt64 = 1000
    }

    let id: NodeID
    private var core: RaftStateMachine
    private let store: RaftLogStore
    private let transport: any RaftTransport
    private let threadPool: NIOThreadPool
    private let logger: Logger
    let options: Options
    private let scratchDirectory: String
    private(set) var image: MetadataImage
    /// Called after each applied batch with the new image, in log order.
    private let onApply: @Sendable (MetadataImage) -> Void
    /// Accepted proposals by log index, until their entry is applied (or leadership moves) and
    /// the outcome is collected.
    private var proposals: [LogIndex: ProposalState] = [:]
    private var readRequests: [UInt64: CheckedContinuation<LogIndex, any Error>] = [:]
    private var appliedWaiters: [(index: LogIndex, continuation: CheckedContinuation<MetadataImage, any Error>)] = []
    /// Data nodes' metadata long polls (`waitCommitted`), by id: each until an entry after its
    /// offset commits here, its time is up, or the member stops.
    private var commitWaiters: [UInt64: (after: LogIndex, continuation: CheckedContinuation<Void, Never>, timer: Task<Void, Never>)] = [:]
    private var nextCommitWaiterID: UInt64 = 1
    private var nextReadID: UInt64 = 1
    private var processing = false
    private var snapshotting = false
    /// The log store is used from the thread pool by the Raft loop and by snapshots.
    private let storeLock = NIOLock()
    private var savedHardState: HardState
    private var failure: StorageError?
    /// Set once the clock stopped (shutdown): nothing would ever commit or apply again.
    private var stopped = false

    /// Opens the quorum member's storage in `directory` and rebuilds its state.
    init(
        id: NodeID,
        directory: String,
        initialVoters: [NodeID],
        transport: any RaftTransport,
        threadPool: NIOThreadPool,
        options: Options = Options(),
        logger: Logger,
        onApply: @escaping @Sendable (MetadataImage) -> Void
    ) throws {
        let store = try RaftLogStore(directory: directory)
        let loaded = try store.load()
        if loaded.truncatedBytes > 0 {
            logger.warning("truncated a torn tail of the metadata log", metadata: ["bytes": "\(loaded.truncatedBytes)"])
        }
        self.id = id
        self.store = store
        self.transport = transport
        self.threadPool = threadPool
        self.options = options
        self.logger = logger
        self.onApply = onApply
        self.scratchDirectory = directory
        self.savedHardState = loaded.hardState
        var seed = SystemRandomNumberGenerator()
        self.core = RaftStateMachine(
            id: id, options: options.raft, hardState: loaded.hardState, snapshot: loaded.snapshot, entries: loaded.entries,
            initialConfiguration: RaftConfiguration(voters: initialVoters), seed: seed.next())
        if let snapshot = loaded.snapshot {
            self.image = try MetadataSnapshotCodec.decode(snapshot.data, scratchDirectory: directory)
        } else {
            self.image = MetadataImage(clusterID: "")
        }
        self.image.controllers = self.core.configuration.voters
        if self.core.configuration.voters == [id] { self.core.campaignNow() }
    }

    // MARK: Clock

    /// Ticks the core until cancelled. When it stops, every proposal, read and wait still
    /// pending fails (a standalone node's registration may be one, when it stops at once).
    func run() async throws {
        do {
            await self.process()
            while !Task.isCancelled {
                try await Task.sleep(for: .milliseconds(self.options.tickMilliseconds))
                self.core.tick()
                await self.process()
                if let failure = self.failure { throw failure }
            }
        } catch {
            self.stop()
            throw error
        }
        self.stop()
    }

    private func stop() {
        self.stopped = true
        self.failEverything(Self.shuttingDown)
    }

    private static let shuttingDown = BrokerError(.notController, "the metadata quorum member is shutting down")

    private func ensureRunning() throws(BrokerError) {
        if self.stopped { throw Self.shuttingDown }
    }

    // MARK: Inbound

    func step(_ message: RaftMessage) async {
        self.core.step(message)
        await self.process()
    }

    /// A change accepted into the leader's log; `outcome(of:)` says whether it was applied.
    struct Proposal: Sendable, Hashable {
        let index: LogIndex
        let term: Term
    }

    private enum ProposalState {
        case submitted(Term)
        case waiting(Term, CheckedContinuation<MetadataImage, any Error>)
        case finished(Result<MetadataImage, BrokerError>)

        var term: Term? {
            switch self {
            case .submitted(let term), .waiting(let term, _): term
            case .finished: nil
            }
        }
    }

    /// Proposes `change`; returns the image once it is applied here.
    func propose(_ change: MetadataChange) async throws -> MetadataImage {
        try await self.outcome(of: self.submit(change))
    }

    /// Appends `change` to the leader's log without waiting: proposals submitted back to back
    /// share one append and one fsync. Collect the outcome with `outcome(of:)`, once.
    func submit(_ change: MetadataChange) throws(BrokerError) -> Proposal {
        try self.ensureRunning()
        return try self.accepted(self.core.propose(change.encoded()))
    }

    /// Adds or removes one voter (Raft §6); returns once the new configuration is applied here.
    func changeConfiguration(_ change: ConfigurationChange) async throws -> MetadataImage {
        try self.ensureRunning()
        return try await self.outcome(of: self.accepted(self.core.proposeConfigurationChange(change)))
    }

    private func accepted(_ result: ProposalResult) throws(BrokerError) -> Proposal {
        guard case .accepted(let index) = result else { throw Self.error(result) }
        let proposal = Proposal(index: index, term: self.core.term)
        self.proposals[index] = .submitted(proposal.term)
        Task { await self.process() }  // Drives the Ready this proposal made; bounded by it.
        return proposal
    }

    /// The image once `proposal` is applied here; NOT_CONTROLLER when leadership moved first
    /// (the change may still commit under the new leader: callers retry idempotently).
    func outcome(of proposal: Proposal) async throws -> MetadataImage {
        switch self.proposals[proposal.index] {
        case .finished(let result):
            self.proposals[proposal.index] = nil
            return try result.get()
        case .submitted(let term):
            return try await withCheckedThrowingContinuation { continuation in
                self.proposals[proposal.index] = .waiting(term, continuation)
            }
        case .waiting, nil:
            throw BrokerError(.unknownServerError, "the outcome of proposal \(proposal.index) was already collected")
        }
    }

    private func finish(_ index: LogIndex, _ result: Result<MetadataImage, BrokerError>) {
        switch self.proposals[index] {
        case .waiting(_, let continuation):
            self.proposals[index] = nil
            continuation.resume(with: result.mapError { $0 as any Error })
        case .submitted:
            self.proposals[index] = .finished(result)
        case .finished, nil:
            break
        }
    }

    /// A linearizable read of the image (Raft thesis §6.4).
    func linearizableRead() async throws -> MetadataImage {
        try self.ensureRunning()
        let requestID = self.nextReadID
        self.nextReadID += 1
        let result = self.core.readIndex(requestID: requestID)
        guard case .accepted = result else { throw Self.error(result) }
        let index = try await withCheckedThrowingContinuation { continuation in
            self.readRequests[requestID] = continuation
            Task { await self.process() }  // Drives the heartbeat round of this read.
        }
        return try await self.waitApplied(index)
    }

    private func waitApplied(_ index: LogIndex) async throws -> MetadataImage {
        if self.core.appliedIndex >= index { return self.image }
        try self.ensureRunning()
        return try await withCheckedThrowingContinuation { continuation in
            self.appliedWaiters.append((index, continuation))
        }
    }

    private static func error(_ result: ProposalResult) -> BrokerError {
        switch result {
        case .notLeader: BrokerError(.notController, "this node is not the active controller")
        case .transferring: BrokerError(.notController, "controller leadership is moving")
        case .configurationChangeInProgress: BrokerError(.reassignmentInProgress, "a controller change is in progress")
        case .unchanged: BrokerError(.invalidRequest, "nothing to change")
        case .accepted: BrokerError(.unknownServerError)
        }
    }

    var isLeader: Bool { self.core.isLeader }

    /// Returns once an entry after `offset` is committed here (true), or after `limit` or when
    /// this member stops (whether one is by then): a data node's long poll of the metadata log.
    func waitCommitted(after offset: LogIndex, limit: Duration) async -> Bool {
        guard self.core.commitIndex <= offset, !self.stopped, limit > .zero else { return self.core.commitIndex > offset }
        let id = self.nextCommitWaiterID
        self.nextCommitWaiterID += 1
        await withCheckedContinuation { continuation in
            // The waiter's own clock, unstructured because it outlives this call only until the
            // waiter is resumed, which cancels it.
            let timer = Task {
                try? await Task.sleep(for: limit)
                self.resumeCommitWaiter(id)
            }
            self.commitWaiters[id] = (offset, continuation, timer)
        }
        return self.core.commitIndex > offset
    }

    private func resumeCommitWaiter(_ id: UInt64) {
        guard let waiter = self.commitWaiters.removeValue(forKey: id) else { return }
        waiter.timer.cancel()
        waiter.continuation.resume()
    }

    private func releaseCommitWaiters(all: Bool = false) {
        let commit = self.core.commitIndex
        for (id, waiter) in self.commitWaiters where all || waiter.after < commit { self.resumeCommitWaiter(id) }
    }

    /// Committed entries after `offset` (at most `limit`), or the snapshot and the entries after
    /// it when `offset` was compacted away: what a data node following the log needs next.
    func committed(after offset: LogIndex, limit: Int) -> (commit: LogIndex, snapshot: RaftSnapshot?, entries: [RaftEntry]) {
        let commit = self.core.commitIndex
        var start = offset
        var snapshot: RaftSnapshot?
        if offset < self.core.snapshotIndex {
            snapshot = self.core.latestSnapshot
            start = self.core.snapshotIndex
        }
        var entries: [RaftEntry] = []
        var index = start + 1
        while index <= commit && entries.count < limit, let entry = self.core.entry(at: index) {
            entries.append(entry)
            index = index + 1
        }
        return (commit, snapshot, entries)
    }
    var leader: NodeID? { self.core.leader }
}

extension RaftShell {
    // MARK: Ready

    /// Does every Ready in order. Re-entrant calls while a loop runs return at once: the
    /// running loop sees their effects.
    func process() async {
        guard !self.processing else { return }
        self.processing = true
        defer { self.processing = false }
        while self.core.hasReady && self.failure == nil {
            let ready = self.core.ready()
            do {
                try await self.persist(ready)
            } catch {
                // The log cannot be trusted to be durable: stop, as etcd does, rather than vote
                // or acknowledge on state that may be gone. Cancelled is the process stopping.
                if error is CancellationError {
                    self.logger.info("metadata log write cancelled: stopping")
                } else {
                    self.logger.critical("metadata log write failed; stopping: \(error)")
                }
                self.failure = error as? StorageError ?? StorageError(.io, "\(error)")
                self.failEverything(BrokerError(.kafkaStorageError, "metadata log write failed"))
                return
            }
            self.transport.send(ready.messages)
            self.apply(ready)
            if let snapshot = ready.snapshot { self.core.persisted(through: snapshot.index, term: snapshot.term) }
            if let last = ready.entries.last { self.core.persisted(through: last.index, term: last.term) }
            if let last = ready.committed.last {
                self.core.applied(through: last.index)
            } else if let snapshot = ready.snapshot {
                self.core.applied(through: snapshot.index)
            }
            self.releaseAppliedWaiters()
            self.releaseCommitWaiters()
            self.maybeCompact()
        }
    }

    private func persist(_ ready: RaftReady) async throws {
        let store = self.store
        let hardState = ready.hardState.flatMap { next -> HardState? in
            // Term and vote must be durable before any message; the commit index need not be
            // (it is recomputed), so it is saved only now and then.
            let commitLag = next.commit.rawValue &- self.savedHardState.commit.rawValue
            let due = next.term != self.savedHardState.term || next.vote != self.savedHardState.vote || commitLag >= 1000
            return due ? next : nil
        }
        if let hardState { self.savedHardState = hardState }
        guard ready.snapshot != nil || !ready.entries.isEmpty || hardState != nil else { return }
        let storeLock = self.storeLock
        try await self.threadPool.runIfActive {
            try storeLock.withLock {
                if let snapshot = ready.snapshot { try store.save(snapshot: snapshot) }
                try store.append(ready.entries)
                if !ready.entries.isEmpty { try store.sync() }
                if let hardState { try store.save(hardState: hardState) }
            }
        }
    }

    private func apply(_ ready: RaftReady) {
        if let snapshot = ready.snapshot {
            do {
                self.image = try MetadataSnapshotCodec.decode(snapshot.data, scratchDirectory: self.scratchDirectory)
            } catch {
                self.logger.critical("cannot read the metadata snapshot at \(snapshot.index): \(error)")
                self.failure = error
                return
            }
        }
        for entry in ready.committed { self.apply(entry) }
        for state in ready.readStates {
            self.readRequests.removeValue(forKey: state.requestID)?.resume(returning: state.index)
        }
        if case .some(let leader) = ready.leaderChange {
            self.logger.info(
                "metadata quorum leader changed",
                metadata: ["leader": "\(leader.map { "\($0)" } ?? "none")", "term": "\(self.core.term)"])
        }
        if case .some(let leader) = ready.leaderChange, leader != self.id {
            // Proposals not yet applied may still commit under the new leader; their callers
            // must treat them as unknown and retry idempotently.
            self.failPending(BrokerError(.notController, "controller leadership moved"))
        }
        if ready.snapshot != nil || !ready.committed.isEmpty { self.onApply(self.image) }
    }

    private func apply(_ entry: RaftEntry) {
        if let error = self.image.apply(entry) {
            // Every voter applies the same log: skipping here is what every voter does.
            self.logger.error("skipping an unreadable metadata entry at \(entry.index): \(error)")
        }
        if case .noop = entry.payload, self.core.isLeader {
            if self.image.clusterID.isEmpty {
                // A new cluster's first leader names it.
                _ = self.core.propose(MetadataChange.bootstrap(clusterID: KafkaUUID.random().description).encoded())
            }
            if self.image.leaderEpochs == nil {
                // Per-partition leader epochs start here (a new cluster, or one begun by an older
                // version); a second such entry, from a leader that did not see the first, does nothing.
                _ = self.core.propose(MetadataChange.trackLeaderEpochs.encoded())
            }
        }
        if let proposedTerm = self.proposals[entry.index]?.term {
            // An entry of another term at the proposal's index replaced it.
            self.finish(
                entry.index,
                proposedTerm == entry.term ? .success(self.image) : .failure(BrokerError(.notController, "the proposal was replaced by a new leader")))
        }
    }

    private func releaseAppliedWaiters() {
        let applied = self.core.appliedIndex
        var remaining: [(index: LogIndex, continuation: CheckedContinuation<MetadataImage, any Error>)] = []
        for waiter in self.appliedWaiters {
            if waiter.index <= applied { waiter.continuation.resume(returning: self.image) } else { remaining.append(waiter) }
        }
        self.appliedWaiters = remaining
    }

    /// Starts a snapshot when enough entries were applied since the last. The SQLite encoding
    /// runs on the thread pool from a copy of the image (cheap: the image shares its structure),
    /// so the Raft loop keeps sending heartbeats and committing meanwhile.
    private func maybeCompact() {
        let applied = self.core.appliedIndex
        guard !self.snapshotting, applied.rawValue >= self.core.snapshotIndex.rawValue + self.options.snapshotEveryEntries else {
            return
        }
        self.snapshotting = true
        let image = self.image
        let scratchDirectory = self.scratchDirectory
        let threadPool = self.threadPool
        Task {
            do {
                let data = try await threadPool.runIfActive {
                    try MetadataSnapshotCodec.encode(image, scratchDirectory: scratchDirectory)
                }
                try await self.compact(through: applied, data: data)
            } catch {
                self.logger.error("snapshot failed (the log keeps growing until one succeeds): \(error)")
            }
            self.snapshotting = false
        }
    }

    private func compact(through index: LogIndex, data: [UInt8]) async throws {
        // A snapshot installed from the leader meanwhile may already cover `index`.
        guard index > self.core.snapshotIndex else { return }
        self.core.compact(through: index, data: data)
        let snapshot = self.core.latestSnapshot!
        let store = self.store
        let storeLock = self.storeLock
        try await self.threadPool.runIfActive { try storeLock.withLock { try store.save(snapshot: snapshot) } }
        self.logger.info("compacted the metadata log into a snapshot", metadata: ["index": "\(index)", "bytes": "\(data.count)"])
    }

    private func failPending(_ error: BrokerError) {
        for index in Array(self.proposals.keys) { self.finish(index, .failure(error)) }
        for continuation in self.readRequests.values { continuation.resume(throwing: error) }
        self.readRequests = [:]
    }

    private func failEverything(_ error: BrokerError) {
        self.failPending(error)
        for waiter in self.appliedWaiters { waiter.continuation.resume(throwing: error) }
        self.appliedWaiters = []
        self.releaseCommitWaiters(all: true)
    }

    /// Saves the latest hard state (so a restart re-applies less) and syncs the log.
    func close() {
        do {
            let (store, hardState) = (self.store, self.core.hardState)
            try self.storeLock.withLock {
                try store.save(hardState: hardState)
                try store.sync()
            }
        } catch {
            self.logger.error("saving the metadata log state at shutdown failed: \(error)")
        }
    }

    /// Quorum state for `cluster describe`.
    func status() -> QuorumStatus {
        QuorumStatus(
            leader: self.core.leader, term: self.core.term, commitIndex: self.core.commitIndex,
            lastIndex: self.core.lastIndex, voters: self.core.configuration.voters,
            matchIndexes: self.core.followerMatchIndexes ?? [:])
    }

    /// Waits until this member leads and has applied everything in its log at start (so the
    /// image is complete), up to `timeout`.
    func waitUntilCaughtUp() async throws -> MetadataImage {
        let target = self.core.lastIndex
        for _ in 0..<200 {
            await self.process()
            if self.core.appliedIndex >= target && self.core.leader != nil && !self.image.clusterID.isEmpty {
                return self.image
            }
            try await Task.sleep(for: .milliseconds(self.options.tickMilliseconds))
            self.core.tick()
        }
        throw BrokerError(.notController, "the metadata quorum did not elect a leader")
    }
}

/// What a controller knows of its quorum.
struct QuorumStatus: Sendable {
    var leader: NodeID?
    var term: Term
    var commitIndex: LogIndex
    var lastIndex: LogIndex
    var voters: [NodeID]
    var matchIndexes: [NodeID: LogIndex]
}
