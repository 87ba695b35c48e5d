import KafkaProtocol
import RafkaCore
import Synchronization

/// Incremental fetch sessions (KIP-227, Fetch v7+). A consumer's first fetch (epoch 0) lists
/// all its partitions and opens a session; each later fetch (epoch 1, 2, …) lists only the
/// partitions whose position or limits changed and those to forget, and its answer carries only
/// the partitions with something new: records, an error, or a changed high watermark or log
/// start. A consumer of 10,000 quiet partitions then sends and receives a few bytes per fetch
/// instead of 10,000 entries each way.
///
/// Sessions are the broker's, not a connection's (a client may reconnect and go on), and
/// bounded: at most `slots` sessions and `partitionsMax` partitions across them. When the cache
/// is full, a new session replaces the least recently used one only if that one has been idle
/// for `evictionIdleMilliseconds`; otherwise the fetch is answered without a session (session
/// id 0), which clients take as "send full fetches", so a full cache costs only what sessions
/// save.
///
/// Isolation: a lock around every session; the sessions' partitions are read under it and
/// handed to the fetch as copies.
final class FetchSessionCache: Sendable {
    /// A session's partition: a topic by name (Fetch v7–12) or by id (v13+).
    struct Key: Hashable, Sendable {
        var topic: String
        var topicID: KafkaUUID
        var partition: Int32
    }

    /// One partition of a session: what the client last asked for it, and what the last answer
    /// that included it said.
    struct Entry: Sendable {
        var key: Key
        var fetch: FetchRequest.FetchPartition
        var highWatermark: Int64 = -1
        var logStartOffset: Int64 = -1
    }

    /// How a fetch stands towards the sessions.
    enum Context: Sendable {
        /// Without a session: every partition the request lists, every one answered.
        case sessionless
        /// Every partition the request lists, every one answered; `sessionID` is the session the
        /// answer opens (nil when the cache had no room).
        case full(sessionID: Int32?)
        /// The session's partitions after the request's changes; the answer includes those with
        /// something new.
        case incremental(sessionID: Int32, partitions: [Entry])
        /// Answered with this error alone (an unknown session, a stale epoch).
        case failed(KafkaErrorCode)
    }

    /// What one partition's answer said, for the session to remember.
    struct Answer: Sendable {
        var key: Key
        var highWatermark: Int64
        var logStartOffset: Int64
        var hadRecords: Bool
    }

    private final class Session {
        let id: Int32
        /// The epoch the next fetch of this session must carry.
        var epoch: Int32 = 1
        let usesTopicIDs: Bool
        var entries: [Entry]
        var positions: [Key: Int]
        var lastUsed: Int64

        init(id: Int32, usesTopicIDs: Bool, entries: [Entry], now: Int64) {
            self.id = id
            self.usesTopicIDs = usesTopicIDs
            self.entries = entries
            self.positions = Dictionary(entries.enumerated().map { ($1.key, $0) }, uniquingKeysWith: { _, last in last })
            self.lastUsed = now
        }

        func reindex() {
            self.positions = Dictionary(
                self.entries.enumerated().map { ($1.key, $0) }, uniquingKeysWith: { _, last in last })
        }
    }

    private struct State {
        var sessions: [Int32: Session] = [:]
        var partitions = 0
        var random = SeededRandom(seed: UInt64.random(in: 1...UInt64.max))
    }

    private let state = Mutex(State())
    let slots: Int
    let partitionsMax: Int
    let evictionIdleMilliseconds: Int64

    /// Kafka's defaults: 1,000 sessions (`max.incremental.fetch.session.cache.slots`), replaced
    /// when idle for two minutes (`min.incremental.fetch.session.eviction.ms`).
    init(slots: Int = 1_000, partitionsMax: Int = 1_000_000, evictionIdleMilliseconds: Int64 = 120_000) {
        self.slots = slots
        self.partitionsMax = partitionsMax
        self.evictionIdleMilliseconds = evictionIdleMilliseconds
    }

    /// Sessions open now, and partitions across them.
    var counts: (sessions: Int, partitions: Int) { self.state.withLock { ($0.sessions.count, $0.partitions) } }

    /// Where `request` (Fetch `version`) stands, with the session it names updated: opened,
    /// closed, or changed by the partitions it lists and forgets.
    func context(for request: FetchRequest, version: Int16, now: Int64) -> Context {
        let epoch = request.sessionEpoch
        // Before v7, and fetches asking for no session (id 0, epoch -1): no lock taken.
        guard version >= 7, request.sessionId != 0 || epoch != -1 else { return .sessionless }
        let byID = version >= 13
        return self.state.withLock { state in
            if epoch == 0 || epoch == -1 {
                // A full fetch closes the session it names; epoch -1 asks for no new one.
                if request.sessionId != 0 { Self.remove(request.sessionId, from: &state) }
                guard epoch == 0 else { return .sessionless }
                let entries = Self.keyed(request.topics, byID: byID)
                guard !entries.isEmpty, self.makeRoom(for: entries.count, in: &state, now: now) else {
                    return .full(sessionID: nil)
                }
                var id: Int32
                repeat {
                    id = Int32(truncatingIfNeeded: state.random.next() & 0x7fff_ffff)
                } while id == 0 || state.sessions[id] != nil
                let session = Session(id: id, usesTopicIDs: byID, entries: entries, now: now)
                state.sessions[id] = session
                state.partitions += session.entries.count
                return .full(sessionID: id)
            }
            guard let session = state.sessions[request.sessionId] else { return .failed(.fetchSessionIdNotFound) }
            guard session.epoch == epoch else { return .failed(.invalidFetchSessionEpoch) }
            guard session.usesTopicIDs == byID else { return .failed(.fetchSessionTopicIdError) }
            let before = session.entries.count
            Self.update(session, with: request, byID: byID)
            state.partitions += session.entries.count - before
            guard !session.entries.isEmpty else {
                Self.remove(session.id, from: &state)
                return .sessionless
            }
            guard state.partitions <= self.partitionsMax else {
                // No room for what it added: the session ends, and the client starts over.
                Self.remove(session.id, from: &state)
                return .failed(.fetchSessionIdNotFound)
            }
            session.epoch = session.epoch == Int32.max ? 1 : session.epoch + 1
            session.lastUsed = now
            return .incremental(sessionID: session.id, partitions: session.entries)
        }
    }

    /// Notes what the answer to a fetch of session `id` said of each partition it included,
    /// and moves the partitions that had records to the end of the session's order, so that
    /// under a response size limit the others are read first next time (as Kafka does).
    func answered(_ id: Int32, _ answers: [Answer]) {
        self.state.withLock { state in
            guard let session = state.sessions[id] else { return }
            var moved: [Entry] = []
            for answer in answers {
                guard let position = session.positions[answer.key] else { continue }
                session.entries[position].highWatermark = answer.highWatermark
                session.entries[position].logStartOffset = answer.logStartOffset
                if answer.hadRecords { moved.append(session.entries[position]) }
            }
            guard !moved.isEmpty else { return }
            let keys = Set(moved.map(\.key))
            session.entries = session.entries.filter { !keys.contains($0.key) } + moved
            session.reindex()
        }
    }

    /// The request's partitions as session entries, in request order.
    private static func keyed(_ topics: [FetchRequest.FetchTopic], byID: Bool) -> [Entry] {
        var entries: [Entry] = []
        var seen = Set<Key>()
        for topic in topics {
            for partition in topic.partitions {
                let key = Key(topic: byID ? "" : topic.topic, topicID: byID ? topic.topicId : .zero, partition: partition.partition)
                guard seen.insert(key).inserted else { continue }
                entries.append(Entry(key: key, fetch: partition))
            }
        }
        return entries
    }

    /// Applies an incremental request: its partitions are added or take their new position
    /// and limits (keeping what the session last told of them); forgotten ones are removed.
    private static func update(_ session: Session, with request: FetchRequest, byID: Bool) {
        var forgotten = Set<Key>()
        for topic in request.forgottenTopicsData {
            for partition in topic.partitions {
                forgotten.insert(Key(topic: byID ? "" : topic.topic, topicID: byID ? topic.topicId : .zero, partition: partition))
            }
        }
        if !forgotten.isEmpty {
            session.entries.removeAll { forgotten.contains($0.key) }
            session.reindex()
        }
        for entry in Self.keyed(request.topics, byID: byID) {
            if let position = session.positions[entry.key] {
                session.entries[position].fetch = entry.fetch
            } else {
                session.positions[entry.key] = session.entries.count
                session.entries.append(entry)
            }
        }
    }

    private static func remove(_ id: Int32, from state: inout State) {
        guard let session = state.sessions.removeValue(forKey: id) else { return }
        state.partitions -= session.entries.count
    }

    /// Whether a session of `partitions` fits, after replacing sessions idle long enough (the
    /// least recently used first).
    private func makeRoom(for partitions: Int, in state: inout State, now: Int64) -> Bool {
        guard partitions <= self.partitionsMax else { return false }
        while state.sessions.count >= self.slots || state.partitions + partitions > self.partitionsMax {
            guard let idlest = state.sessions.values.min(by: { $0.lastUsed < $1.lastUsed }),
                now - idlest.lastUsed >= self.evictionIdleMilliseconds
            else { return false }
            Self.remove(idlest.id, from: &state)
        }
        return true
    }
}
