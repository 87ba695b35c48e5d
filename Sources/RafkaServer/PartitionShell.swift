import KafkaProtocol
import Logging
import NIOCore
import NIOPosix
import RafkaCore
import RafkaStorage
import Synchronization

/// Runs one `PartitionLog` on the event loop that owns it (Redpanda's shard-per-core model):
/// every append, read and maintenance step of the partition happens on `eventLoop`, so the log
/// needs no lock. Other loops reach it through futures.
///
/// fsyncs (when `flush.messages`/`flush.ms` ask for them, and for rolled segments) run on the
/// thread pool, as does the file work a roll or a flush leaves (indexes, snapshots, the recovery
/// point: `DeferredFileWork`), one batch after another; closing or deleting the log, and
/// retention, wait for it. As in Kafka, an append that reaches `flush.messages` completes after
/// an fsync that covers it, and such appends arriving while one runs share the next (group
/// commit); `flush.ms` fsyncs run beside appends without holding their acknowledgements.
///
/// Fetches need no hop to this loop when the hot cache can answer: after every change of the
/// log the loop publishes its offsets, and a fetch on any loop reads the cached batches below
/// them (`readCached`). Fetch long-polls register a one-shot waiter, without a hop either, that
/// the next change fires.
final class PartitionShell: Sendable {
    let topicPartition: TopicPartition
    let topicID: KafkaUUID
    let eventLoop: any EventLoop
    private let state: NIOLoopBound<State>
    private let threadPool: NIOThreadPool
    /// Writeback and page release (they wait on the device): kept off `threadPool`'s fsyncs.
    private let writebackPool: NIOThreadPool
    private let logger: Logger
    /// Called (on the partition's loop) when the log can no longer be trusted: the owner takes
    /// the partition offline.
    private let onFailure: @Sendable (TopicPartition, String) -> Void
    /// What other loops see without a hop: published by the partition's loop after every change
    /// of the log, before it wakes the waiters (so a woken fetch sees what woke it).
    private let shared: Mutex<Shared>
    private let cachedReader: HotCache.Reader
    /// What stays of the log's end in the OS page cache (`BrokerConfig.pageCacheTailBytes`).
    private let pageCacheTailBytes: Int?

    /// The log's offsets as last published.
    struct Offsets: Sendable {
        var logStart: Int64
        var logEnd: Int64
    }

    private struct Shared {
        /// nil once the log is closed, deleted or taken offline.
        var offsets: Offsets?
        /// Where each leader epoch begins in the log, as `offsets` were published.
        var leaderEpochs = LeaderEpochHistory()
        var waiters: [UInt64: @Sendable () -> Void] = [:]
        var nextWaiterID: UInt64 = 0
    }

    /// Loop-confined state. A class so that the loop-bound wrapper can hand out one reference.
    final class State {
        var log: PartitionLog?
        /// Stamped on appended batches: 0 in standalone; on a data node, the partition's leader
        /// epoch (`PartitionPlacement.leaderEpoch`) since this node took it over.
        var leaderEpoch: Int32 = 0
        /// False once another node leads the partition: appends already on this loop finish,
        /// later ones answer NOT_LEADER_OR_FOLLOWER (so an acknowledged append is always within
        /// the end a new leader is told to copy to).
        var acceptsWrites = true
        var flushInFlight = false
        /// One writeback at a time per partition: while one runs, the range grows and the next
        /// covers it, so the thread pool never queues more than one per partition.
        var writebackInFlight = false
        var flushRequestedAgain = false
        /// The one `flush.ms` timer (`armTimedFlush`), while armed.
        var timedFlush: Scheduled<Void>?
        /// The last batch of deferred file work started, until it completes.
        var fileWork: EventLoopFuture<Void>?
        var flushWaiters: [EventLoopPromise<Void>] = []
        var nextFlushWaiters: [EventLoopPromise<Void>] = []

        init(log: PartitionLog) { self.log = log }
    }

    /// What a read saw: the records and the partition's offsets at that moment.
    struct ReadResult: Sendable {
        /// From the hot cache, or a span of a segment the response sends from the file.
        var records: LogRecords
        var highWatermark: Int64
        var logStartOffset: Int64
        /// The memory `records` take (read into from the device, or the hot cache's batches
        /// they are), given back once the response that carries them is written.
        var reservation: MemoryReservation?
    }

    /// Opens the log (creating or recovering it) on the thread pool, where its file work and any
    /// recovery scan wait for the device without holding up the partitions `eventLoop` serves
    /// (a topic created, or a copy taken over, while the node serves), and returns the shell
    /// running it on `eventLoop`.
    static func open(
        topicPartition: TopicPartition,
        topicID: KafkaUUID,
        directory: String,
        config: LogConfig,
        cache: HotCache,
        pageCacheTailBytes: Int?,
        on eventLoop: any EventLoop,
        threadPool: NIOThreadPool,
        writebackPool: NIOThreadPool,
        logger: Logger,
        onFailure: @escaping @Sendable (TopicPartition, String) -> Void
    ) -> EventLoopFuture<PartitionShell> {
        threadPool.runIfActive(eventLoop: eventLoop) {
            let (log, report) = try PartitionLog.open(
                directory: directory,
                topicPartition: topicPartition,
                config: config,
                cache: cache
            )
            // Handed to the loop: nothing on this thread keeps a reference.
            return Handover((log, report))
        }.map { (opened: Handover<(PartitionLog, PartitionLog.RecoveryReport)>) in
            let (log, report) = opened.take()
            if let reason = report.truncationReason {
                logger.warning(
                    "truncated torn tail of \(topicPartition)",
                    metadata: [
                        "bytes": "\(report.truncatedBytes)", "reason": "\(reason)",
                        "removedSegments": "\(report.removedSegments)",
                    ]
                )
            }
            return PartitionShell(
                topicPartition: topicPartition,
                topicID: topicID,
                log: log,
                pageCacheTailBytes: pageCacheTailBytes,
                eventLoop: eventLoop,
                threadPool: threadPool,
                writebackPool: writebackPool,
                logger: logger,
                onFailure: onFailure
            )
        }
    }

    private init(
        topicPartition: TopicPartition,
        topicID: KafkaUUID,
        log: PartitionLog,
        pageCacheTailBytes: Int?,
        eventLoop: any EventLoop,
        threadPool: NIOThreadPool,
        writebackPool: NIOThreadPool,
        logger: Logger,
        onFailure: @escaping @Sendable (TopicPartition, String) -> Void
    ) {
        self.onFailure = onFailure
        self.topicPartition = topicPartition
        self.topicID = topicID
        self.eventLoop = eventLoop
        self.state = NIOLoopBound(State(log: log), eventLoop: eventLoop)
        self.shared = Mutex(
            Shared(offsets: Offsets(logStart: log.logStartOffset, logEnd: log.logEndOffset), leaderEpochs: log.leaderEpochs))
        self.cachedReader = log.cachedReader
        self.pageCacheTailBytes = pageCacheTailBytes
        self.threadPool = threadPool
        self.writebackPool = writebackPool
        self.logger = logger
    }

    private func withLog<T>(_ body: (PartitionLog, State) throws -> T) throws -> T {
        let state = self.state.value
        guard let log = state.log else {
            throw BrokerError(.unknownTopicOrPartition, "\(self.topicPartition) was deleted")
        }
        return try body(log, state)
    }

    // MARK: Appending

    /// Validates a producer's `records` (`RecordBatchValidator`, whose `Failure` is the failure
    /// `done` gets) and appends them, both on the partition's loop: a connection producing to
    /// partitions on several loops spreads the validation's CPU (decompression, CRCs) over them
    /// instead of doing it all on its own loop. `done` is called on the partition's loop once the
    /// write is in the page cache, or after the fsync when `flush.messages` makes this append
    /// wait for one.
    ///
    /// A closure rather than a future: with small batches a chain of futures per partition (each
    /// a few allocations and NIO's generic metadata looked up at run time) was most of the
    /// broker's CPU per batch.
    ///
    /// The records are handed over through `Handover`, so that once validated nothing here
    /// references them but the batches appended (which `PartitionLog.append` may then set in place).
    func append(
        validating records: ByteBuffer,
        config: LogConfig,
        done: @escaping @Sendable (Result<AppendOutcome, any Error>) -> Void
    ) {
        let handover = Handover(records)
        self.eventLoop.execute {
            let batches: [ValidatedBatch]
            do {
                batches = try RecordBatchValidator.validate(
                    handover.take(),
                    config: config,
                    nowMilliseconds: FileSystem.wallClockMilliseconds()
                )
            } catch {
                return done(.failure(error))
            }
            self.appendOnLoop(consume batches, done: done)
        }
    }

    /// A value passed to another loop and taken out there, leaving no reference behind in the
    /// closure that carried it.
    private final class Handover<Value>: @unchecked Sendable {
        private var value: Value?
        init(_ value: Value) { self.value = value }
        /// Called once, on the receiving loop.
        func take() -> Value { self.value.take()! }
    }

    private func appendOnLoop(
        _ batches: consuming [ValidatedBatch],
        done: @escaping @Sendable (Result<AppendOutcome, any Error>) -> Void
    ) {
        // Moved into the closure below rather than captured: a captured array would be a second reference.
        var pending = Optional(batches)
        // After the append's own fsync decision: one started here first would take the fsync that
        // `flush.messages` makes due without this append waiting for it.
        defer { self.afterAppend() }
        do {
            let (outcome, needsFlush) = try self.withLog { log, state in
                guard state.acceptsWrites else {
                    throw BrokerError(.notLeaderOrFollower, "\(self.topicPartition) is led by another node now")
                }
                // Published even when the append threw part-way: readers must see the log as it is.
                defer {
                    self.publish(state)
                    self.startDeferredFileWork(log, state)
                }
                let outcome = try log.append(
                    pending.take()!,
                    leaderEpoch: state.leaderEpoch,
                    nowMilliseconds: FileSystem.wallClockMilliseconds()
                )
                if case .appended = outcome { self.startWritebackIfDue(log, state) }
                return (outcome, log.hasFlushPolicy)
            }
            guard needsFlush, case .appended = outcome else { return done(.success(outcome)) }
            self.flushIfDue(force: false).whenComplete { done($0.map { outcome }) }
        } catch let error as StorageError {
            self.logger.error("append to \(self.topicPartition) failed: \(error)")
            done(.failure(BrokerError(error)))
        } catch {
            done(.failure(error))
        }
    }

    /// What every append (or copy) leaves to start, whether it succeeded or not: the fsync of
    /// segments it rolled and the `flush.ms` timer for what it wrote.
    private func afterAppend() {
        guard let log = self.state.value.log else { return }
        self.syncRolledSegments(log, self.state.value)
        self.armTimedFlush()
    }

    /// Starts writing the newest megabyte back to the device on the thread pool, not waiting
    /// for it (`FileHandle.startWriteback`), and drops what earlier ones wrote back, beyond
    /// `pageCacheTailBytes`, from the page cache (`FileHandle.releasePages`).
    private func startWritebackIfDue(_ log: PartitionLog, _ state: State) {
        guard !state.writebackInFlight, let due = log.writebackDue(pageCacheTailBytes: self.pageCacheTailBytes) else {
            return
        }
        state.writebackInFlight = true
        self.writebackPool.runIfActive(eventLoop: self.eventLoop) {
            try due.run()
        }.whenComplete { result in
            self.state.value.writebackInFlight = false
            if case .failure(let error) = result {
                self.logger.warning("starting writeback of \(self.topicPartition) failed: \(error)")
            }
        }
    }

    /// Runs the file work the log left (`PartitionLog.takeDeferredFileWork`) on the thread pool,
    /// after the batch before it. A failure costs only restart time (recovery rebuilds what is
    /// missing), so it is logged, not fatal.
    private func startDeferredFileWork(_ log: PartitionLog, _ state: State) {
        let work = log.takeDeferredFileWork()
        guard !work.isEmpty else { return }
        let after = state.fileWork ?? self.eventLoop.makeSucceededVoidFuture()
        let next = after.flatMap {
            self.threadPool.runIfActive(eventLoop: self.eventLoop) { try work.run() }
        }.flatMapErrorThrowing { error in
            self.logger.warning("file work of \(self.topicPartition) failed (a restart rebuilds it): \(error)")
        }
        state.fileWork = next
        next.whenComplete { _ in
            let state = self.state.value
            if state.fileWork === next { state.fileWork = nil }
        }
    }

    /// Runs `body` on the loop once the file work started so far is done.
    private func afterFileWork<T: Sendable>(_ body: @escaping () throws -> T) -> EventLoopFuture<T> {
        let work = self.state.value.fileWork ?? self.eventLoop.makeSucceededVoidFuture()
        return work.assumeIsolated().flatMapThrowing { _ in try body() }.nonisolated()
    }

    /// Appends batches copied from the partition's previous leader, offsets kept (see
    /// `PartitionLog.appendReplicated`). Returns the records appended.
    func appendReplicated(_ batches: [ValidatedBatch]) -> EventLoopFuture<Int> {
        self.eventLoop.submit {
            defer {
                // `flush.messages` counts copied records too; nothing waits for these fsyncs.
                _ = self.flushIfDue(force: false)
                self.afterAppend()
            }
            return try self.withLog { log, state in
                defer {
                    self.publish(state)
                    self.startDeferredFileWork(log, state)
                }
                let count = try storage { () throws(StorageError) in try log.appendReplicated(batches) }
                self.startWritebackIfDue(log, state)
                return count
            }
        }
    }

    /// Leads from `epoch`: takes writes, stamping them with it.
    func lead(from epoch: Int32) {
        self.eventLoop.execute {
            self.state.value.leaderEpoch = epoch
            self.state.value.acceptsWrites = true
        }
    }

    /// Stops taking writes; the future completes once no append can land any more.
    func stopWrites() -> EventLoopFuture<Void> {
        self.eventLoop.submit { self.state.value.acceptsWrites = false }
    }

    /// Makes everything appended so far durable.
    func flush() -> EventLoopFuture<Void> {
        self.eventLoop.flatSubmit { self.flushIfDue(force: true) }
    }

    /// Starts an fsync if the policy says one is due (or `force`). The future completes once
    /// everything appended so far is durable when `force` or `flush.messages` asks for that, and
    /// at once otherwise: an fsync that `flush.ms` made due does not hold acknowledgements, as in
    /// Kafka, whose time-based flushes run on a scheduler beside the appends. (Holding them made
    /// fsyncs run back to back under load: every ack waited for one, p99 2.2–2.4 ms at the broker
    /// against 0.75 ms without, and up to 19 ms on a slow disk.)
    func flushIfDue(force: Bool) -> EventLoopFuture<Void> {
        self.eventLoop.preconditionInEventLoop()
        let state = self.state.value
        guard let log = state.log else { return self.eventLoop.makeSucceededVoidFuture() }
        let waits = force || log.flushDueByCount
        if state.flushInFlight {
            guard waits else { return self.eventLoop.makeSucceededVoidFuture() }
            // Group commit: everything appended now rides on the next fsync.
            state.flushRequestedAgain = true
            let promise = self.eventLoop.makePromise(of: Void.self)
            state.nextFlushWaiters.append(promise)
            return promise.futureResult
        }
        guard let request = log.flushRequest(nowMonotonicMilliseconds: FileSystem.monotonicMilliseconds(), force: force)
        else { return self.eventLoop.makeSucceededVoidFuture() }
        state.flushInFlight = true
        let promise = self.eventLoop.makePromise(of: Void.self)
        state.flushWaiters.append(promise)
        let files = request.files
        self.threadPool.runIfActive(eventLoop: self.eventLoop) {
            for file in files { try file.sync() }
        }.whenComplete { result in
            self.flushCompleted(result, through: request.throughOffset)
        }
        return waits ? promise.futureResult : self.eventLoop.makeSucceededVoidFuture()
    }

    private func flushCompleted(_ result: Result<Void, any Error>, through offset: Int64) {
        let state = self.state.value
        state.flushInFlight = false
        let waiters = state.flushWaiters
        state.flushWaiters = state.nextFlushWaiters
        state.nextFlushWaiters = []
        switch result {
        case .success:
            do {
                if let log = state.log {
                    try log.flushed(through: offset)
                    self.startDeferredFileWork(log, state)
                }
            } catch {
                self.logger.error("recording flush of \(self.topicPartition) failed: \(error)")
            }
            waiters.forEach { $0.succeed() }
        case .failure(let error):
            // After a failed fsync the kernel may have dropped the dirty pages and will report
            // later fsyncs as successful (the fsyncgate lesson): nothing written since the last
            // good flush can be trusted. Fail the acknowledgements and take the partition
            // offline, as Kafka does for a failed log directory; recovery validates it on restart.
            self.logger.critical("fsync of \(self.topicPartition) failed; taking it offline: \(error)")
            let failure = BrokerError(.kafkaStorageError, "fsync failed: \(error)")
            waiters.forEach { $0.fail(failure) }
            state.nextFlushWaiters.forEach { $0.fail(failure) }
            state.nextFlushWaiters = []
            state.flushWaiters.forEach { $0.fail(failure) }
            state.flushWaiters = []
            state.flushRequestedAgain = false
            state.log = nil
            self.publish(state)
            self.onFailure(self.topicPartition, "fsync failed: \(error)")
            return
        }
        if state.flushRequestedAgain {
            state.flushRequestedAgain = false
            let pending = state.flushWaiters
            state.flushWaiters = []
            self.flushIfDue(force: true).whenComplete { result in
                pending.forEach { $0.completeWith(result) }
            }
        }
        if let log = state.log { self.syncRolledSegments(log, state) }
        self.armTimedFlush()
    }

    /// Starts the fsync of segments rolled since the last one (not waiting for it), unless an
    /// fsync is running, whose completion comes back here: a rolled segment is durable soon after
    /// the roll, and its recovery point moves past it, without a periodic check of every
    /// partition.
    private func syncRolledSegments(_ log: PartitionLog, _ state: State) {
        guard !state.flushInFlight, log.hasUnsyncedClosedSegments else { return }
        _ = self.flushIfDue(force: false)
    }

    /// Arms the partition's one `flush.ms` timer for when what was appended since the last fsync
    /// began falls due, unless it is armed already or an fsync is running (whose completion arms
    /// it): a partition whose appends stop has its last ones fsynced `flush.ms` after the fsync
    /// before them, not at the next maintenance pass up to a second later. Appends that keep
    /// coming start their fsyncs themselves (`flushIfDue`), so the timer rarely fires for them.
    private func armTimedFlush() {
        let state = self.state.value
        guard state.timedFlush == nil, !state.flushInFlight, let due = state.log?.timedFlushDue else { return }
        let delay = max(0, due - FileSystem.monotonicMilliseconds())
        state.timedFlush = self.eventLoop.scheduleTask(in: .milliseconds(delay)) {
            self.state.value.timedFlush = nil
            _ = self.flushIfDue(force: false)
            self.armTimedFlush()
        }
    }

    private func cancelTimedFlush(_ state: State) {
        state.timedFlush?.cancel()
        state.timedFlush = nil
    }

    // MARK: Reading

    /// Reads from the hot cache on the caller's thread, from the offsets last published: nil
    /// when the partition's loop must answer (`read`) — the offset is not cached or is outside
    /// [log start, log end], or `memory` cannot take the batches. At the log end the answer is
    /// empty.
    ///
    /// The batches take their size from `memory` until the response is written, as records read
    /// from the device do: they are the cache's, but a response a client does not read keeps
    /// them after the cache lets them go, and a client could otherwise hold the cache's whole
    /// budget once per connection.
    func readCached(from offset: Int64, maxBytes: Int, minOneBatch: Bool, memory: MemoryBudget) -> ReadResult? {
        guard let offsets = self.shared.withLock({ $0.offsets }), offset >= offsets.logStart, offset <= offsets.logEnd
        else { return nil }
        var read = ReadResult(records: .empty, highWatermark: offsets.logEnd, logStartOffset: offsets.logStart)
        if offset < offsets.logEnd {
            // A refusal is not counted here: the partition's loop asks again.
            guard
                let cached = self.cachedReader.read(
                    from: offset, maxBytes: maxBytes, minOneBatch: minOneBatch, end: offsets.logEnd,
                    admit: { Self.hold($0, from: memory, countingRefusal: false, in: &read.reservation) })
            else { return nil }
            read.records = .memory(cached)
        }
        return read
    }

    /// Reserves `bytes` of the hot cache's batches from `memory` into `reservation` (none for
    /// none); false when `memory` refuses them.
    private static func hold(
        _ bytes: Int, from memory: MemoryBudget, countingRefusal: Bool, in reservation: inout MemoryReservation?
    ) -> Bool {
        guard bytes > 0 else { return true }
        reservation = memory.reserve(bytes, countingRefusal: countingRefusal)
        return reservation != nil
    }

    /// Reads from `offset` (see `PartitionLog.readRecords`) without the partition's loop or the
    /// connection's (which sends the answer) waiting for the device: a consumer catching up from
    /// disk does not hold up the partitions and connections that share those loops, as it holds
    /// up a Kafka broker's network thread.
    ///
    /// On the partition's loop: the hot cache, or where in the segments to look
    /// (`PartitionLog.startRead`), and the batch headers that bound the span when the OS page
    /// cache holds them (`SpanSearch.findInPageCache`). A span whose pages it holds comes back
    /// as a span, not read: the response sends it from the file. The rest is done on NIO's
    /// blocking pool: reading the offset indexes of segments not read since the log was opened,
    /// finding the span where a header's page was not cached, and reading a span the page cache
    /// does not hold. What is read so, like the hot cache's batches, takes its size from
    /// `memory` until the response is written (`ReadResult.reservation`); when `memory` is
    /// spent, the span is sent from the file instead, so pipelined fetches cannot take memory
    /// without bound. Errors are `BrokerError`s.
    func read(from offset: Int64, maxBytes: Int, minOneBatch: Bool, memory: MemoryBudget) -> EventLoopFuture<ReadResult> {
        self.read(from: offset, maxBytes: maxBytes, minOneBatch: minOneBatch, memory: memory, loadingIndex: false)
    }

    /// What a read leaves to the blocking pool.
    private enum Pending: Sendable {
        case search(SpanSearch)
        /// Offset index files to read first (segments not read since the log was opened).
        case index(PartitionLog.IndexLoad)
    }

    private func read(
        from offset: Int64,
        maxBytes: Int,
        minOneBatch: Bool,
        memory: MemoryBudget,
        loadingIndex: Bool
    ) -> EventLoopFuture<ReadResult> {
        self.eventLoop.submit { () -> (ReadResult, Pending?) in
            try self.withLog { log, _ in
                var read = ReadResult(records: .empty, highWatermark: log.logEndOffset, logStartOffset: log.logStartOffset)
                // The hot cache's batches if `memory` takes them, else their segment's.
                let start = try storage { () throws(StorageError) in
                    try log.startRead(
                        from: offset, maxBytes: maxBytes, minOneBatch: minOneBatch, loadingIndex: loadingIndex,
                        admitCached: { Self.hold($0, from: memory, countingRefusal: true, in: &read.reservation) })
                }
                switch start {
                case .records(let records):
                    read.records = records
                    return (read, nil)
                case .search(let search):
                    let found = try storage { () throws(StorageError) in try search.findInPageCache() }
                    read.records = found ?? .empty
                    return (read, found == nil ? .search(search) : nil)
                case .loadIndex(let load):
                    return (read, .index(load))
                }
            }
        }.flatMap { read, pending in
            switch pending {
            case .index(let load):
                return self.adoptIndex(load).flatMap {
                    self.read(from: offset, maxBytes: maxBytes, minOneBatch: minOneBatch, memory: memory, loadingIndex: true)
                }
            case .search(let search):
                return NIOThreadPool.singleton.runIfActive(eventLoop: self.eventLoop) {
                    var found = read
                    found.records = try storage { () throws(StorageError) in try search.find() }
                    guard let reservation = Self.reservation(toRead: found.records, from: memory) else { return found }
                    return try Self.readIntoMemory(found, reservation: reservation)
                }
            case nil:
                guard let reservation = Self.reservation(toRead: read.records, from: memory) else {
                    return self.eventLoop.makeSucceededFuture(read)
                }
                return NIOThreadPool.singleton.runIfActive(eventLoop: self.eventLoop) {
                    try Self.readIntoMemory(read, reservation: reservation)
                }
            }
        }
    }

    /// For a span the page cache does not hold, the memory to read it into, if `memory` has it.
    /// A span under `KafkaFrame.spliceBytesMin` is a span only when the search found it not
    /// resident (`SpanSearch.find`): it is not asked again.
    private static func reservation(toRead records: LogRecords, from memory: MemoryBudget) -> MemoryReservation? {
        guard case .file(let span) = records, span.length < KafkaFrame.spliceBytesMin || !span.isResident else {
            return nil
        }
        return memory.reserve(span.length)
    }

    /// `read` with its span read into the memory reserved for it (on the blocking pool).
    private static func readIntoMemory(_ read: ReadResult, reservation: MemoryReservation) throws -> ReadResult {
        guard case .file(let span) = read.records else { return read }
        var fromDevice = read
        fromDevice.records = .memory(try storage { () throws(StorageError) in try LogRecords.file(span).bytes() })
        fromDevice.reservation = reservation
        return fromDevice
    }

    /// The bytes of the partition's segments.
    func sizeBytes() -> EventLoopFuture<Int64> {
        self.eventLoop.submit { try self.withLog { log, _ in Int64(log.sizeBytes) } }
    }

    /// The partition's (log start, high watermark).
    func offsets() -> EventLoopFuture<(logStart: Int64, highWatermark: Int64)> {
        self.eventLoop.submit {
            try self.withLog { log, _ in (log.logStartOffset, log.logEndOffset) }
        }
    }

    /// The log's offsets as last published, read on the caller's thread without a hop (nil once
    /// the log is closed, deleted or taken offline): what a fetch on any loop sees. Every append
    /// publishes before it is acknowledged, so a producer reads its own writes here.
    func publishedOffsets() -> Offsets? { self.shared.withLock { $0.offsets } }

    /// Whether an fsync is running (for tests).
    func fsyncInFlight() -> EventLoopFuture<Bool> { self.eventLoop.submit { self.state.value.flushInFlight } }

    /// The offset below which every record is on stable storage (the log's recovery point).
    func durableEnd() -> EventLoopFuture<Int64> {
        self.eventLoop.submit { try self.withLog { log, _ in log.recoveryPoint } }
    }

    /// OffsetForLeaderEpoch, read on the caller's thread from what was last published: where
    /// `epoch` ends in the log, the partition being at leader epoch `current`
    /// (`LeaderEpochHistory.endOffset`); nil if undefined. Throws once the log is gone.
    func endOffset(of epoch: Int32, current: Int32) throws -> (epoch: Int32, endOffset: Int64)? {
        let (offsets, history) = self.shared.withLock { ($0.offsets, $0.leaderEpochs) }
        guard let offsets else { throw BrokerError(.unknownTopicOrPartition, "\(self.topicPartition) is not open here") }
        return history.endOffset(of: epoch, current: current, logEnd: offsets.logEnd)
    }

    /// ListOffsets by time: the first record at or after `timestamp`, or nil.
    func offset(forTimestamp timestamp: Int64) -> EventLoopFuture<(timestamp: Int64, offset: Int64)?> {
        self.searchByTime(loadingIndex: false) { log, loadingIndex throws(StorageError) in
            try log.startTimeSearch(for: timestamp, loadingIndex: loadingIndex)
        }
    }

    /// ListOffsets MAX_TIMESTAMP.
    func maxTimestamp() -> EventLoopFuture<(timestamp: Int64, offset: Int64)?> {
        self.searchByTime(loadingIndex: false) { log, loadingIndex throws(StorageError) in
            try log.startMaxTimestampSearch(loadingIndex: loadingIndex)
        }
    }

    /// A search by time planned on the partition's loop (`start`), from memory, and run on
    /// NIO's blocking pool (`TimeSearch.find`: batch headers, and one batch decompressed), as
    /// reads behind the hot cache are: the partition's loop waits neither for the device nor
    /// for the decompression. An offset index not loaded yet is read on the pool first.
    private func searchByTime(
        loadingIndex: Bool,
        _ start: @escaping @Sendable (PartitionLog, Bool) throws(StorageError) -> PartitionLog.TimeSearchStart
    ) -> EventLoopFuture<(timestamp: Int64, offset: Int64)?> {
        self.eventLoop.submit {
            try self.withLog { log, _ in try storage { () throws(StorageError) in try start(log, loadingIndex) } }
        }.flatMap { started in
            switch started {
            case .loadIndex(let load):
                return self.adoptIndex(load).flatMap { self.searchByTime(loadingIndex: true, start) }
            case .search(let search):
                return NIOThreadPool.singleton.runIfActive(eventLoop: self.eventLoop) {
                    try storage { () throws(StorageError) in try search.find() }
                }
            }
        }
    }

    /// Reads an offset index file on the pool and gives it to the log on its loop (where the
    /// pool's answer arrives); one that could not be read is loaded when the caller starts
    /// again, there.
    private func adoptIndex(_ load: PartitionLog.IndexLoad) -> EventLoopFuture<Void> {
        NIOThreadPool.singleton.runIfActive(eventLoop: self.eventLoop) {
            try storage { () throws(StorageError) in try load.read() }
        }.flatMapThrowing { loaded in
            try self.withLog { log, _ in log.adopt(loaded) }
        }
    }

    // MARK: Long-poll waiters

    /// Calls `wake` once, on any thread, at the log's next change; returns an id for
    /// `removeWaiter`, or nil without registering when the log already moved past
    /// `observedEnd` (or closed): the caller reads again.
    func addWaiter(observedEnd: Int64, wake: @escaping @Sendable () -> Void) -> UInt64? {
        self.shared.withLock { shared in
            guard let offsets = shared.offsets, offsets.logEnd <= observedEnd else { return nil }
            let id = shared.nextWaiterID
            shared.nextWaiterID += 1
            shared.waiters[id] = wake
            return id
        }
    }

    /// Long-poll waiters registered now (for tests).
    var waiterCount: Int { self.shared.withLock { $0.waiters.count } }

    func removeWaiter(_ id: UInt64) {
        self.shared.withLock { _ = $0.waiters.removeValue(forKey: id) }
    }

    /// Publishes the log's offsets (nil once it is gone) and wakes the waiters, outside the lock.
    private func publish(_ state: State) {
        let offsets = state.log.map { Offsets(logStart: $0.logStartOffset, logEnd: $0.logEndOffset) }
        let history = state.log?.leaderEpochs ?? LeaderEpochHistory()
        let waiters = self.shared.withLock { shared -> [@Sendable () -> Void] in
            shared.offsets = offsets
            shared.leaderEpochs = history
            guard !shared.waiters.isEmpty else { return [] }
            defer { shared.waiters.removeAll(keepingCapacity: true) }
            return Array(shared.waiters.values)
        }
        for wake in waiters { wake() }
    }

    // MARK: Maintenance

    /// Retention, run by the loop's maintenance timer every `retention-check-interval-ms`; and
    /// whatever fsync is due, should an earlier trigger have been missed. (Rolled segments and
    /// `flush.ms` start their own fsyncs: `syncRolledSegments`, `armTimedFlush`.)
    func maintain() {
        self.eventLoop.preconditionInEventLoop()
        guard self.state.value.log != nil else { return }
        // After the file work started so far, which may still write into a segment's indexes.
        _ = self.afterFileWork { self.enforceRetention() }
        _ = self.flushIfDue(force: false)
    }

    private func enforceRetention() {
        let state = self.state.value
        guard let log = state.log else { return }
        // Published even when retention threw part-way (its start may have moved).
        defer {
            self.publish(state)
            self.startDeferredFileWork(log, state)
            self.syncRolledSegments(log, state)
        }
        do {
            let deleted = try log.enforceRetention(nowMilliseconds: FileSystem.wallClockMilliseconds())
            if deleted > 0 {
                self.logger.info(
                    "retention deleted segments of \(self.topicPartition)",
                    metadata: ["segments": "\(deleted)", "logStartOffset": "\(log.logStartOffset)"]
                )
            }
        } catch {
            self.logger.error("retention of \(self.topicPartition) failed: \(error)")
        }
    }

    /// Takes a topic's new configuration; a `flush.ms` timer armed under the old one is armed again.
    func update(config: LogConfig) {
        self.eventLoop.execute {
            let state = self.state.value
            state.log?.update(config: config)
            self.cancelTimedFlush(state)
            self.armTimedFlush()
        }
    }

    /// Flushes and closes the log (clean shutdown), after its deferred file work.
    func close() -> EventLoopFuture<Void> {
        self.eventLoop.flatSubmit {
            let state = self.state.value
            guard let log = state.log else { return self.eventLoop.makeSucceededVoidFuture() }
            state.log = nil
            self.cancelTimedFlush(state)
            self.publish(state)
            return self.afterFileWork { try log.close() }
        }
    }

    /// Closes the log and removes its files (topic deletion), after its deferred file work (which
    /// would otherwise write into the directory, or a new one of the same name).
    func delete() -> EventLoopFuture<Void> {
        self.eventLoop.flatSubmit {
            let state = self.state.value
            guard let log = state.log else { return self.eventLoop.makeSucceededVoidFuture() }
            state.log = nil
            self.cancelTimedFlush(state)
            self.publish(state)
            return self.afterFileWork { try log.deleteFiles() }
        }
    }
}
