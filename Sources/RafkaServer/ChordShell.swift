import ChordCore
import HashTreeCollections
import Logging
import RafkaCore
import RafkaStorage

/// A data node's Chord: runs `ChordStateMachine` over the network (one-way frames to the other
/// data nodes' listeners), ticking every `tickMilliseconds`.
///
/// The metadata image is the membership: on every ring epoch the machine is seeded with the
/// ring it implies and told who is fenced or leaving, so routing state is right at once and
/// stabilization keeps it right in between. What the protocol adds is failure suspicion:
/// neighbours ping each other (check-predecessor, the successor list), and a node that stops
/// answering is reported to the controllers with every heartbeat until the image shows it
/// fenced or it answers again. The controllers fence only a node they have not heard from
/// either, so a kill -9 is noticed in a couple of seconds instead of the session timeout. A live
/// node forgotten after a false suspicion is restored by the next seeding (every second).
actor ChordShell {
    static let tickMilliseconds = 100
    private let me: NodeID
    private let links: PeerLinks
    /// Sends suspicions to the controllers (the controller link's heartbeat).
    private var report: @Sendable ([NodeID]) async -> Void = { _ in }
    private let logger: Logger
    private var machine: ChordStateMachine?
    private var image = MetadataImage(clusterID: "")
    /// Nodes this node suspects, reported until fenced or heard from.
    private var suspects: Set<NodeID> = []
    private var ticksSinceReport = 0
    private var ticksSinceSeed = 0
    /// Ticks between seedings from the image: a live node forgotten after a false suspicion
    /// (lost pings, a slow start) is known again within a second.
    static let reseedTicks = 10

    init(me: NodeID, links: PeerLinks, logger: Logger) {
        self.me = me
        self.links = links
        self.logger = logger
    }

    func reportSuspects(through report: @escaping @Sendable ([NodeID]) async -> Void) {
        self.report = report
    }

    /// Hands over a newer image (from the controller link, in any order: older ones are ignored).
    nonisolated func submit(_ image: MetadataImage) {
        Task { await self.follow(image) }
    }

    func follow(_ image: MetadataImage) {
        guard image.offset > self.image.offset, image.ringEpoch != self.image.ringEpoch || self.machine == nil else {
            if image.offset > self.image.offset { self.image = image }
            return
        }
        self.image = image
        var endpoints: [NodeID: Endpoint] = [:]
        for node in image.nodes.values where node.id != self.me {
            endpoints[node.id] = Endpoint(host: node.host, port: node.port)
        }
        self.links.update(endpoints: endpoints)
        guard let mine = image.nodes[self.me], !mine.fenced, mine.isPlaced, !mine.tokens.isEmpty else {
            // Not (or not yet, or no longer) a member: take no part until placed.
            self.machine = nil
            self.suspects = []
            return
        }
        var joining = false
        if self.machine?.tokens != mine.tokens {
            // Request ids start past every earlier incarnation's, so late answers to a previous
            // run are never taken for answers to this one.
            self.machine = ChordStateMachine(node: self.me, tokens: mine.tokens, firstRequestID: UInt64(max(0, mine.incarnation)) << 32)
            joining = true
        }
        for node in image.nodes.values where node.id != self.me {
            if node.fenced || !node.isPlaced { self.machine!.fence(node.id) } else { self.machine!.admit(node.id) }
        }
        let members = image.nodes.values.filter { $0.id != self.me && !$0.fenced && $0.isPlaced }.map(\.id).sorted()
        if joining, let via = members.randomElement() {
            // A new member joins through any live one (Chord §4.4); the next seeding confirms it.
            self.machine!.join(via: via)
            self.ticksSinceSeed = 0
        } else {
            self.machine!.seed(image.ring)
        }
        self.suspects = self.suspects.filter { image.nodes[$0].map { !$0.fenced && $0.isPlaced } ?? false }
        self.drain()
    }

    func receive(_ message: ChordMessage) {
        guard message.to == self.me, self.machine != nil else { return }
        if self.suspects.remove(message.from) != nil {
            self.logger.info("a suspected data node answers again", metadata: ["node": "\(message.from)"])
        }
        self.machine!.receive(message)
        self.drain()
    }

    /// Ticks until cancelled.
    func run() async throws {
        while !Task.isCancelled {
            try await Task.sleep(for: .milliseconds(Self.tickMilliseconds))
            guard self.machine != nil else { continue }
            self.machine!.tick()
            self.ticksSinceSeed += 1
            if self.machine!.needsBootstrap || self.ticksSinceSeed >= Self.reseedTicks {
                self.machine!.seed(self.image.ring)
                self.ticksSinceSeed = 0
            }
            self.drain()
            self.ticksSinceReport += 1
            if !self.suspects.isEmpty && self.ticksSinceReport >= 5 { self.reportSuspects() }
        }
    }

    private func drain() {
        guard self.machine != nil else { return }
        let ready = self.machine!.ready()
        for message in ready.messages {
            self.links.send(to: message.to) { ChordFrames.frame(message, correlationID: $0) }
        }
        var fresh = false
        for node in ready.suspected where self.image.nodes[node].map({ !$0.fenced }) ?? false {
            if self.suspects.insert(node).inserted {
                fresh = true
                self.logger.warning("a ring neighbour stopped answering; reporting it to the controllers", metadata: ["node": "\(node)"])
            }
        }
        if fresh { self.reportSuspects() }
    }

    private func reportSuspects() {
        self.ticksSinceReport = 0
        let suspects = self.suspects.sorted()
        let report = self.report
        Task { await report(suspects) }
    }

    /// Each of this node's tokens with its predecessor and successor as the protocol sees them.
    var view: [(token: RingPosition, predecessor: RingEntry?, successor: RingEntry)] {
        (self.machine?.view ?? []).map { ($0.token, $0.predecessor, $0.successor) }
    }

    func close() {
        self.machine = nil
        self.links.close()
    }
}
