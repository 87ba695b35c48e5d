import HashTreeCollections
import KafkaProtocol
import NIOCore
import RafkaCore
import RafkaStorage

extension KafkaAPIs {
    /// Fetch v4–16, with incremental fetch sessions from v7 (`FetchSessionCache`). Long-polls
    /// until `minBytes` arrived or `maxWaitMs` passed. The answer is encoded here: records behind
    /// the hot cache are sent from their segment. From v16 it names the leader of each partition
    /// turned away (`LeaderHints`).
    func fetch(_ request: FetchRequest, _ context: RequestContext) -> EventLoopFuture<KafkaFrame?> {
        guard let catchingUp = self.catchingUp(to: request, context) else { return self.read(request, context) }
        let started = NIODeadline.now()
        return catchingUp.flatMap {
            // What the catching up took comes off the fetch's own wait.
            var request = request
            let waited = (NIODeadline.now() - started).nanoseconds / 1_000_000
            if waited > 0 && request.maxWaitMs > 0 { request.maxWaitMs = Int32(max(1, Int64(request.maxWaitMs) - waited)) }
            return self.read(request, context)
        }
    }

    private func read(_ request: FetchRequest, _ context: RequestContext) -> EventLoopFuture<KafkaFrame?> {
        FetchOperation(request: request, context: context, broker: self.broker).run().map { response, fileRecords, reservations in
            RequestRouter.encode(
                response, apiKey: .fetch, version: context.apiVersion, correlationID: context.correlationID,
                sizeHint: 256 + response.encodedSizeHint, fileRecords: fileRecords, leases: reservations)
        }
    }

    /// A consumer that names a newer leader epoch than this data node's (it was sent here by a
    /// node that learned of a ring change first) waits, within its `maxWaitMs`, until this node
    /// has that image too: then it finds the partitions it came for being taken over or served
    /// here, rather than UNKNOWN_LEADER_EPOCH and a back-off. nil: nothing to wait for.
    private func catchingUp(to request: FetchRequest, _ context: RequestContext) -> EventLoopFuture<Void>? {
        guard !self.broker.isStandalone, request.maxWaitMs > 0 else { return nil }
        let newest = request.topics.lazy.flatMap(\.partitions).map(\.currentLeaderEpoch).max() ?? -1
        guard newest > Int32(clamping: self.broker.cache.image.ringEpoch) else { return nil }
        return self.broker.cache.whenRingEpoch(
            reaches: Int64(newest), on: context.eventLoop, within: ReplicaManager.arrivalWait(milliseconds: request.maxWaitMs))
    }
}

/// One Fetch request in progress, confined to the connection's event loop. A partition whose
/// records the hot cache holds (or that has nothing new) is read right here; only the others
/// are read on their partition's loop, one after another. An incremental fetch session's quiet
/// partitions (nothing new since the session last told of them) are not read at all: each pass
/// looks at their published offsets and waits on them, so a fetch over 10,000 quiet partitions
/// costs a few lock round trips per partition (its offsets, its waiter) rather than a read, a
/// result and a response entry for each.
///
/// ```
///  read all ──► enough bytes, an error, or no wait? ──yes──► reply
///                  │ no
///                  ▼
///  register one-shot waiters on every partition ──► an append wakes us ──► read all …
///                  └──────── max wait elapses ─────► read all ──► reply
/// ```
final class FetchOperation {
    struct Target {
        var topicName: String
        var topicID: KafkaUUID
        var partition: FetchRequest.FetchPartition
        var shell: PartitionShell?
        var error: BrokerError?
        /// A partition this node is taking over (`ReplicaManager.isArriving`): nothing to read
        /// yet, and the long poll waits for it too; answered as having nothing new while it
        /// arrives, and with `error` once the takeover has held requests for `arrivalWaitMax`.
        var arriving = false
    }

    private let request: FetchRequest
    private let context: RequestContext
    private let broker: Broker
    /// The fetch session this fetch opens or continues, if any (`FetchSessionCache`).
    private let session: FetchSessionCache.Context
    /// The partitions read, in order: the request's, or (incremental) those of the session's
    /// with something new, chosen again on every pass (`chooseSessionTargets`).
    private var targets: [Target] = []
    /// Incremental: each target's position in the session.
    private var sessionPositions: [Int] = []
    /// Incremental: the session's partitions left out of this pass as quiet, with the log end
    /// they had, for the long poll to wait on too.
    private var quiet: [(shell: PartitionShell, observedEnd: Int64)] = []
    private let responseBytesMax: Int
    private let promise: EventLoopPromise<(FetchResponse, [KafkaFrame.FileRecords?], [MemoryReservation])>
    private var waiterIDs: [(PartitionShell, UInt64)] = []
    private var timeout: Scheduled<Void>?
    private var done = false
    private var reading = false
    private var wokenWhileReading = false
    /// The deadline passed (or no wait was asked): the next completed read answers.
    private var finalRequested = false
    /// Results of the read pass in progress, in request order.
    private var collected: [PartitionResult] = []
    /// `self` for closures that NIO requires to be `@Sendable`; they all run on our loop. Made
    /// anew for each closure, never stored: a stored one would be a reference cycle, and every
    /// finished fetch (with the records it read) would stay in memory.
    private var onLoop: NIOLoopBound<FetchOperation> { NIOLoopBound(self, eventLoop: self.context.eventLoop) }

    init(request: FetchRequest, context: RequestContext, broker: Broker) {
        self.request = request
        self.context = context
        self.broker = broker
        self.promise = context.eventLoop.makePromise()
        let requested = context.apiVersion >= 3 ? Int(max(0, request.maxBytes)) : Int(Int32.max)
        self.responseBytesMax = min(requested, Limits.fetchResponseBytesMax)
        self.session = broker.fetchSessions.context(
            for: request, version: context.apiVersion, now: FileSystem.monotonicMilliseconds())
        switch self.session {
        case .incremental, .failed:
            break  // an incremental fetch chooses its targets on every pass
        case .sessionless, .full:
            var resolver = self.resolver()
            for topic in self.request.topics {
                for partition in topic.partitions {
                    self.targets.append(resolver.target(topic: topic.topic, topicID: topic.topicId, partition: partition))
                }
            }
        }
    }

    private func resolver() -> TargetResolver {
        TargetResolver(
            broker: self.broker, snapshot: self.broker.cache.snapshot, byID: self.context.apiVersion >= 13,
            // A replica's fetch (a new leader copying the partition) may read a copy this node
            // holds without serving it; consumers read only what this node leads.
            fromReplica: self.request.replicaId >= 0 || self.request.replicaState.replicaId >= 0)
    }

    /// Finds each partition's shell, or the error to answer for it.
    private struct TargetResolver {
        let broker: Broker
        let image: MetadataImage
        /// `image`'s placement: each partition's leader epoch.
        let placement: PartitionPlacement
        let byID: Bool
        let fromReplica: Bool
        private let apis: KafkaAPIs
        /// A topic's partitions come one after another: its metadata and (for a consumer) the
        /// shells this node serves of it are looked up once for them.
        private var last: (topic: String, topicID: KafkaUUID, metadata: TopicMetadata?)?
        private var lastShells: (topic: String, shells: [Int32: PartitionShell])?

        init(broker: Broker, snapshot: MetadataCache.Snapshot, byID: Bool, fromReplica: Bool) {
            self.broker = broker
            (self.image, self.placement) = snapshot
            self.byID = byID
            self.fromReplica = fromReplica
            self.apis = KafkaAPIs(broker: broker)
        }

        /// The error for a consumer's `currentLeaderEpoch`, if any (a replica's fetch has none).
        private func epochError(_ metadata: TopicMetadata, _ partition: FetchRequest.FetchPartition) -> BrokerError? {
            guard !self.fromReplica, partition.currentLeaderEpoch >= 0 else { return nil }
            let current = KafkaAPIs.leaderEpoch(of: self.broker, placement: self.placement, topic: metadata, partition: partition.partition)
            return KafkaAPIs.leaderEpochError(partition.currentLeaderEpoch, current: current)
        }

        mutating func metadata(topic: String, topicID: KafkaUUID) -> TopicMetadata? {
            if let last, last.topic == topic, last.topicID == topicID { return last.metadata }
            let metadata = self.byID ? self.image.topic(id: topicID) : self.image.topics[topic]
            self.last = (topic, topicID, metadata)
            return metadata
        }

        mutating func shell(_ metadata: TopicMetadata, _ partition: Int32) -> PartitionShell? {
            if self.fromReplica { return self.broker.replicas.anyShell(for: TopicPartition(metadata.name, partition)) }
            if let lastShells, lastShells.topic == metadata.name { return lastShells.shells[partition] }
            let shells = self.broker.replicas.shellsByIndex(topic: metadata.name)
            self.lastShells = (metadata.name, shells)
            return shells[partition]
        }

        /// The shell of a partition that can be read as asked (a known topic, a partition this
        /// node serves, the leader epoch the client expects), else nil.
        mutating func readable(topic: String, topicID: KafkaUUID, partition: FetchRequest.FetchPartition) -> PartitionShell? {
            guard let metadata = self.metadata(topic: topic, topicID: topicID), self.epochError(metadata, partition) == nil else {
                return nil
            }
            return self.shell(metadata, partition.partition)
        }

        mutating func target(topic: String, topicID: KafkaUUID, partition: FetchRequest.FetchPartition) -> Target {
            guard let metadata = self.metadata(topic: topic, topicID: topicID) else {
                var target = Target(topicName: topic, topicID: topicID, partition: partition)
                target.error = BrokerError(self.byID ? .unknownTopicId : .unknownTopicOrPartition)
                return target
            }
            var target = Target(topicName: metadata.name, topicID: topicID, partition: partition)
            target.shell = self.shell(metadata, partition.partition)
            if target.shell == nil {
                let tp = TopicPartition(metadata.name, partition.partition)
                target.error = self.apis.missingPartitionError(tp)
                target.arriving = !self.fromReplica && self.epochError(metadata, partition) == nil && self.broker.replicas.isArriving(tp)
            } else if let error = self.epochError(metadata, partition) {
                target.error = error
            }
            return target
        }
    }

    /// Incremental: the session's partitions this pass reads, from where the session's order
    /// starts — all but the quiet ones, whose offsets are what the session last told of them
    /// and where the client's position is their end. Those are only waited on.
    private func chooseSessionTargets(_ snapshot: FetchSessionCache.Snapshot) {
        self.targets.removeAll(keepingCapacity: true)
        self.sessionPositions.removeAll(keepingCapacity: true)
        self.quiet.removeAll(keepingCapacity: true)
        var resolver = self.resolver()
        for index in 0..<snapshot.count {
            let position = snapshot.position(index)
            let entry = snapshot.entries[position]
            if let shell = resolver.readable(topic: entry.key.topic, topicID: entry.key.topicID, partition: entry.fetch),
                let offsets = shell.publishedOffsets(), entry.fetch.fetchOffset == offsets.logEnd,
                snapshot.reported[position]
                    == FetchSessionCache.Reported(highWatermark: offsets.logEnd, logStartOffset: offsets.logStart)
            {
                self.quiet.append((shell, offsets.logEnd))
                continue
            }
            self.targets.append(resolver.target(topic: entry.key.topic, topicID: entry.key.topicID, partition: entry.fetch))
            self.sessionPositions.append(position)
        }
    }

    /// The response; for each partition in it (in order) the segment file its records are sent
    /// from, if they are (else none is given, or nil); and the memory its records read from the
    /// device hold until the response is written.
    func run() -> EventLoopFuture<(FetchResponse, [KafkaFrame.FileRecords?], [MemoryReservation])> {
        if case .failed(let code) = self.session {
            var response = FetchResponse()
            response.errorCode = code.rawValue
            self.done = true
            self.promise.succeed((response, [], []))
            return self.promise.futureResult
        }
        let waitMilliseconds = min(Int64(max(0, self.request.maxWaitMs)), Int64(Limits.fetchWaitMillisecondsMax))
        self.readAll(final: waitMilliseconds == 0)
        if !self.done {
            let this = self.onLoop
            self.timeout = self.context.eventLoop.scheduleTask(in: .milliseconds(waitMilliseconds)) {
                this.value.readAll(final: true)
            }
        }
        return self.promise.futureResult
    }

    private typealias PartitionResult = Result<PartitionShell.ReadResult, BrokerError>

    /// Reads the partitions one after another, each with what is left of the response budget,
    /// so a fetch never holds more than `maxBytes` (plus one oversized first batch, KIP-74) —
    /// however many partitions it lists. Replies when the result is enough (or at the deadline).
    private func readAll(final: Bool) {
        guard !self.done else { return }
        if final { self.finalRequested = true }
        if self.reading {
            self.wokenWhileReading = true
            return
        }
        self.reading = true
        self.collected.removeAll(keepingCapacity: true)
        if case .incremental(let snapshot) = self.session { self.chooseSessionTargets(snapshot) }
        self.readNext(from: 0, remaining: self.responseBytesMax)
    }

    private func readNext(from start: Int, remaining budget: Int) {
        var remaining = budget
        // Partitions that cannot be read, and those the hot cache answers, are done here
        // without recursing; the first other one is read on its partition's loop.
        for index in start..<self.targets.count {
            if self.targets[index].arriving { self.arrive(index) }
            guard let shell = self.targets[index].shell, self.targets[index].error == nil else {
                self.collected.append(.failure(self.targets[index].error ?? BrokerError(.unknownServerError)))
                continue
            }
            let partition = self.targets[index].partition
            let maxBytes = min(Int(max(0, partition.partitionMaxBytes)), remaining)
            let minOneBatch = remaining == self.responseBytesMax
            let memory = self.broker.readMemory
            if let read = shell.readCached(
                from: partition.fetchOffset, maxBytes: maxBytes, minOneBatch: minOneBatch, memory: memory)
            {
                self.collected.append(.success(read))
                remaining = max(0, remaining - read.records.byteCount)
                continue
            }
            let this = self.onLoop
            let left = remaining
            shell.read(from: partition.fetchOffset, maxBytes: maxBytes, minOneBatch: minOneBatch, memory: memory)
                .map { PartitionResult.success($0) }
                .recover { [apis = KafkaAPIs(broker: self.broker)] in PartitionResult.failure(apis.servingError($0, shell.topicPartition)) }
                .hop(to: self.context.eventLoop)
                .whenSuccess { result in
                    var after = left
                    if case .success(let read) = result { after = max(0, left - read.records.byteCount) }
                    this.value.collected.append(result)
                    this.value.readNext(from: index + 1, remaining: after)
                }
            return
        }
        self.reading = false
        self.consider(self.collected, final: self.finalRequested)
    }

    /// Target `index`, arriving when last looked at: served now (if the client's leader epoch is
    /// this node's), or still arriving, or neither (the takeover ended without it, or held
    /// requests long enough: its error stands).
    private func arrive(_ index: Int) {
        let tp = TopicPartition(self.targets[index].topicName, self.targets[index].partition.partition)
        if let shell = self.broker.replicas.shell(for: tp) {
            self.targets[index].arriving = false
            let apis = KafkaAPIs(broker: self.broker)
            if let error = apis.leaderEpochError(self.targets[index].partition.currentLeaderEpoch, of: tp) {
                self.targets[index].error = error
            } else {
                self.targets[index].shell = shell
                self.targets[index].error = nil
            }
        } else {
            self.targets[index].arriving = self.broker.replicas.isArriving(tp)
        }
    }

    private func consider(_ results: [PartitionResult], final: Bool) {
        guard !self.done else { return }
        let bytes = results.reduce(0) { total, result in
            if case .success(let read) = result { return total + read.records.byteCount }
            return total
        }
        // A partition still arriving is not an error yet: the others are read meanwhile.
        let hasError = zip(self.targets, results).contains { target, result in
            if case .failure = result { return !target.arriving } else { return false }
        }
        // A request of no partitions is answered at once; a session's pass may read none (all quiet).
        let noPartitions = self.targets.isEmpty && self.quiet.isEmpty
        if final || hasError || bytes >= Int(self.request.minBytes) || noPartitions {
            self.finish(results)
            return
        }
        if self.wokenWhileReading {
            self.wokenWhileReading = false
            self.readAll(final: self.finalRequested)
            return
        }
        self.registerWaiters(results)
    }

    private func registerWaiters(_ results: [PartitionResult]) {
        self.removeWaiters()
        let loop = self.context.eventLoop
        let wake = self.onLoop
        // One closure for every partition, not one allocated per partition.
        let wakeUp: @Sendable () -> Void = { loop.execute { wake.value.readAll(final: false) } }
        /// Waits for `shell` to grow past `observed`; false if it already did (nothing waits then).
        func wait(on shell: PartitionShell, observed: Int64) -> Bool {
            guard let id = shell.addWaiter(observedEnd: observed, wake: wakeUp) else { return false }
            self.waiterIDs.append((shell, id))
            return true
        }
        var waiting = true
        for (shell, observed) in self.quiet where waiting {
            waiting = wait(on: shell, observed: observed)
        }
        for (target, result) in zip(self.targets, results) where waiting {
            guard let shell = target.shell, case .success(let read) = result else { continue }
            waiting = wait(on: shell, observed: max(read.highWatermark, target.partition.fetchOffset))
        }
        let arriving = self.targets.filter(\.arriving).map { TopicPartition($0.topicName, $0.partition.partition) }
        if waiting && !arriving.isEmpty {
            // Wakes once they are served here (or their takeover ended), within the request's wait.
            let wait = ReplicaManager.arrivalWait(milliseconds: self.request.maxWaitMs)
            self.broker.replicas.whenArrived(arriving, on: loop, within: wait).whenSuccess { wakeUp() }
        }
        if !waiting {
            // One grew since it was read: read again (from the loop, not recursing).
            self.removeWaiters()
            loop.execute { wake.value.readAll(final: false) }
        }
    }

    private func removeWaiters() {
        for (shell, id) in self.waiterIDs { shell.removeWaiter(id) }
        self.waiterIDs.removeAll()
    }

    private func finish(_ results: [PartitionResult]) {
        self.done = true
        self.timeout?.cancel()
        self.timeout = nil
        self.removeWaiters()
        self.promise.succeed(self.buildResponse(results))
        self.collected.removeAll()
    }

    /// The answer, partition by partition in the order read, each topic's consecutive partitions
    /// under one topic entry. An incremental fetch answers only the partitions with something
    /// new for its session (records, an error, a changed high watermark or log start) and notes
    /// what it told; a full fetch (epoch 0) opens a session with what it told.
    private func buildResponse(
        _ results: [PartitionResult]
    ) -> (FetchResponse, [KafkaFrame.FileRecords?], [MemoryReservation]) {
        var response = FetchResponse()
        var included: [(Target, FetchResponse.PartitionData, KafkaFrame.FileRecords?)] = []
        var reservations: [MemoryReservation] = []
        let byID = self.context.apiVersion >= 13
        let readCommitted = self.request.isolationLevel == 1
        var snapshot: FetchSessionCache.Snapshot?
        if case .incremental(let taken) = self.session { snapshot = taken }
        var noted: [(position: Int, reported: FetchSessionCache.Reported)] = []
        var lastWithRecords: Int?
        var opening: [(entry: FetchSessionCache.Entry, reported: FetchSessionCache.Reported)] = []
        for (index, (target, result)) in zip(self.targets, results).enumerated() {
            var data = FetchResponse.PartitionData()
            data.partitionIndex = target.partition.partition
            data.abortedTransactions = readCommitted ? [] : nil
            var file: KafkaFrame.FileRecords?
            var hasRecords = false
            switch result {
            case .success(let read):
                data.highWatermark = read.highWatermark
                data.lastStableOffset = read.highWatermark
                data.logStartOffset = read.logStartOffset
                hasRecords = read.records.byteCount > 0
                switch read.records {
                case .memory(let bytes):
                    data.records = bytes
                case .file(let span):
                    file = span.fileRecords()
                    data.records = ByteBuffer()  // the encoder writes the file's bytes instead
                }
                if let reservation = read.reservation { reservations.append(reservation) }
            case .failure where target.arriving:
                // Being taken over here: no records yet, and no error that would send the client
                // away to back off. Offsets unknown (-1): a high watermark at the client's
                // position would tell librdkafka it reached the partition's end.
                data.highWatermark = -1
                data.lastStableOffset = -1
                data.logStartOffset = -1
                data.records = ByteBuffer()
            case .failure(let error):
                data.errorCode = error.code.rawValue
                data.highWatermark = -1
                data.lastStableOffset = -1
                data.logStartOffset = -1
                data.records = ByteBuffer()
            }
            let told = FetchSessionCache.Reported(highWatermark: data.highWatermark, logStartOffset: data.logStartOffset)
            if let snapshot {
                let position = self.sessionPositions[index]
                if !hasRecords && data.errorCode == 0 && told == snapshot.reported[position] {
                    continue  // nothing new: left out of the answer
                }
                noted.append((position, told))
                if hasRecords { lastWithRecords = position }
            } else if case .full = self.session {
                let key = FetchSessionCache.Key(
                    topic: byID ? "" : target.topicName, topicID: byID ? target.topicID : .zero,
                    partition: target.partition.partition)
                opening.append((.init(key: key, fetch: target.partition), told))
            }
            included.append((target, data, file))
        }
        switch self.session {
        case .incremental(let snapshot):
            response.sessionId = snapshot.sessionID
            self.broker.fetchSessions.answered(snapshot, noted, lastWithRecords: lastWithRecords)
        case .full:
            response.sessionId =
                self.broker.fetchSessions.open(opening, byID: byID, now: FileSystem.monotonicMilliseconds()) ?? 0
        case .sessionless, .failed:
            response.sessionId = 0
        }
        var fileRecords: [KafkaFrame.FileRecords?] = []
        for (index, (target, data, file)) in included.enumerated() {
            if let file {
                if fileRecords.isEmpty { fileRecords = Array(repeating: nil, count: included.count) }
                fileRecords[index] = file
            }
            if let last = response.responses.last, last.topic == target.topicName, last.topicId == target.topicID {
                response.responses[response.responses.count - 1].partitions.append(data)
            } else {
                var topic = FetchResponse.FetchableTopicResponse()
                topic.topic = target.topicName
                topic.topicId = target.topicID
                topic.partitions = [data]
                response.responses.append(topic)
            }
        }
        if self.context.apiVersion >= 16,
            included.contains(where: { LeaderHints.applies(to: $0.1.errorCode, fetching: true) })
        {
            response.addLeaderHints(LeaderHints(self.broker))
        }
        return (response, fileRecords, reservations)
    }
}

@available(*, unavailable)
extension FetchOperation: Sendable {}

extension SegmentSpan {
    /// The span as a file region NIO writes with `sendfile`, and the lease that keeps the
    /// segment's file open until then. The region's `NIOFileHandle` shares the segment's
    /// descriptor rather than a `dup` of it (no system call per fetch); the lease gives it
    /// back, unclosed, when released.
    func fileRecords() -> KafkaFrame.FileRecords {
        let lease = Lease(self.file)
        let end = self.position + self.length
        return KafkaFrame.FileRecords(
            region: FileRegion(fileHandle: lease.handle, readerIndex: self.position, endIndex: end), lease: lease)
    }

    private final class Lease: Sendable {
        let file: FileHandle
        let handle: NIOFileHandle

        init(_ file: FileHandle) {
            self.file = file
            self.handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: file.descriptor)
        }

        deinit {
            // The descriptor is `file`'s, closed when the segment's last holder lets it go.
            do {
                _ = try self.handle.takeDescriptorOwnership()
            } catch {
                preconditionFailure("a segment's file region was released while in use: \(error)")
            }
        }
    }
}

extension FetchResponse {
    /// Bytes of the record data copied into the frame (batches under `KafkaFrame.spliceBytesMin`)
    /// plus room for each topic's and partition's fields, so the encoder sizes its buffer once.
    var encodedSizeHint: Int {
        self.responses.reduce(0) {
            $0 + 64 + $1.topic.utf8.count
                + $1.partitions.reduce(0) {
                    let records = $1.records?.readableBytes ?? 0
                    return $0 + 64 + (records < KafkaFrame.spliceBytesMin ? records : 0)
                }
        }
    }
}
