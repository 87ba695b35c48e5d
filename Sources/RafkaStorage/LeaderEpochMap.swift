import ChordCore
import RafkaCore

/// Every partition's leader epoch, as part of the metadata image: for each stretch of the ring,
/// the ring epoch at which the leadership of the keys there last changed. A partition's leader
/// epoch is the value at its key.
///
/// A join, a leave or a fencing changes who leads only the arcs next to that node's tokens, so
/// only the partitions in them get a new epoch: a consumer of any other partition keeps its
/// epoch, and is not fenced (FENCED_LEADER_EPOCH, a metadata refresh and an OffsetForLeaderEpoch
/// check) by a move elsewhere on the ring, as Kafka's per-partition epochs spare it too.
///
/// It is computed from the metadata log alone, the same on every node: applying a membership
/// change compares who leads each stretch before and after (`recordChanges`). "Who leads" is
/// the first placed node clockwise with its incarnation (a restarted leader is a new
/// leadership, as Kafka bumps the epoch when a broker comes back), and for a fenced one also
/// the serving node that would stand in for it (a topic that allows an unclean takeover is led
/// by it). Epochs only grow: each stretch either keeps its epoch or gets the new ring epoch, and
/// when the map grows past its bound the oldest epochs are raised to the next oldest
/// (`coarsen`), which fences those partitions once and never lowers an epoch. Tracking starts
/// at the metadata log's `trackLeaderEpochs` entry, with every key at the ring epoch.
///
/// ```
///  ring: 0 ─────── end₀ ─────── end₁ ───── … ───── UInt64.max
///  epoch:    e₀            e₁                 eₙ
///  a join at ring epoch E:  the arcs the newcomer takes get E; the rest keep theirs
/// ```
public struct LeaderEpochMap: Sendable, Equatable {
    /// The keys after the previous arc's end (from 0 for the first) through `end` have `epoch`.
    public struct Arc: Sendable, Equatable {
        public var end: RingPosition
        public var epoch: Int64

        public init(end: RingPosition, epoch: Int64) {
            self.end = end
            self.epoch = epoch
        }
    }

    /// Sorted by `end`, strictly; the last ends at the ring's last position; neighbours differ
    /// in epoch.
    public private(set) var arcs: [Arc]

    /// Every key at `epoch` (a new cluster at 0, an image from before this map at its ring epoch).
    public init(uniform epoch: Int64) {
        self.arcs = [Arc(end: RingPosition(UInt64.max), epoch: epoch)]
    }

    /// A map read back from a snapshot; nil if `arcs` is not one (unsorted, empty, or not
    /// reaching the ring's end).
    public init?(arcs: [Arc]) {
        guard let last = arcs.last, last.end.rawValue == UInt64.max,
            zip(arcs, arcs.dropFirst()).allSatisfy({ $0.end < $1.end })
        else { return nil }
        self.arcs = []
        for arc in arcs { self.append(arc) }
    }

    /// The leader epoch of the partition whose key is `key`.
    public func epoch(at key: RingPosition) -> Int64 {
        var low = 0
        var high = self.arcs.count - 1
        while low < high {
            let middle = (low + high) / 2
            if self.arcs[middle].end < key { low = middle + 1 } else { high = middle }
        }
        return self.arcs[low].epoch
    }

    /// Gives `epoch` to the keys whose leadership differs between `before` and `after` (the
    /// image before and after one membership change), then bounds the map to `arcsMax` arcs.
    mutating func recordChanges(from before: MetadataImage, to after: MetadataImage, epoch: Int64, arcsMax: Int) {
        let old = Leadership(before)
        let new = Leadership(after)
        guard old != new else { return }
        let changed = Leadership.changedArcs(from: old, to: new)
        guard changed.contains(where: \.changed) else { return }
        // Merges the two partitions of the ring: each piece takes the new epoch if it changed.
        var merged = LeaderEpochMap(uniform: 0)
        merged.arcs = []
        merged.arcs.reserveCapacity(self.arcs.count + changed.count)
        var (i, j) = (0, 0)
        while true {
            let end = min(self.arcs[i].end, changed[j].end)
            merged.append(Arc(end: end, epoch: changed[j].changed ? epoch : self.arcs[i].epoch))
            if end.rawValue == UInt64.max { break }
            if self.arcs[i].end == end { i += 1 }
            if changed[j].end == end { j += 1 }
        }
        assert(merged.arcs.allSatisfy { arc in arc.epoch >= self.epoch(at: arc.end) }, "leader epochs only grow")
        self = merged
        // To three quarters: room for the next changes before raising old epochs again.
        if self.arcs.count > arcsMax { self.coarsen(toAtMost: arcsMax * 3 / 4) }
    }

    /// Raises the oldest epochs to the next oldest until at most `arcsMax` arcs remain (the
    /// stretches between nodes that left, each with the epoch it had, would otherwise pile up).
    mutating func coarsen(toAtMost arcsMax: Int) {
        precondition(arcsMax >= 1, "a map has at least one arc")
        while self.arcs.count > arcsMax {
            let oldest = self.arcs.lazy.map(\.epoch).min()!
            guard let next = self.arcs.lazy.map(\.epoch).filter({ $0 > oldest }).min() else { return }
            let before = self.arcs
            self.arcs = []
            for var arc in before {
                if arc.epoch == oldest { arc.epoch = next }
                self.append(arc)
            }
        }
    }

    /// Appends `arc`, merged into the last one when their epochs are equal.
    private mutating func append(_ arc: Arc) {
        if let last = self.arcs.last, last.epoch == arc.epoch {
            self.arcs[self.arcs.count - 1].end = arc.end
        } else {
            self.arcs.append(arc)
        }
    }
}

/// Who leads each stretch of the ring under one image, as far as leader epochs care
/// (`PartitionPlacement.leader` without the topic's unclean setting, which picks between the
/// fenced leader and its stand-in).
private struct Leadership: Equatable {
    /// The placed nodes' tokens (fenced ones keep their place).
    let registered: RingMap
    /// Placed and not fenced: who stands in for a fenced node.
    let serving: RingMap
    let incarnations: [NodeID: Int64]
    let fenced: Set<NodeID>

    init(_ image: MetadataImage) {
        self.registered = image.placementRing
        self.serving = image.ring
        var incarnations: [NodeID: Int64] = [:]
        for entry in self.registered.entries { incarnations[entry.node] = image.nodes[entry.node]?.incarnation }
        self.incarnations = incarnations
        self.fenced = Set(image.nodes.values.filter { $0.fenced && $0.isPlaced }.map(\.id))
    }

    enum Holder: Equatable {
        case none
        case node(NodeID, incarnation: Int64)
        case fenced(NodeID, incarnation: Int64, standIn: NodeID?, standInIncarnation: Int64?)
    }

    /// Walks a ring in key order: the owner of each key asked for is the first token at or
    /// after it, wrapping to the first; keys must be asked for in increasing order.
    private struct Cursor {
        let ring: RingMap
        var index = 0

        mutating func owner(of key: RingPosition) -> NodeID? {
            guard !self.ring.isEmpty else { return nil }
            while self.index < self.ring.entries.count && self.ring.entries[self.index].position < key { self.index += 1 }
            return self.ring.entries[self.index == self.ring.entries.count ? 0 : self.index].node
        }
    }

    private struct Walker {
        let leadership: Leadership
        var registered: Cursor
        var serving: Cursor

        init(_ leadership: Leadership) {
            self.leadership = leadership
            self.registered = Cursor(ring: leadership.registered)
            self.serving = Cursor(ring: leadership.serving)
        }

        mutating func holder(of key: RingPosition) -> Holder {
            guard let first = self.registered.owner(of: key) else { return .none }
            let incarnation = self.leadership.incarnations[first] ?? -1
            let standIn = self.serving.owner(of: key)
            guard self.leadership.fenced.contains(first) else { return .node(first, incarnation: incarnation) }
            return .fenced(
                first, incarnation: incarnation, standIn: standIn, standInIncarnation: standIn.flatMap { self.leadership.incarnations[$0] })
        }
    }

    /// The ring cut at every token of either image, each piece marked with whether its holder
    /// changed; the pieces cover the whole ring in order, the last ending at its last position.
    static func changedArcs(from old: Leadership, to new: Leadership) -> [(end: RingPosition, changed: Bool)] {
        var points = (old.registered.entries + old.serving.entries + new.registered.entries + new.serving.entries).map(\.position)
        points.sort()
        var cuts: [RingPosition] = []
        cuts.reserveCapacity(points.count)
        for point in points where cuts.last != point { cuts.append(point) }
        guard let first = cuts.first else { return [(RingPosition(UInt64.max), false)] }
        var before = Walker(old)
        var after = Walker(new)
        var pieces: [(end: RingPosition, changed: Bool)] = []
        pieces.reserveCapacity(cuts.count + 1)
        // Each piece (previous cut, cut] is held by the owner of its cut in every ring; the keys
        // past the last cut wrap to the first cut's owners.
        var wrapChanged = false
        for cut in cuts {
            let changed = before.holder(of: cut) != after.holder(of: cut)
            if cut == first { wrapChanged = changed }
            pieces.append((cut, changed))
        }
        if cuts.last!.rawValue != UInt64.max { pieces.append((RingPosition(UInt64.max), wrapChanged)) }
        return pieces
    }
}
