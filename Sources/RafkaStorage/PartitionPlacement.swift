import ChordCore
import KafkaProtocol
import RafkaCore

/// Who leads each partition under one metadata image (Chord placement): the first node
/// clockwise of the partition's key among the registered data nodes.
///
/// A fenced node keeps its place on the ring: its partitions are offline until it comes back
/// with a new incarnation — unless the topic sets `unclean.leader.election.enable`, in which
/// case the next serving node clockwise takes them over with what it has (nothing, until
/// replication), as Kafka's unclean election does. A node leaving in a controlled way gives its
/// place up at once: its partitions pass to the next nodes, which copy from it what they did
/// not copy ahead of the leave (`PartitionMover.copyAheadOfLeaving`). A joining
/// node has no place yet: it copies what it will lead first, then the controllers activate it.
///
/// A partition's leader epoch is the ring epoch at which its leader last changed
/// (`LeaderEpochMap`): it only grows, every node computes the same one from its image, and it
/// changes whenever that partition's leader may have, and only then.
public struct PartitionPlacement: Sendable {
    public enum Leader: Sendable, Hashable {
        case node(NodeID)
        /// The first replica is fenced and the topic does not allow an unclean takeover.
        case offline(fencedLeader: NodeID)
        /// No data node is registered yet.
        case none
    }

    public let ringEpoch: Int64
    private let leaderEpochs: LeaderEpochMap?
    /// Every registered node that is not leaving: whose partitions stay theirs.
    private let registered: RingMap
    /// Nodes neither fenced nor leaving: who can take a fenced leader's partitions.
    private let serving: RingMap
    /// Nodes not fenced, leaving ones included: who may hold an earlier leader's copy.
    private let running: RingMap
    private let fenced: Set<NodeID>
    private let uncleanByDefault: Bool

    /// With `activating`, the placement once that joining node is activated: what it will lead.
    /// With `leaving`, the placement once that node has left: who will lead its partitions.
    public init(image: MetadataImage, uncleanByDefault: Bool = false, activating: NodeID? = nil, leaving: NodeID? = nil) {
        self.ringEpoch = image.ringEpoch
        self.leaderEpochs = image.leaderEpochs
        if activating != nil || leaving != nil {
            var future = image
            if let activating { future.nodes[activating]?.joining = false }
            if let leaving { future.nodes[leaving]?.leaving = true }
            self.registered = future.placementRing
            self.serving = future.ring
        } else {
            self.registered = image.placementRing
            self.serving = image.ring
        }
        self.running = image.runningRing
        self.fenced = Set(image.nodes.values.filter(\.fenced).map(\.id))
        self.uncleanByDefault = uncleanByDefault
    }

    /// The leader epoch of `partition` of `topic` (of the image: a placement "as if" a node
    /// joined or left answers as its image does).
    public func leaderEpoch(of topic: TopicMetadata, partition: Int32) -> Int32 {
        guard let map = self.leaderEpochs else { return Int32(clamping: self.ringEpoch) }
        return Int32(clamping: map.epoch(at: Self.key(of: topic, partition: partition)))
    }

    public static func key(of topic: TopicMetadata, partition: Int32) -> RingPosition {
        RingHash.partitionKey(topicID: (topic.id.high, topic.id.low), partition: partition)
    }

    public func leader(of topic: TopicMetadata, partition: Int32) -> Leader {
        guard !self.registered.isEmpty else { return .none }
        let key = Self.key(of: topic, partition: partition)
        let first = self.registered.successor(of: key).node
        guard self.fenced.contains(first) else { return .node(first) }
        guard self.allowsUnclean(topic), !self.serving.isEmpty else { return .offline(fencedLeader: first) }
        return .node(self.serving.successor(of: key).node)
    }

    /// Whether `topic` lets a partition pass on without its fenced leader's records
    /// (`unclean.leader.election.enable`, or the broker default).
    public func allowsUnclean(_ topic: TopicMetadata) -> Bool {
        topic.configs["unclean.leader.election.enable"].map { $0 == "true" } ?? self.uncleanByDefault
    }

    /// Up to `count` distinct running nodes clockwise of the partition's key, `node` left out:
    /// where an earlier leader's copy can be (a join takes arcs from the nodes after it, a
    /// fenced or leaving leader's partitions pass to the next one).
    public func nodes(after node: NodeID, topic: TopicMetadata, partition: Int32, count: Int) -> [NodeID] {
        let ring = self.running
        guard !ring.isEmpty else { return [] }
        let key = Self.key(of: topic, partition: partition)
        var index = ring.successorIndex(of: key)
        var seen: Set<NodeID> = [node]
        var result: [NodeID] = []
        var steps = 0
        while result.count < count && steps < ring.entries.count {
            let next = ring.entries[index].node
            if seen.insert(next).inserted { result.append(next) }
            index = (index + 1) % ring.entries.count
            steps += 1
        }
        return result
    }
}
