import HashTreeCollections
import KafkaProtocol
import Logging
import NIOCore
import RafkaClient
import RafkaCore
import RafkaStorage

/// A data node's side of partition ownership on the ring: after each metadata image it serves
/// the partitions it leads under `PartitionPlacement` and stops serving the others; a partition
/// it starts leading is first taken over from the node that held it.
///
/// Taking over a partition at ring epoch E:
/// 1. Ask the next serving nodes clockwise of the partition (where an earlier leader's copy can
///    be) for their copies (`PartitionHandoffRequest`). Each answers once its own image is at E —
///    so it stopped taking writes for the partition — with its copy's leader epoch and offsets.
/// 2. The newest copy (highest leader epoch, then longest) wins. If it is not this node's own,
///    this node's copy is replaced by one filled with follower fetches up to the end the holder
///    gave, and made durable.
/// 3. Record the partition's leader epoch under E (E itself, when E's change moved it here) with
///    the copy, serve it, and tell the holders to delete theirs.
///
/// Until step 3, a client's produce or fetch of the partition waits for it here (for up to
/// `ReplicaManager.arrivalWaitMax` from the takeover's start; later ones get
/// NOT_LEADER_OR_FOLLOWER, and the client retries). A newer image cancels a takeover still under
/// way and starts it again under the new placement.
actor PartitionMover {
    private let me: NodeID
    private let replicas: ReplicaManager
    private let topicDefaults: [String: String]
    private let logger: Logger
    private var image = MetadataImage(clusterID: "")
    private var placement = PartitionPlacement(image: MetadataImage(clusterID: ""))
    /// Takeovers under way, with the ring epoch each started under.
    private var takeovers: [TopicPartition: (epoch: Int64, topicID: KafkaUUID, task: Task<Void, Never>)] = [:]
    private var connections: [NodeID: KafkaConnection] = [:]
    /// Set by `close`: nothing connects to other nodes any more (a holder's release still on its
    /// way is dropped; the holder deletes its copy when a later takeover releases it).
    private var closed = false
    /// How many earlier holders to ask: more than the nodes that can join between a partition's
    /// key and its previous leader in one step.
    static let holdersAsked = 8
    /// Takeovers that copy at once.
    static let concurrentTakeovers = 8
    /// While joining: copies under way, those done, and when copying began.
    private var precopies: [TopicPartition: (leader: NodeID, task: Task<Void, Never>)] = [:]
    private var precopied: Set<TopicPartition> = []
    private var joinStarted: ContinuousClock.Instant?
    private var reportedCaughtUp = false
    /// Copies a leaving node asked for (`copyAhead`), by partition.
    private var copiesAhead: [TopicPartition: Task<String?, Never>] = [:]
    /// This node is leaving too: it copies nothing ahead for others (a whole cluster stopping
    /// would otherwise copy its data around before each node exits).
    private var leaving = false
    /// After this long a joining node asks to be placed even with copies unfinished (their
    /// takeovers copy the rest).
    static let joinCopyTimeout = Duration.seconds(60)
    /// Tells the controllers this joining node has caught up.
    private var onCaughtUp: (@Sendable () async -> Void)?
    private var uncleanByDefault: Bool { self.topicDefaults["unclean.leader.election.enable"] == "true" }

    func reportCaughtUp(through report: @escaping @Sendable () async -> Void) {
        self.onCaughtUp = report
    }

    init(me: NodeID, replicas: ReplicaManager, topicDefaults: [String: String], logger: Logger) {
        self.me = me
        self.replicas = replicas
        self.topicDefaults = topicDefaults
        self.logger = logger
    }

    // MARK: Following the image

    /// The partitions this node leads under `placement`.
    nonisolated func led(under image: MetadataImage, placement: PartitionPlacement) -> Set<TopicPartition> {
        var led: Set<TopicPartition> = []
        for topic in image.topics.values {
            for partition in 0..<topic.partitionCount where placement.leader(of: topic, partition: partition) == .node(self.me) {
                led.insert(TopicPartition(topic.name, partition))
            }
        }
        return led
    }

    /// Marks the partitions of `led` this node does not serve yet as arriving
    /// (`ReplicaManager.expectArrival`), before the image is published: a client sent here by
    /// a node that published it first waits for the takeover `follow` then starts, instead of
    /// being turned away.
    nonisolated func expectArrivals(_ led: Set<TopicPartition>) {
        for tp in led where self.replicas.shell(for: tp) == nil { self.replicas.expectArrival(tp) }
    }

    /// Serves what this node leads under `image` (`led`, if the caller has it), stops serving
    /// the rest, and starts takeovers. Returns once every partition this node no longer leads
    /// has stopped taking writes.
    func follow(_ image: MetadataImage, placement: PartitionPlacement, led known: Set<TopicPartition>? = nil) {
        guard image.offset >= self.image.offset else { return }
        // Only membership and topics move partitions (most metadata changes do neither).
        let unchanged = image.ringEpoch == self.image.ringEpoch && image.topics == self.image.topics
        let previous = self.placement
        self.image = image
        self.placement = placement
        if unchanged { return }
        let led = known ?? self.led(under: image, placement: placement)
        for tp in self.replicas.served {
            guard led.contains(tp), let topic = image.topics[tp.topic] else {
                self.replicas.retire(tp)
                self.logger.info("stopped serving a partition another node leads now", metadata: ["partition": "\(tp)", "ringEpoch": "\(image.ringEpoch)"])
                continue
            }
            let epoch = placement.leaderEpoch(of: topic, partition: tp.partition)
            if epoch != previous.leaderEpoch(of: topic, partition: tp.partition) {
                do {
                    try self.replicas.restamp(tp, leaderEpoch: epoch)
                } catch {
                    self.replicas.takeOffline(tp, reason: "recording leader epoch \(epoch) failed: \(error)")
                }
            }
        }
        var replaced: [TopicPartition: Task<Void, Never>] = [:]
        for (tp, takeover) in self.takeovers
        where !led.contains(tp) || takeover.epoch != image.ringEpoch || takeover.topicID != image.topics[tp.topic]?.id {
            takeover.task.cancel()
            replaced[tp] = takeover.task
            self.takeovers[tp] = nil
            if !led.contains(tp) { self.replicas.endArrival(tp) }
        }
        for tp in led where self.replicas.shell(for: tp) == nil && self.takeovers[tp] == nil {
            guard let topic = image.topics[tp.topic] else { continue }
            let epoch = image.ringEpoch
            let previous = replaced[tp]
            // A copy made ahead of a leave stops; the takeover goes on from it.
            let ahead = self.copiesAhead.removeValue(forKey: tp)
            ahead?.cancel()
            let task = Task {
                // Never two takeovers (or copies) of one partition at once: the cancelled one ends first.
                await previous?.value
                _ = await ahead?.value
                await self.takeOver(topic: topic, partition: tp.partition, epoch: epoch)
            }
            self.takeovers[tp] = (epoch, topic.id, task)
            self.replicas.expectArrival(tp)
        }
        // Marked by `expectArrivals` but not taken over after all (a partition served by now).
        self.replicas.endArrivals(except: Set(self.takeovers.keys))
        self.prepareJoin()
    }

    // MARK: Joining

    /// While this node is joining: copies every partition it will lead from its current leader
    /// (follower fetches, nothing changes there), then tells the controllers it has caught up.
    /// Once placed, the takeover only copies what was written since.
    private func prepareJoin() {
        guard let mine = self.image.nodes[self.me], mine.joining, !mine.fenced else {
            for precopy in self.precopies.values { precopy.task.cancel() }
            self.precopies = [:]
            self.precopied = []
            self.joinStarted = nil
            self.reportedCaughtUp = false
            return
        }
        let future = PartitionPlacement(image: self.image, uncleanByDefault: self.uncleanByDefault, activating: self.me)
        var wanted: [TopicPartition: (TopicMetadata, NodeID)] = [:]
        for topic in self.image.topics.values {
            for partition in 0..<topic.partitionCount where future.leader(of: topic, partition: partition) == .node(self.me) {
                // Only a partition with a leader now has something to copy.
                if case .node(let leader) = self.placement.leader(of: topic, partition: partition) {
                    wanted[TopicPartition(topic.name, partition)] = (topic, leader)
                }
            }
        }
        for (tp, precopy) in self.precopies where wanted[tp]?.1 != precopy.leader {
            precopy.task.cancel()
            self.precopies[tp] = nil
        }
        self.precopied.formIntersection(wanted.keys)
        for (tp, (topic, leader)) in wanted where self.precopies[tp] == nil && !self.precopied.contains(tp) {
            self.precopies[tp] = (leader, Task { await self.precopy(topic: topic, partition: tp.partition, from: leader) })
        }
        self.joinStarted = self.joinStarted ?? .now
        self.reportIfCaughtUp()
    }

    private func precopy(topic: TopicMetadata, partition: Int32, from leader: NodeID) async {
        let tp = TopicPartition(topic.name, partition)
        let copied = await self.untilDone("copying a partition before joining", tp) {
            try await self.copyServed(topic: topic, partition: partition, from: leader)
        }
        guard copied, self.precopies[tp]?.leader == leader else { return }
        self.precopies[tp] = nil
        self.precopied.insert(tp)
        self.reportIfCaughtUp()
    }

    /// Copies the partition `leader` serves into a copy this node holds (going on from what an
    /// earlier copy of the same leadership left), up to where the leader's log was when asked;
    /// nothing changes at the leader. The takeover that follows copies only what came since.
    private func copyServed(topic: TopicMetadata, partition: Int32, from leader: NodeID) async throws {
        let tp = TopicPartition(topic.name, partition)
        let config = try self.config(for: topic)
        let peek = PartitionHandoffRequest(
            fromNode: self.me.rawValue, ringEpoch: 0, topicID: topic.id, topic: topic.name, partition: partition, release: false,
            peek: true)
        let answer = try await self.send(peek, to: leader)
        guard answer.errorCode == 0 else {
            throw BrokerError(KafkaErrorCode(rawValue: answer.errorCode), answer.errorMessage)
        }
        try Task.checkCancellation()
        let copy = try await self.resumableCopy(topic: topic, partition: partition, config: config, of: answer)
        try Task.checkCancellation()
        try self.replicas.recordCopyOf(tp, leaderEpoch: answer.leaderEpoch)
        try await self.copy(tp, topicID: topic.id, from: leader, into: copy, startingAt: answer.logStartOffset, through: answer.logEndOffset)
    }

    // MARK: Copying ahead of a leave

    /// Before this node leaves the ring (controlled shutdown): asks the node that will lead each
    /// partition it serves once it has left to copy it now (`PartitionCopyAheadRequest`), and
    /// waits for them, at most `limit`. Returns how many it asked and how many copied.
    func copyAheadOfLeaving(within limit: TimeAmount) async -> (asked: Int, copied: Int) {
        self.leaving = true
        for copy in self.copiesAhead.values { copy.cancel() }
        let placement = PartitionPlacement(image: self.image, uncleanByDefault: self.uncleanByDefault, leaving: self.me)
        var asks: [(node: NodeID, request: PartitionCopyAheadRequest)] = []
        for tp in self.replicas.served {
            guard let topic = self.image.topics[tp.topic], case .node(let next) = placement.leader(of: topic, partition: tp.partition),
                next != self.me
            else { continue }
            asks.append((next, PartitionCopyAheadRequest(fromNode: self.me.rawValue, topicID: topic.id, topic: topic.name, partition: tp.partition)))
        }
        let copied = await withTaskGroup(of: Bool.self) { group in
            for (node, request) in asks {
                group.addTask { (try? await self.send(request, to: node, timeout: limit))?.errorCode == 0 }
            }
            var copied = 0
            for await done in group where done { copied += 1 }
            return copied
        }
        return (asks.count, copied)
    }

    /// A node about to leave asks for a partition it serves to be copied here now. One attempt,
    /// in a copying slot; a partition this node serves or is taking over already needs none. A
    /// takeover that starts meanwhile cancels the copy and goes on from where it got.
    func copyAhead(_ request: PartitionCopyAheadRequest) async -> PartitionCopyAheadResponse {
        guard let topic = self.image.topics[request.topic], topic.id == request.topicID, request.partition < topic.partitionCount else {
            return PartitionCopyAheadResponse(errorCode: KafkaErrorCode.unknownTopicOrPartition.rawValue, errorMessage: "no such partition here")
        }
        let tp = TopicPartition(topic.name, request.partition)
        if self.replicas.shell(for: tp) != nil || self.takeovers[tp] != nil { return PartitionCopyAheadResponse() }
        guard !self.leaving else {
            return PartitionCopyAheadResponse(errorCode: KafkaErrorCode.brokerNotAvailable.rawValue, errorMessage: "this node is leaving too")
        }
        let leaving = NodeID(request.fromNode)
        let future = PartitionPlacement(image: self.image, uncleanByDefault: self.uncleanByDefault, leaving: leaving)
        guard self.precopies[tp] == nil, future.leader(of: topic, partition: request.partition) == .node(self.me)
        else {
            return PartitionCopyAheadResponse(
                errorCode: KafkaErrorCode.notLeaderOrFollower.rawValue, errorMessage: "this node will not lead \(tp) when node \(leaving) leaves")
        }
        let task =
            self.copiesAhead[tp]
            ?? Task { () -> String? in
                // Slots of their own, so that a leave's copies never hold up takeovers.
                await self.acquireSlot(.copiesAhead)
                defer { self.releaseSlot(.copiesAhead) }
                guard !Task.isCancelled else { return "cancelled" }
                do {
                    try await self.copyServed(topic: topic, partition: request.partition, from: leaving)
                    return nil
                } catch {
                    return "\(error)"
                }
            }
        self.copiesAhead[tp] = task
        let failure = await task.value
        if self.copiesAhead[tp] == task { self.copiesAhead[tp] = nil }
        if task.isCancelled { return PartitionCopyAheadResponse(errorCode: KafkaErrorCode.brokerNotAvailable.rawValue, errorMessage: "cancelled") }
        guard let failure else {
            self.logger.info("copied a partition ahead of its leader's leave", metadata: ["partition": "\(tp)", "leader": "\(leaving)"])
            return PartitionCopyAheadResponse()
        }
        self.logger.notice("could not copy a partition ahead of its leader's leave", metadata: ["partition": "\(tp)", "reason": "\(failure)"])
        return PartitionCopyAheadResponse(errorCode: KafkaErrorCode.unknownServerError.rawValue, errorMessage: failure)
    }

    /// This node's copy to continue filling from `holder`'s answer: the one it has if that is a
    /// prefix of the holder's (copied from the same leadership, within the holder's log),
    /// else a fresh one.
    private func resumableCopy(
        topic: TopicMetadata, partition: Int32, config: LogConfig, of holder: PartitionHandoffResponse
    ) async throws -> PartitionShell {
        let tp = TopicPartition(topic.name, partition)
        if let own = try await self.replicas.heldCopy(topic: topic, partition: partition, config: config),
            self.replicas.leaderEpoch(of: tp) == -1, self.replicas.copyOf(tp) == holder.leaderEpoch
        {
            let offsets = try await own.offsets().get()
            if offsets.highWatermark <= holder.logEndOffset && offsets.highWatermark >= holder.logStartOffset {
                return own
            }
        }
        return try await self.replicas.openHeld(topic: topic, partition: partition, config: config, fresh: true)
    }

    private func reportIfCaughtUp() {
        guard !self.reportedCaughtUp, let started = self.joinStarted else { return }
        let timedOut = ContinuousClock.now - started > Self.joinCopyTimeout
        guard self.precopies.isEmpty || timedOut, let caughtUp = self.onCaughtUp else { return }
        self.reportedCaughtUp = true
        if timedOut && !self.precopies.isEmpty {
            self.logger.warning("joining with partitions still being copied", metadata: ["partitions": "\(self.precopies.count)"])
        } else {
            self.logger.info("copied every partition this node will lead; asking to be placed", metadata: ["partitions": "\(self.precopied.count)"])
        }
        Task { await caughtUp() }
    }

    private func config(for topic: TopicMetadata) throws -> LogConfig {
        try LogConfig(overrides: topic.configs, defaults: self.topicDefaults)
    }

    // MARK: Taking over

    private func takeOver(topic: TopicMetadata, partition: Int32, epoch: Int64) async {
        _ = await self.untilDone("taking over a partition", TopicPartition(topic.name, partition)) {
            try await self.attemptTakeover(topic: topic, partition: partition, epoch: epoch)
        }
    }

    /// Runs `attempt` (in one of the copying slots) until it succeeds (true) or the task is
    /// cancelled (false), backing off and saying now and then why it waits. While joining, a copy
    /// that keeps failing does not hold the join past its timeout.
    private func untilDone(_ what: String, _ tp: TopicPartition, _ attempt: () async throws -> Void) async -> Bool {
        await self.acquireSlot()
        defer { self.releaseSlot() }
        var failures = 0
        while !Task.isCancelled {
            do {
                try await attempt()
                return true
            } catch {
                if Task.isCancelled { return false }
                failures += 1
                if failures == 1 || failures % 20 == 0 {
                    self.logger.notice("\(what) is waiting", metadata: ["partition": "\(tp)", "reason": "\(error)"])
                }
                self.reportIfCaughtUp()
                try? await Task.sleep(for: .milliseconds(min(50 * failures, 500)))
            }
        }
        return false
    }

    private struct Holder {
        var node: NodeID
        var answer: PartitionHandoffResponse
    }

    private func attemptTakeover(topic: TopicMetadata, partition: Int32, epoch: Int64) async throws {
        let tp = TopicPartition(topic.name, partition)
        let config = try self.config(for: topic)
        let asked = self.placement.nodes(after: self.me, topic: topic, partition: partition, count: Self.holdersAsked)
        let request = PartitionHandoffRequest(
            fromNode: self.me.rawValue, ringEpoch: epoch, topicID: topic.id, topic: topic.name, partition: partition, release: false)
        var holders: [Holder] = []
        var partial = false
        for node in asked {
            let answer = try await self.send(request, to: node)
            if answer.errorCode != 0 {
                throw BrokerError(KafkaErrorCode(rawValue: answer.errorCode), "node \(node): \(answer.errorMessage ?? "")")
            }
            guard answer.hasCopy else { continue }
            // A copy its node never served (made while joining, ahead of a leave, or by a
            // takeover cut short) may lack the tail of the leadership it came from: it counts
            // only if the topic allows an unclean takeover.
            if answer.leaderEpoch < 0 && !self.placement.allowsUnclean(topic) {
                partial = true
                continue
            }
            holders.append(Holder(node: node, answer: answer))
        }
        try Task.checkCancellation()
        let own = try await self.replicas.heldCopy(topic: topic, partition: partition, config: config)
        let ownEpoch = self.replicas.leaderEpoch(of: tp)
        let ownEnd = try await own?.offsets().get().highWatermark ?? -1
        let newest = holders.max { ($0.answer.leaderEpoch, $0.answer.logEndOffset) < ($1.answer.leaderEpoch, $1.answer.logEndOffset) }
        if newest == nil && partial && (own == nil || ownEpoch < 0) {
            throw BrokerError(.leaderNotAvailable, "\(tp): only copies never served are left and their source does not answer")
        }
        if let newest, own == nil || (newest.answer.leaderEpoch, newest.answer.logEndOffset) > (ownEpoch, ownEnd) {
            // A copy made while joining or ahead of a leave goes on from where it is; any other is replaced.
            let copy = try await self.resumableCopy(topic: topic, partition: partition, config: config, of: newest.answer)
            // Recorded first, so that a takeover cancelled midway can go on from this copy.
            try self.replicas.recordCopyOf(tp, leaderEpoch: newest.answer.leaderEpoch)
            try await self.copy(
                tp, topicID: topic.id, from: newest.node, into: copy, startingAt: newest.answer.logStartOffset,
                through: newest.answer.logEndOffset)
            self.logger.info(
                "took over a partition from its previous leader",
                metadata: [
                    "partition": "\(tp)", "from": "\(newest.node)", "offsets": "\(newest.answer.logStartOffset)..<\(newest.answer.logEndOffset)",
                    "ringEpoch": "\(epoch)",
                ])
        } else if own == nil {
            _ = try await self.replicas.openHeld(topic: topic, partition: partition, config: config, fresh: true)
        } else if ownEpoch < 0 && newest == nil && !self.placement.allowsUnclean(topic) {
            // Only a partly filled copy is left here, and its source is gone (fenced, or it
            // stopped mid-handover): serving it would lose what it misses. Wait for the source.
            throw BrokerError(.leaderNotAvailable, "\(tp): only a partial copy is left and its source does not answer")
        }
        // Serve only if this takeover is still the current one (a newer image may have moved
        // the partition on while it copied).
        guard self.takeovers[tp]?.epoch == epoch, !Task.isCancelled else { throw CancellationError() }
        try self.replicas.serve(tp, leaderEpoch: self.placement.leaderEpoch(of: topic, partition: partition))
        self.takeovers[tp] = nil
        // The holders drop their copies on their own time: the copying slot goes to the next
        // takeover, whose clients may be waiting for it.
        var release = request
        release.release = true
        Task { [holders] in
            for holder in holders { _ = try? await self.send(release, to: holder.node) }
        }
    }

    /// Fills `copy` (empty) from `node`'s copy with follower fetches, up to `end`, then syncs it.
    private func copy(
        _ tp: TopicPartition, topicID: KafkaUUID, from node: NodeID, into copy: PartitionShell, startingAt start: Int64, through end: Int64
    ) async throws {
        // An empty copy starts at the holder's log start (retention may have removed the rest).
        var next = max(try await copy.offsets().get().highWatermark, start)
        while next < end {
            try Task.checkCancellation()
            var fetch = FetchRequest()
            fetch.replicaId = self.me.rawValue
            fetch.maxBytes = Int32(Limits.fetchResponseBytesMax)
            var topic = FetchRequest.FetchTopic()
            topic.topic = tp.topic
            topic.topicId = topicID
            topic.partitions = [.init(partition: tp.partition, fetchOffset: next, partitionMaxBytes: Int32(Limits.fetchResponseBytesMax))]
            fetch.topics = [topic]
            let response = try await self.send(fetch, to: node, version: 12)
            guard let data = response.responses.first?.partitions.first else {
                throw BrokerError(.unknownServerError, "node \(node) answered a fetch of \(tp) without it")
            }
            guard data.errorCode == 0 else {
                throw BrokerError(KafkaErrorCode(rawValue: data.errorCode), "copying \(tp) from node \(node) at offset \(next)")
            }
            let batches = try RecordBatch.split(data.records ?? ByteBuffer(), allowPartialTail: true).map { header, bytes in
                try RecordBatch.validateHeader(header, bytes: bytes)
                return ValidatedBatch(header: header, bytes: bytes)
            }
            let wanted = batches.filter { $0.header.baseOffset < end }
            guard !wanted.isEmpty else {
                throw BrokerError(.unknownServerError, "node \(node) sent nothing for \(tp) at offset \(next) (its end is \(end))")
            }
            try Task.checkCancellation()  // a cancelled copy writes nothing more
            _ = try await copy.appendReplicated(wanted).get()
            next = wanted.last!.header.nextOffset
        }
        try await copy.flush().get()
    }

    // MARK: Holding

    /// A new leader asks for this node's copy (see the type's description).
    func handOff(_ request: PartitionHandoffRequest) async -> PartitionHandoffResponse {
        // The newest image this node follows: it serves nothing it does not lead under it.
        let image = self.image
        guard image.ringEpoch >= request.ringEpoch else {
            return PartitionHandoffResponse(
                errorCode: KafkaErrorCode.unknownLeaderEpoch.rawValue,
                errorMessage: "this node is at ring epoch \(image.ringEpoch), behind \(request.ringEpoch)")
        }
        guard let topic = image.topics[request.topic], topic.id == request.topicID, request.partition < topic.partitionCount else {
            return PartitionHandoffResponse(errorCode: KafkaErrorCode.unknownTopicOrPartition.rawValue, errorMessage: "no such partition here")
        }
        let tp = TopicPartition(topic.name, request.partition)
        if request.peek {
            guard let shell = self.replicas.shell(for: tp) else {
                return PartitionHandoffResponse(errorCode: KafkaErrorCode.notLeaderOrFollower.rawValue, errorMessage: "\(tp) is not served here")
            }
            do {
                let offsets = try await shell.offsets().get()
                return PartitionHandoffResponse(
                    hasCopy: true, leaderEpoch: self.replicas.leaderEpoch(of: tp), logStartOffset: offsets.logStart,
                    logEndOffset: offsets.highWatermark)
            } catch {
                return PartitionHandoffResponse(errorCode: KafkaErrorCode.kafkaStorageError.rawValue, errorMessage: "\(error)")
            }
        }
        if self.placement.leader(of: topic, partition: request.partition) == .node(self.me) {
            return PartitionHandoffResponse(
                errorCode: KafkaErrorCode.fencedLeaderEpoch.rawValue, errorMessage: "this node leads \(tp) at ring epoch \(image.ringEpoch)")
        }
        if request.release {
            // Only the partition's leader (under this node's image) may have its copy dropped.
            guard self.placement.leader(of: topic, partition: request.partition) == .node(NodeID(request.fromNode)) else {
                return PartitionHandoffResponse(
                    errorCode: KafkaErrorCode.notLeaderOrFollower.rawValue, errorMessage: "node \(request.fromNode) does not lead \(tp)")
            }
            if let ahead = self.copiesAhead.removeValue(forKey: tp) {
                ahead.cancel()
                _ = await ahead.value
            }
            await self.replicas.dropCopy(tp)
            self.logger.info("deleted a partition copy its new leader took over", metadata: ["partition": "\(tp)", "leader": "\(request.fromNode)"])
            return PartitionHandoffResponse()
        }
        do {
            guard let copy = try await self.replicas.heldCopy(topic: topic, partition: request.partition, config: self.config(for: topic)) else {
                return PartitionHandoffResponse()
            }
            // Every acknowledged append is within the end given: none lands after this.
            try await copy.stopWrites().get()
            let offsets = try await copy.offsets().get()
            return PartitionHandoffResponse(
                hasCopy: true, leaderEpoch: self.replicas.leaderEpoch(of: tp), logStartOffset: offsets.logStart,
                logEndOffset: offsets.highWatermark)
        } catch {
            return PartitionHandoffResponse(errorCode: KafkaErrorCode.kafkaStorageError.rawValue, errorMessage: "\(error)")
        }
    }

    // MARK: Peers

    private func send<Request: KafkaRequestWithResponse>(
        _ request: Request, to node: NodeID, version: Int16? = nil, timeout: TimeAmount = .seconds(10)
    ) async throws -> Request.Response {
        guard !self.closed else { throw BrokerError(.brokerNotAvailable, "this node is stopping") }
        let connection: KafkaConnection
        if let open = self.connections[node], open.isActive {
            connection = open
        } else {
            guard let registration = self.image.nodes[node] else { throw BrokerError(.brokerNotAvailable, "node \(node) is not registered") }
            let fresh = try await KafkaConnection.connect(
                host: registration.host, port: Int(registration.port), clientID: "rafka-node-\(self.me)", connectTimeout: .seconds(2))
            if let raced = self.connections[node], raced.isActive {
                // Another copy connected meanwhile: share its connection.
                fresh.close()
                connection = raced
            } else {
                self.connections[node] = fresh
                connection = fresh
            }
        }
        do {
            return try await connection.send(request, version: version ?? 0, timeout: timeout)
        } catch {
            connection.close()
            if self.connections[node] === connection { self.connections[node] = nil }
            throw error
        }
    }

    func close() {
        self.closed = true
        for precopy in self.precopies.values { precopy.task.cancel() }
        self.precopies = [:]
        for copy in self.copiesAhead.values { copy.cancel() }
        self.copiesAhead = [:]
        for takeover in self.takeovers.values { takeover.task.cancel() }
        self.takeovers = [:]
        self.replicas.endArrivals()
        for connection in self.connections.values { connection.close() }
        self.connections = [:]
    }

    /// Copying slots: takeovers (and a joining node's copies) share `concurrentTakeovers`; copies
    /// ahead of a leave have `concurrentCopiesAhead` of their own, so that they never hold a
    /// takeover up.
    private enum SlotPool {
        case takeovers, copiesAhead
        var size: Int { self == .takeovers ? PartitionMover.concurrentTakeovers : PartitionMover.concurrentCopiesAhead }
    }

    static let concurrentCopiesAhead = 4
    private var slots: [SlotPool: (running: Int, waiting: [CheckedContinuation<Void, Never>])] = [:]

    private func acquireSlot(_ pool: SlotPool = .takeovers) async {
        guard self.slots[pool, default: (0, [])].running >= pool.size else {
            self.slots[pool, default: (0, [])].running += 1
            return
        }
        // Woken by `releaseSlot`, which hands its slot over: `running` stays as it is, so no
        // acquirer that comes in before this one resumes can take the slot as well.
        await withCheckedContinuation { self.slots[pool, default: (0, [])].waiting.append($0) }
    }

    private func releaseSlot(_ pool: SlotPool = .takeovers) {
        if self.slots[pool]?.waiting.isEmpty == false {
            self.slots[pool]!.waiting.removeFirst().resume()
        } else {
            self.slots[pool, default: (0, [])].running -= 1
        }
        assert(self.slots[pool, default: (0, [])].running <= pool.size, "more copies than slots")
    }
}
