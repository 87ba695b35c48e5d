import RafkaCore

// One data node's view of the Chord ring, as a pure state machine (Stoica et al., "Chord: A
// Scalable Peer-to-peer Lookup Service", 2001; the successor-list and stabilization rules of
// §4–§5). The node owns V tokens; each token is a virtual Chord node with a predecessor, an
// immediate successor, a list of the next distinct other nodes and a finger table.
//
//        seed(view) / join(via:)               leave()
//   new ───────────────────────► member ─────────────────────► left
//                                  │ ▲
//                 fence(node) /    │ │ admit(node)
//                 timeouts forget  ▼ │ (the controllers decide membership)
//                               fewer entries
//
// Inputs: tick(), receive(_:), lookup(_:), seed(_:), join(via:), fence(_:), admit(_:), leave().
// Output: ready() — messages to send, finished lookups, suspected nodes.

/// One data node's Chord instance. Not thread-safe; its shell owns it.
public struct ChordStateMachine: Sendable {
    public let node: NodeID
    public let options: ChordOptions
    /// The node's tokens, sorted; `vnodes[i]` is the state of `tokens[i]`.
    public let tokens: [RingPosition]
    var vnodes: [VirtualNode]
    /// Nodes the controllers fenced: never routed to until admitted again.
    var fenced: Set<NodeID> = []
    var pending: [UInt64: PendingRequest] = [:]
    var lookups: [UInt64: Lookup] = [:]
    var nextRequestID: UInt64 = 1
    var now: UInt64 = 0
    var output = ChordReady()
    public private(set) var hasLeft = false
    /// `fingers[i]` of every token is `position + 2^(fingerBase + i)`: fingers below the
    /// typical gap between tokens would all equal the successor.
    var fingerBase = 0
    /// Predecessor nodes with a ping in flight.
    var pinging: Set<NodeID> = []
    /// The member a join goes through, until it stops answering.
    var bootstrap: NodeID?

    struct VirtualNode: Sendable {
        var position: RingPosition
        var predecessor: RingEntry?
        /// The next token clockwise, whoever owns it (possibly this node).
        var successor: RingEntry
        /// The next distinct nodes other than this one, each at its first token after `position`.
        var successors: [RingEntry] = []
            /// `fingers[i]` is the owner of `position + 2^(fingerBase + i)`, once looked up.
        var fingers: [RingEntry?] = []
        var nextFinger = 0
        var fingerLookupInFlight = false
        var stabilizing = false
        /// Joining and not yet told its successor by the ring.
        var joining = false
        var joinLookupInFlight = false
    }

    enum PendingRequest: Sendable {
        case neighbors(vnode: Int, asked: RingEntry, deadline: UInt64)
        case ping(node: NodeID, deadline: UInt64)
        case lookupStep(lookup: UInt64, deadline: UInt64)

        var deadline: UInt64 {
            switch self {
            case .neighbors(_, _, let deadline), .ping(_, let deadline), .lookupStep(_, let deadline): deadline
            }
        }
    }

    struct Lookup: Sendable {
        enum Purpose: Sendable {
            case client
            case finger(vnode: Int, index: Int)
            case join(vnode: Int)
        }
        var key: RingPosition
        var purpose: Purpose
        /// The token whose node is being asked.
        var asking: RingEntry
        var hops: Int
    }

    /// A node that knows nothing of the ring yet: `seed(_:)` or `join(via:)` next.
    /// `firstRequestID` should differ per incarnation (the shell passes the incarnation in the
    /// high bits), so that late answers meant for a previous process are not taken as ours.
    public init(node: NodeID, tokens: [RingPosition], options: ChordOptions = ChordOptions(), firstRequestID: UInt64 = 1) {
        precondition(!tokens.isEmpty, "a data node needs at least one token")
        precondition(options.successorListLength >= 1 && options.requestTimeoutTicks >= 1)
        self.node = node
        self.options = options
        self.nextRequestID = firstRequestID
        let sorted = Array(Set(tokens)).sorted()
        self.tokens = sorted
        // Alone, each token's successor is the next of its own tokens.
        self.vnodes = sorted.indices.map { index in
            VirtualNode(position: sorted[index], successor: RingEntry(position: sorted[(index + 1) % sorted.count], node: node))
        }
    }

    // MARK: Membership

    /// Learns tokens from outside the protocol (the metadata image, or ground truth in a
    /// simulation): each of this node's tokens takes the nearest of them as successor,
    /// successor list, predecessor and fingers where they improve on what it has.
    /// Stabilization keeps them right from then on.
    public mutating func seed(_ view: RingMap) {
        guard !view.isEmpty else { return }
        self.needsBootstrap = false
        for index in self.vnodes.indices {
            let position = self.vnodes[index].position
            var cursor = view.successorIndex(of: position.advanced(by: 1))
            var distinct: [RingEntry] = []
            var seen: Set<NodeID> = [self.node]
            var successor: RingEntry?
            for _ in 0..<view.entries.count {
                let entry = view.entries[cursor]
                cursor = cursor + 1 == view.entries.count ? 0 : cursor + 1
                if self.fenced.contains(entry.node) { continue }
                if successor == nil { successor = entry }
                if seen.insert(entry.node).inserted { distinct.append(entry) }
                if distinct.count == self.options.successorListLength { break }
            }
            // The view may leave out this node's own tokens: keep whichever is nearer.
            if let successor, successor.position.isStrictly(after: position, before: self.vnodes[index].successor.position)
                || self.vnodes[index].successor.position == position
            {
                self.vnodes[index].successor = successor
            }
            // The view is authoritative: the token knows its place from it.
            self.vnodes[index].joining = false
            self.vnodes[index].successors = distinct
            let predecessorIndex = (view.successorIndex(of: position) + view.entries.count - 1) % view.entries.count
            let predecessor = view.entries[predecessorIndex]
            if predecessor.position != position, !self.fenced.contains(predecessor.node) {
                self.vnodes[index].predecessor = predecessor
            }
        }
        self.resizeFingers()
        for index in self.vnodes.indices {
            let position = self.vnodes[index].position
            for finger in self.vnodes[index].fingers.indices {
                let base = self.fingerBase
                let key = position.advanced(by: 1 << UInt64(base + finger))
                let owner = view.entries[view.successorIndex(of: key)]
                if !self.fenced.contains(owner.node) { self.vnodes[index].fingers[finger] = owner }
            }
        }
    }

    /// Joins through `bootstrap`, any live member: each token looks up its successor there
    /// (Chord §4.4); stabilization does the rest.
    /// A token whose lookup fails (a node on the way died) tries again on a later tick, through
    /// the bootstrap or any other node it has learnt of since; when it knows of none,
    /// `needsBootstrap` asks the shell for another member.
    public mutating func join(via bootstrap: NodeID) {
        precondition(bootstrap != self.node, "a node joins through another")
        self.bootstrap = bootstrap
        self.needsBootstrap = false
        for index in self.vnodes.indices where self.vnodes[index].successor.node == self.node {
            self.vnodes[index].joining = true
            self.sendJoinLookup(index)
        }
    }

    /// True when a token had to join and this node knew no other member to ask: the shell
    /// calls `join(via:)` with a member from the metadata image, if there is one.
    public private(set) var needsBootstrap = false

    /// A member to send join lookups to: the bootstrap, else any other node this one knows.
    var joinHelper: NodeID? {
        if let bootstrap = self.bootstrap { return bootstrap }
        for vnode in self.vnodes where vnode.successor.node != self.node { return vnode.successor.node }
        return nil
    }

    mutating func sendJoinLookup(_ index: Int) {
        guard !self.vnodes[index].joinLookupInFlight else { return }
        guard let helper = self.joinHelper else {
            // Nobody else known: our own tokens are the ring until the shell names a member.
            self.vnodes[index].joining = false
            self.needsBootstrap = true
            return
        }
        self.vnodes[index].joinLookupInFlight = true
        let id = self.newRequestID()
        let key = self.vnodes[index].position.advanced(by: 1)
        // The helper's tokens are unknown: any answer it gives counts as progress.
        let asking = RingEntry(position: key.advanced(by: 1), node: helper)
        self.lookups[id] = Lookup(key: key, purpose: .join(vnode: index), asking: asking, hops: 1)
        self.request(helper, .lookupStep(lookup: id, deadline: self.deadline)) { .findSuccessor(requestID: $0, key: key) }
    }

    /// The controllers fenced `node`: forget it, and ignore it until `admit(_:)`.
    public mutating func fence(_ node: NodeID) {
        guard node != self.node else { return }
        self.fenced.insert(node)
        self.forget(node, certain: true)
    }

    /// The controllers admitted `node` (again): it may be routed to once learnt.
    public mutating func admit(_ node: NodeID) {
        self.fenced.remove(node)
    }

    /// A controlled leave: tells every neighbour to forget this node now.
    public mutating func leave() {
        var neighbours = Set<NodeID>()
        for vnode in self.vnodes {
            if let predecessor = vnode.predecessor { neighbours.insert(predecessor.node) }
            neighbours.insert(vnode.successor.node)
            for entry in vnode.successors { neighbours.insert(entry.node) }
        }
        neighbours.remove(self.node)
        for neighbour in neighbours.sorted() { self.send(to: neighbour, .leaving) }
        self.hasLeft = true
    }

    // MARK: Lookups

    /// Starts an iterative lookup of the token that owns `key`; the result comes out of
    /// `ready()` with the same id.
    public mutating func lookup(_ key: RingPosition) -> UInt64 {
        let id = self.newRequestID()
        self.startLookup(id: id, key: key, purpose: .client)
        return id
    }

    /// Where this node would send a lookup for `key`: the owner when one of its tokens'
    /// successor arcs holds the key, else the closest token before the key that it knows of.
    /// Tokens still joining are skipped: their successors are guesses.
    public func route(_ key: RingPosition) -> LookupAnswer? {
        // Cut off from the ring (everyone it knew stopped answering): its own tokens are not
        // the ring, so it claims nothing until the shell names a member to join through.
        guard !self.needsBootstrap else { return nil }
        var index = self.closestPrecedingToken(key)
        for _ in 0..<self.vnodes.count where self.vnodes[index].joining {
            index = index == 0 ? self.vnodes.count - 1 : index - 1
        }
        let vnode = self.vnodes[index]
        if key == vnode.position && !vnode.joining { return .owner(RingEntry(position: key, node: self.node)) }
        if key.isIn(after: vnode.position, through: vnode.successor.position) && !vnode.joining {
            if vnode.successor.node == self.node || !self.fenced.contains(vnode.successor.node) { return .owner(vnode.successor) }
        }
        var best: RingEntry?
        var bestDistance = UInt64.max
        func consider(_ entry: RingEntry?) {
            guard let entry, entry.node != self.node, !self.fenced.contains(entry.node) else { return }
            let distance = entry.position.distance(to: key)
            // Strictly before the key and after our token: closer than we are.
            guard distance != 0, distance < vnode.position.distance(to: key), distance < bestDistance else { return }
            best = entry
            bestDistance = distance
        }
        consider(vnode.successor)
        for entry in vnode.successors { consider(entry) }
        for finger in vnode.fingers { consider(finger) }
        return best.map { .closer($0) }
    }

    /// Index of this node's token closest before (or at) `key`, walking counter-clockwise.
    func closestPrecedingToken(_ key: RingPosition) -> Int {
        var low = 0
        var high = self.tokens.count
        while low < high {
            let middle = (low + high) / 2
            if self.tokens[middle] <= key { low = middle + 1 } else { high = middle }
        }
        return low == 0 ? self.tokens.count - 1 : low - 1
    }

    mutating func startLookup(id: UInt64, key: RingPosition, purpose: Lookup.Purpose, hopsSoFar: Int = 0) {
        switch self.route(key) {
        case .owner(let owner):
            self.finishLookup(id: id, key: key, purpose: purpose, owner: owner, hops: hopsSoFar)
        case .closer(let entry):
            self.lookups[id] = Lookup(key: key, purpose: purpose, asking: entry, hops: hopsSoFar + 1)
            self.request(entry.node, .lookupStep(lookup: id, deadline: self.deadline)) { .findSuccessor(requestID: $0, key: key) }
        case nil, .unknown:
            self.finishLookup(id: id, key: key, purpose: purpose, owner: nil, hops: hopsSoFar)
        }
    }

    mutating func continueLookup(id: UInt64, answer: LookupAnswer) {
        guard var lookup = self.lookups[id] else { return }
        switch answer {
        case .unknown:
            self.lookups[id] = nil
            self.finishLookup(id: id, key: lookup.key, purpose: lookup.purpose, owner: nil, hops: lookup.hops)
        case .owner(let owner):
            self.lookups[id] = nil
            let known = self.fenced.contains(owner.node) ? nil : owner
            self.finishLookup(id: id, key: lookup.key, purpose: lookup.purpose, owner: known, hops: lookup.hops)
        case .closer(let entry):
            // Each step must get strictly closer to the key, or the lookup could go round forever.
            let progress = entry.position.distance(to: lookup.key) < lookup.asking.position.distance(to: lookup.key)
            guard progress, lookup.hops < self.options.lookupHopsMax, !self.fenced.contains(entry.node) else {
                self.lookups[id] = nil
                self.finishLookup(id: id, key: lookup.key, purpose: lookup.purpose, owner: nil, hops: lookup.hops)
                return
            }
            if entry.node == self.node, case .join(let vnode) = lookup.purpose, entry.position == self.vnodes[vnode].position {
                // The ring already routes to this very token: it is known, so it stops joining
                // and stabilization corrects its successor from the current guess. (Another of
                // our tokens is in the ring already: routing goes on from it, below.)
                self.lookups[id] = nil
                self.vnodes[vnode].joinLookupInFlight = false
                self.vnodes[vnode].joining = false
                self.stabilize(vnode)
                return
            }
            if entry.node == self.node {
                // Back at one of our own tokens: route from here with what we know.
                self.lookups[id] = nil
                self.startLookup(id: id, key: lookup.key, purpose: lookup.purpose, hopsSoFar: lookup.hops)
                return
            }
            lookup.asking = entry
            lookup.hops += 1
            self.lookups[id] = lookup
            let key = lookup.key
            self.request(entry.node, .lookupStep(lookup: id, deadline: self.deadline)) { .findSuccessor(requestID: $0, key: key) }
        }
    }

    mutating func finishLookup(id: UInt64, key: RingPosition, purpose: Lookup.Purpose, owner: RingEntry?, hops: Int) {
        switch purpose {
        case .client:
            self.output.lookups.append(LookupResult(id: id, key: key, owner: owner, hops: hops))
        case .finger(let vnode, let index):
            self.vnodes[vnode].fingerLookupInFlight = false
            if let owner, index < self.vnodes[vnode].fingers.count { self.vnodes[vnode].fingers[index] = owner }
        case .join(let vnode):
            self.vnodes[vnode].joinLookupInFlight = false
            let position = self.vnodes[vnode].position
            guard let owner, owner.position != position, !self.fenced.contains(owner.node) else { return }  // tried again later
            // The successor is the nearer of the answer and our own next token (which the
            // answering ring may not know of yet).
            let ownNext = RingEntry(position: self.tokens[(vnode + 1) % self.tokens.count], node: self.node)
            let nearer = ownNext.position != position && ownNext.position.isStrictly(after: position, before: owner.position)
            self.vnodes[vnode].successor = nearer ? ownNext : owner
            self.vnodes[vnode].successors = owner.node == self.node ? [] : [owner]
            self.vnodes[vnode].joining = false
            self.stabilize(vnode)  // learn the successor list now, before a failure needs it
        }
    }

    // MARK: Ticks

    /// One tick of the shell's clock: stabilize, fix fingers, check predecessors, expire requests.
    public mutating func tick() {
        guard !self.hasLeft else { return }
        self.now += 1
        self.expireRequests()
        for index in self.vnodes.indices {
            let phase = self.now &+ UInt64(index)
            if phase % UInt64(self.options.stabilizeTicks) == 0 { self.stabilize(index) }
            if phase % UInt64(self.options.fixFingersTicks) == 0 { self.fixNextFinger(index) }
            if self.vnodes[index].joining && phase % UInt64(self.options.stabilizeTicks) == 0 { self.sendJoinLookup(index) }
        }
        if self.now % UInt64(self.options.checkPredecessorTicks) == 0 { self.checkPredecessors() }
    }

    /// Chord's stabilize for one token: ask the successor for its neighbours (answered from
    /// our own state when the successor is one of our tokens).
    mutating func stabilize(_ index: Int) {
        // A joining token knows no true successor yet: it must not notify anyone (Chord §4.4).
        guard !self.vnodes[index].joining else { return }
        let successor = self.vnodes[index].successor
        if successor.node == self.node {
            guard let other = self.tokenIndex(successor.position) else { return }
            let answer = self.neighbors(of: other)
            self.stabilized(index, asked: successor, predecessor: answer.predecessor, successor: answer.successor, successors: answer.successors)
            return
        }
        guard !self.vnodes[index].stabilizing else { return }
        self.vnodes[index].stabilizing = true
        self.request(successor.node, .neighbors(vnode: index, asked: successor, deadline: self.deadline)) {
            .getNeighbors(requestID: $0, position: successor.position)
        }
    }

    mutating func stabilized(_ index: Int, asked: RingEntry, predecessor: RingEntry?, successor: RingEntry, successors: [RingEntry]) {
        let position = self.vnodes[index].position
        guard self.vnodes[index].successor == asked else { return }  // it changed meanwhile
        var newSuccessor = asked
        if let predecessor, !self.fenced.contains(predecessor.node), predecessor.position.isStrictly(after: position, before: asked.position) {
            newSuccessor = predecessor  // a token joined between us (Chord §4.4)
        }
        self.vnodes[index].successor = newSuccessor
        if newSuccessor.node != self.node { self.vnodes[index].joining = false }
        var list: [RingEntry] = []
        var seen: Set<NodeID> = [self.node]
        for entry in [newSuccessor, asked, successor] + successors where !self.fenced.contains(entry.node) {
            if list.count == self.options.successorListLength { break }
            if seen.insert(entry.node).inserted { list.append(entry) }
        }
        self.vnodes[index].successors = list
        let me = RingEntry(position: position, node: self.node)
        if newSuccessor.node == self.node {
            if let other = self.tokenIndex(newSuccessor.position) { self.notified(other, candidate: me) }
        } else {
            self.send(to: newSuccessor.node, .notify(position: newSuccessor.position, candidate: me))
        }
    }

    /// Chord's notify: `candidate` thinks it precedes our token.
    mutating func notified(_ index: Int, candidate: RingEntry) {
        guard !self.fenced.contains(candidate.node), candidate.position != self.vnodes[index].position else { return }
        let position = self.vnodes[index].position
        if let current = self.vnodes[index].predecessor, !candidate.position.isStrictly(after: current.position, before: position) {
            return
        }
        self.vnodes[index].predecessor = candidate
    }

    func neighbors(of index: Int) -> (predecessor: RingEntry?, successor: RingEntry, successors: [RingEntry]) {
        let vnode = self.vnodes[index]
        return (vnode.predecessor, vnode.successor, vnode.successors)
    }

    mutating func fixNextFinger(_ index: Int) {
        guard !self.vnodes[index].fingerLookupInFlight else { return }
        if index == 0 { self.resizeFingers() }
        guard !self.vnodes[index].fingers.isEmpty else { return }
        let finger = self.vnodes[index].nextFinger % self.vnodes[index].fingers.count
        self.vnodes[index].nextFinger = finger + 1
        let key = self.vnodes[index].position.advanced(by: 1 << UInt64(self.fingerBase + finger))
        self.vnodes[index].fingerLookupInFlight = true
        self.startLookup(id: self.newRequestID(), key: key, purpose: .finger(vnode: index, index: finger))
    }

    /// Sizes every token's finger table to the ring: from a quarter of the mean gap between
    /// consecutive tokens (estimated from this node's own successor gaps) up to half the ring,
    /// about log2 of the ring's token count entries instead of 64.
    mutating func resizeFingers() {
        var gaps = 0.0
        for vnode in self.vnodes { gaps += Double(max(vnode.position.distance(to: vnode.successor.position), 1)) }
        let meanGap = UInt64(min(gaps / Double(self.vnodes.count), Double(UInt64.max / 2)))
        let base = max(0, (63 - max(meanGap, 1).leadingZeroBitCount) - 2)
        guard base != self.fingerBase || self.vnodes[0].fingers.isEmpty else { return }
        for index in self.vnodes.indices {
            let old = self.vnodes[index].fingers
            var fingers = [RingEntry?](repeating: nil, count: 64 - base)
            for (offset, entry) in old.enumerated() where self.fingerBase + offset >= base {
                fingers[self.fingerBase + offset - base] = entry
            }
            self.vnodes[index].fingers = fingers
            self.vnodes[index].nextFinger = 0
        }
        self.fingerBase = base
    }

    mutating func checkPredecessors() {
        var asked = Set<NodeID>()
        for vnode in self.vnodes {
            guard let predecessor = vnode.predecessor, predecessor.node != self.node, asked.insert(predecessor.node).inserted,
                self.pinging.insert(predecessor.node).inserted
            else { continue }
            self.request(predecessor.node, .ping(node: predecessor.node, deadline: self.deadline)) { .ping(requestID: $0) }
        }
    }

    mutating func expireRequests() {
        let expired = self.pending.filter { $0.value.deadline <= self.now }
        for (id, request) in expired.sorted(by: { $0.key < $1.key }) {
            guard self.pending.removeValue(forKey: id) != nil else { continue }
            switch request {
            case .neighbors(let index, let asked, _):
                self.vnodes[index].stabilizing = false
                self.suspect(asked.node)
            case .ping(let node, _):
                self.pinging.remove(node)
                self.suspect(node)
            case .lookupStep(let lookupID, _):
                guard let lookup = self.lookups.removeValue(forKey: lookupID) else { continue }
                self.suspect(lookup.asking.node)
                // Try again around the silent node, unless the route has gone on too long. A
                // joining token knows too little to route: it asks a helper again next tick.
                if case .join = lookup.purpose {
                    self.finishLookup(id: lookupID, key: lookup.key, purpose: lookup.purpose, owner: nil, hops: lookup.hops)
                } else if lookup.hops < self.options.lookupHopsMax {
                    self.startLookup(id: lookupID, key: lookup.key, purpose: lookup.purpose, hopsSoFar: lookup.hops)
                } else {
                    self.finishLookup(id: lookupID, key: lookup.key, purpose: lookup.purpose, owner: nil, hops: lookup.hops)
                }
            }
        }
    }

    /// A node stopped answering: route around it now and tell the shell.
    mutating func suspect(_ node: NodeID) {
        guard node != self.node else { return }
        self.forget(node, certain: false)
        if !self.output.suspected.contains(node) { self.output.suspected.append(node) }
    }

    /// Drops every reference to `node`. A token whose successor was there falls back to the
    /// nearest remaining candidate: the next entry of its successor list or one of our tokens.
    /// `certain`: the node is gone for sure (fenced, or it said it leaves), not just silent.
    mutating func forget(_ node: NodeID, certain: Bool) {
        if self.bootstrap == node { self.bootstrap = nil }
        var lost: [Int] = []
        for index in self.vnodes.indices {
            if self.vnodes[index].predecessor?.node == node { self.vnodes[index].predecessor = nil }
            self.vnodes[index].successors.removeAll { $0.node == node }
            for finger in self.vnodes[index].fingers.indices where self.vnodes[index].fingers[finger]?.node == node {
                self.vnodes[index].fingers[finger] = nil
            }
            if self.vnodes[index].successor.node == node { lost.append(index) }
        }
        for index in lost {
            self.vnodes[index].successor = self.nearestKnown(after: self.vnodes[index].position, excluding: node)
            // With its whole successor list gone the guess may be far off: look the successor up
            // again through the ring rather than walk back one token per stabilization.
            guard self.vnodes[index].successors.isEmpty || self.vnodes[index].successor.node == self.node else { continue }
            if self.joinHelper != nil {
                self.vnodes[index].joining = true
            } else if !certain {
                // Everyone it knew went silent: it may be the one cut off, so it claims nothing
                // until it joins again. (When the others are gone for certain, our own tokens
                // are the whole ring.)
                self.needsBootstrap = true
            }
        }
    }

    /// The nearest token after `position` this node knows of anywhere: the token's successor
    /// list normally has it; when the list ran out, fingers and the other tokens' neighbours
    /// land much nearer than our own next token, so stabilization has little left to walk.
    func nearestKnown(after position: RingPosition, excluding gone: NodeID) -> RingEntry {
        let index = self.tokenIndex(position) ?? self.closestPrecedingToken(position)
        var best = RingEntry(position: self.tokens[(index + 1) % self.tokens.count], node: self.node)
        func consider(_ entry: RingEntry?) {
            guard let entry, entry.position != position, entry.node != gone, !self.fenced.contains(entry.node) else { return }
            if best.position == position || position.distance(to: entry.position) < position.distance(to: best.position) { best = entry }
        }
        for vnode in self.vnodes {
            consider(vnode.predecessor)
            consider(vnode.successor)
            for entry in vnode.successors { consider(entry) }
            for finger in vnode.fingers { consider(finger) }
        }
        return best
    }

    // MARK: Messages

    /// A message from another data node.
    public mutating func receive(_ message: ChordMessage) {
        guard message.to == self.node, message.from != self.node, !self.hasLeft else { return }
        if self.fenced.contains(message.from) {
            return  // a fenced node is not part of the ring until the controllers admit it again
        }
        switch message.kind {
        case .getNeighbors(let requestID, let position):
            guard let index = self.tokenIndex(position) else { return }
            let answer = self.neighbors(of: index)
            self.send(
                to: message.from,
                .neighbors(requestID: requestID, position: position, predecessor: answer.predecessor, successor: answer.successor, successors: answer.successors))
        case .neighbors(let requestID, _, let predecessor, let successor, let successors):
            guard case .neighbors(let index, let asked, _) = self.pending[requestID], asked.node == message.from else { return }
            self.pending[requestID] = nil
            self.vnodes[index].stabilizing = false
            self.stabilized(index, asked: asked, predecessor: predecessor, successor: successor, successors: successors)
        case .notify(let position, let candidate):
            guard candidate.node == message.from, let index = self.tokenIndex(position) else { return }
            self.notified(index, candidate: candidate)
        case .findSuccessor(let requestID, let key):
            self.send(to: message.from, .lookupStep(requestID: requestID, answer: self.route(key) ?? .unknown))
        case .lookupStep(let requestID, let answer):
            guard case .lookupStep(let lookupID, _) = self.pending[requestID], self.lookups[lookupID]?.asking.node == message.from else {
                return
            }
            self.pending[requestID] = nil
            self.continueLookup(id: lookupID, answer: answer)
        case .ping(let requestID):
            self.send(to: message.from, .pong(requestID: requestID))
        case .pong(let requestID):
            guard case .ping(let node, _) = self.pending[requestID], node == message.from else { return }
            self.pending[requestID] = nil
            self.pinging.remove(node)
        case .leaving:
            self.forget(message.from, certain: true)
        }
    }

    /// Everything to do since the last call.
    public mutating func ready() -> ChordReady {
        defer { self.output = ChordReady() }
        return self.output
    }

    // MARK: Inspection

    /// The owner of each of this node's tokens' successor arcs, for `ring describe`.
    public var view: [(token: RingPosition, predecessor: RingEntry?, successor: RingEntry, successors: [RingEntry])] {
        self.vnodes.map { ($0.position, $0.predecessor, $0.successor, $0.successors) }
    }

    /// The distinct other nodes after the token at `position` (the replica candidates).
    public func successors(of position: RingPosition) -> [RingEntry]? {
        self.tokenIndex(position).map { self.vnodes[$0].successors }
    }

    /// Whether some token is still joining, or the node waits for a member to join through.
    public var isJoining: Bool { self.needsBootstrap || self.vnodes.contains { $0.joining } }

    /// Requests awaiting an answer (bounded by tokens × kinds of request, plus lookups).
    public var pendingRequestCount: Int { self.pending.count }

    // MARK: Helpers

    func tokenIndex(_ position: RingPosition) -> Int? {
        let index = self.closestPrecedingToken(position)
        return self.tokens[index] == position ? index : nil
    }

    var deadline: UInt64 { self.now + UInt64(self.options.requestTimeoutTicks) }

    mutating func newRequestID() -> UInt64 {
        defer { self.nextRequestID += 1 }
        return self.nextRequestID
    }

    mutating func send(to node: NodeID, _ kind: ChordMessage.Kind) {
        precondition(node != self.node, "a node does not message itself")
        self.output.messages.append(ChordMessage(from: self.node, to: node, kind: kind))
    }

    /// Sends a request under a fresh id and remembers it until answered or expired.
    mutating func request(_ node: NodeID, _ pending: PendingRequest, _ kind: (UInt64) -> ChordMessage.Kind) {
        let id = self.newRequestID()
        self.pending[id] = pending
        self.send(to: node, kind(id))
    }
}
