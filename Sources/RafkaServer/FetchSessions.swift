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

    /// One partition of a session: what the client last asked for it.
    struct Entry: Sendable {
        var key: Key
        var fetch: FetchRequest.FetchPartition
    }

    /// What the last answer that included a partition said of it (-1: not answered yet, or an
    /// error), kept apart from `Entry` so that noting it copies no strings.
    struct Reported: Sendable, Equatable {
        var highWatermark: Int64 = -1
        var logStartOffset: Int64 = -1
    }

    /// The partitions an incremental fetch reads: the session's, from `start` round to it.
    struct Snapshot: Sendable {
        var sessionID: Int32
        /// The session's epoch once this fetch took it: the answer is noted only if no later
        /// fetch of the session came meanwhile.
        var epoch: Int32
        var entries: [Entry]
        var reported: [Reported]
        var start: Int

        var count: Int { self.entries.count }
        /// The position in the session of the partition read `index`-th.
        func position(_ index: Int) -> Int { (self.start + index) % self.entries.count }
    }

    /// How a fetch stands towards the sessions.
    enum Context: Sendable {
        /// Without a session: every partition the request lists, every one answered.
        case sessionless
        /// Every partition the request lists, every one answered, and a session opened for them
        /// with the answer (`open`) if the cache has room.
        case full
        /// The session's partitions after the request's changes; the answer includes those with
        /// something new.
        case incremental(Snapshot)
        /// Answered with this error alone (an unknown session, a stale epoch).
        case failed(KafkaErrorCode)
    }

    private final class Session {
        let id: Int32
        /// The epoch the next fetch of this session must carry.
        var epoch: Int32 = 1
        let usesTopicIDs: Bool
        var entries: [Entry]
        var reported: [Reported]
        var positions: [Key: Int]
        /// Where the next fetch starts reading: after the last partition that had records, so
        /// that under a response size limit the others come first (Kafka moves such partitions
        /// to the end of the session's order).
        var start = 0
        var lastUsed: Int64

        init(id: Int32, usesTopicIDs: Bool, entries: [Entry], reported: [Reported], now: Int64) {
            self.id = id
            self.usesTopicIDs = usesTopicIDs
            self.entries = entries
            self.reported = reported
            self.positions = [:]
            self.lastUsed = now
            self.reindex()
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

    /// Where `request` (Fetch `version`) stands, with the session it names updated: closed, or
    /// changed by the partitions it lists and forgets.
    func context(for request: FetchRequest, version: Int16, now: Int64) -> Context {
        let epoch = request.sessionEpoch
        // Before v7, and fetches asking for no session (id 0, epoch -1): no lock taken.
        guard version >= 7, request.sessionId != 0 || epoch != -1 else { return .sessionless }
        let byID = version >= 13
        return self.state.withLock { state in
            if epoch == 0 || epoch == -1 {
                // A full fetch closes the session it names; epoch -1 asks for no new one.
                if request.sessionId != 0 { Self.remove(request.sessionId, from: &state) }
                return epoch == 0 ? .full : .sessionless
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
            return .incremental(
                Snapshot(
                    sessionID: session.id, epoch: session.epoch, entries: session.entries, reported: session.reported,
                    start: session.start % session.entries.count))
        }
    }

    /// Opens a session for the partitions a full fetch (epoch 0) read, with what its answer
    /// said of each: the session's id, or nil when the cache has no room (the answer then
    /// carries session id 0). A partition listed twice is kept once.
    func open(_ partitions: [(entry: Entry, reported: Reported)], byID: Bool, now: Int64) -> Int32? {
        var entries: [Entry] = []
        var reported: [Reported] = []
        var seen = Set<Key>()
        entries.reserveCapacity(partitions.count)
        reported.reserveCapacity(partitions.count)
        for (entry, told) in partitions where seen.insert(entry.key).inserted {
            entries.append(entry)
            reported.append(told)
        }
        return self.state.withLock { state in
            guard !entries.isEmpty, self.makeRoom(for: entries.count, in: &state, now: now) else { return nil }
            var id: Int32
            repeat {
                id = Int32(truncatingIfNeeded: state.random.next() & 0x7fff_ffff)
            } while id == 0 || state.sessions[id] != nil
            state.sessions[id] = Session(id: id, usesTopicIDs: byID, entries: entries, reported: reported, now: now)
            state.partitions += entries.count
            return id
        }
    }

    /// Notes what the answer to the incremental fetch `snapshot` said of the partitions it
    /// included (by their position in the snapshot), and where the next fetch starts: after
    /// the last one that had records. Ignored when another fetch of the session came since,
    /// whose snapshot is newer.
    func answered(_ snapshot: Snapshot, _ answers: [(position: Int, reported: Reported)], lastWithRecords: Int?) {
        self.state.withLock { state in
            guard let session = state.sessions[snapshot.sessionID], session.epoch == snapshot.epoch,
                session.entries.count == snapshot.count
            else { return }
            for (position, reported) in answers { session.reported[position] = reported }
            if let last = lastWithRecords { session.start = (last + 1) % session.entries.count }
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
            let kept = session.entries.indices.filter { !forgotten.contains(session.entries[$0].key) }
            if kept.count != session.entries.count {
                session.entries = kept.map { session.entries[$0] }
                session.reported = kept.map { session.reported[$0] }
                session.start = 0
                session.reindex()
            }
        }
        for entry in Self.keyed(request.topics, byID: byID) {
            if let position = session.positions[entry.key] {
                session.entries[position].fetch = entry.fetch
            } else {
                session.positions[entry.key] = session.entries.count
                session.entries.append(entry)
                session.reported.append(Reported())
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
