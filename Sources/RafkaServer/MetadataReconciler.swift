import HashTreeCollections
import Logging
import RafkaCore
import RafkaStorage

/// Makes this node's partitions match the metadata image, like a KRaft broker applying metadata
/// deltas: new topics and partitions are opened, deleted topics are removed, changed configs are
/// applied. Then it publishes the image to `MetadataCache`, so request handlers never see a
/// topic whose partitions are not open yet. A data node publishes before its `PartitionMover`
/// follows the image (partitions there open through takeovers, which requests wait for).
///
/// Images arrive in log order from the quorum (`submit`); intermediate ones may be skipped,
/// since each pass diffs against the last image reconciled.
actor MetadataReconciler {
    private let replicas: ReplicaManager
    private let cache: MetadataCache
    private let topicDefaults: [String: String]
    /// On a data node, what decides the partitions it serves (the ring); nil in standalone,
    /// which serves every partition.
    let mover: PartitionMover?
    private let logger: Logger
    private var reconciled = MetadataImage(clusterID: "")
    private var waiters: [(offset: LogIndex, continuation: CheckedContinuation<Void, Never>)] = []
    private var finished = false
    private let stream: AsyncStream<MetadataImage>
    private let input: AsyncStream<MetadataImage>.Continuation

    init(replicas: ReplicaManager, cache: MetadataCache, topicDefaults: [String: String], mover: PartitionMover?, logger: Logger) {
        self.mover = mover
        self.replicas = replicas
        self.cache = cache
        self.topicDefaults = topicDefaults
        self.logger = logger
        (self.stream, self.input) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Hands over a newer image (called by the quorum after each applied batch).
    nonisolated func submit(_ image: MetadataImage) {
        self.input.yield(image)
    }

    /// Reconciles images as they come, until cancelled or stopped; then lets every waiter go
    /// (a request still waiting sees the image as it stands).
    func run() async {
        for await image in self.stream {
            await self.reconcile(to: image)
        }
        self.finished = true
        for waiter in self.waiters { waiter.continuation.resume() }
        self.waiters = []
    }

    func stop() {
        self.input.finish()
    }

    /// Returns once the image at `offset` (or later) is reconciled.
    func waitUntilReconciled(_ offset: LogIndex) async {
        // Once stopped, nothing will be reconciled again: a late waiter does not wait forever.
        if self.reconciled.offset >= offset || self.finished { return }
        await withCheckedContinuation { self.waiters.append((offset, $0)) }
    }

    /// Brings partitions in line with `image`, then publishes it.
    func reconcile(to image: MetadataImage) async {
        guard image.offset >= self.reconciled.offset else { return }
        let placement = self.cache.placement(for: image)
        await self.reconcilePartitions(from: self.reconciled, to: image, placement: placement)
        self.reconciled = image
        if self.mover == nil { self.cache.publish(image, placement: placement) }
        let ready = self.waiters.filter { $0.offset <= image.offset }
        self.waiters.removeAll { $0.offset <= image.offset }
        for waiter in ready { waiter.continuation.resume() }
    }

    private func reconcilePartitions(from before: MetadataImage, to image: MetadataImage, placement: PartitionPlacement) async {
        for (name, old) in before.topics where image.topics[name]?.id != old.id {
            await self.replicas.delete(topic: name)
        }
        for topic in image.topics.values.sorted(by: { $0.name < $1.name }) {
            let old = before.topics[topic.name].flatMap { $0.id == topic.id ? $0 : nil }
            guard old != topic else { continue }
            let config: LogConfig
            do {
                config = try LogConfig(overrides: topic.configs, defaults: self.topicDefaults)
            } catch {
                self.logger.error("topic \(topic.name) has an invalid configuration: \(error)")
                continue
            }
            let first = old?.partitionCount ?? 0
            if self.mover == nil && topic.partitionCount > first {
                do {
                    try await self.replicas.open(
                        topic: topic, partitions: first..<topic.partitionCount, config: config, tolerateFailures: true)
                } catch {
                    self.logger.error("opening partitions of \(topic.name) failed: \(error)")
                }
            }
            if let old, old.configs != topic.configs { self.replicas.update(topic: topic.name, config: config) }
        }
        if let mover = self.mover {
            // A data node opens nothing here (takeovers do, and requests wait for them), and
            // publishes first: a client turned away from a partition that moved is then told
            // where it went (`LeaderHints`), not pointed back at this node. What it will take
            // over is marked before, so that a client sent here meanwhile waits for it.
            let moves = image.ringEpoch != before.ringEpoch || image.topics != before.topics
            let led = moves ? mover.led(under: image, placement: placement) : nil
            if let led { mover.expectArrivals(led) }
            self.cache.publish(image, placement: placement)
            await mover.follow(image, placement: placement, led: led)
        }
    }
}
