import KafkaProtocol
import Testing

@testable import RafkaServer

@Suite struct FetchSessionCacheTests {
    private static func partitions(
        _ count: Int32, topic: String = "t"
    ) -> [(entry: FetchSessionCache.Entry, reported: FetchSessionCache.Reported)] {
        (0..<count).map {
            (.init(key: .init(topic: topic, topicID: .zero, partition: $0), fetch: .init(partition: $0, fetchOffset: 0)), .init())
        }
    }

    private static func continued(_ context: FetchSessionCache.Context) -> FetchSessionCache.Snapshot? {
        if case .incremental(let snapshot) = context { return snapshot }
        return nil
    }

    private static func failure(_ context: FetchSessionCache.Context) -> KafkaErrorCode? {
        if case .failed(let code) = context { return code }
        return nil
    }

    /// The cache holds at most `slots` sessions and `partitionsMax` partitions across them. A
    /// full cache replaces its least recently used session only once that one has been idle
    /// long enough; until then a new consumer is answered without a session (id 0).
    @Test func theCacheIsBoundedAndReplacesOnlyIdleSessions() throws {
        let cache = FetchSessionCache(slots: 2, partitionsMax: 100, evictionIdleMilliseconds: 1_000)
        let first = try #require(cache.open(Self.partitions(10), byID: false, now: 0))
        let second = try #require(cache.open(Self.partitions(10), byID: false, now: 100))
        #expect(first != second && first > 0 && second > 0)
        #expect(cache.counts == (2, 20))
        #expect(cache.open(Self.partitions(10), byID: false, now: 500) == nil, "no session idle long enough")
        // The first is used again at 600: the second becomes the idlest.
        let again = try #require(Self.continued(cache.context(for: FetchRequest(sessionId: first, sessionEpoch: 1), version: 12, now: 600)))
        #expect(again.count == 10)
        let third = try #require(cache.open(Self.partitions(10), byID: false, now: 1_200))
        #expect(cache.counts == (2, 20))
        let lost = cache.context(for: FetchRequest(sessionId: second, sessionEpoch: 1), version: 12, now: 1_300)
        #expect(Self.failure(lost) == .fetchSessionIdNotFound, "the replaced session still answers")
        #expect(cache.open(Self.partitions(101), byID: false, now: 5_000) == nil, "more than the cache holds")
        // An incremental fetch adding past the bound ends its session.
        let grow = FetchRequest(
            sessionId: third, sessionEpoch: 1,
            topics: [.init(topic: "u", partitions: (0..<90).map { .init(partition: $0, fetchOffset: 0) })])
        #expect(Self.failure(cache.context(for: grow, version: 12, now: 5_000)) == .fetchSessionIdNotFound)
        #expect(cache.counts == (1, 10))
    }

    /// Fetch v7–12 sessions name topics, v13 sessions topic ids: a session is continued only by
    /// fetches of its kind; before v7 there are no sessions. The next fetch starts after the
    /// last partition that had records; what a fetch told is noted unless a later fetch of the
    /// session came meanwhile.
    @Test func sessionsRotateAndNoteOnlyTheirLatestAnswer() throws {
        let cache = FetchSessionCache()
        let full = FetchRequest(sessionId: 0, sessionEpoch: 0, topics: [.init(topic: "t", partitions: [.init(partition: 0)])])
        #expect({ if case .sessionless = cache.context(for: full, version: 6, now: 0) { true } else { false } }())
        #expect({ if case .full = cache.context(for: full, version: 12, now: 0) { true } else { false } }())
        let id = try #require(cache.open(Self.partitions(3), byID: false, now: 0))
        let mixed = cache.context(for: FetchRequest(sessionId: id, sessionEpoch: 1), version: 13, now: 1)
        #expect(Self.failure(mixed) == .fetchSessionTopicIdError)
        let first = try #require(Self.continued(cache.context(for: FetchRequest(sessionId: id, sessionEpoch: 1), version: 12, now: 2)))
        #expect((0..<3).map { first.entries[first.position($0)].key.partition } == [0, 1, 2])
        cache.answered(first, [(0, .init(highWatermark: 5, logStartOffset: 0))], lastWithRecords: 0)
        let second = try #require(Self.continued(cache.context(for: FetchRequest(sessionId: id, sessionEpoch: 2), version: 12, now: 3)))
        #expect((0..<3).map { second.entries[second.position($0)].key.partition } == [1, 2, 0])
        #expect(second.reported[0] == .init(highWatermark: 5, logStartOffset: 0))
        // A late answer to the first fetch, after the second took the session, is not noted.
        cache.answered(first, [(1, .init(highWatermark: 9, logStartOffset: 0))], lastWithRecords: nil)
        let third = try #require(Self.continued(cache.context(for: FetchRequest(sessionId: id, sessionEpoch: 3), version: 12, now: 4)))
        #expect(third.reported[1] == .init())
        // Forgetting a partition keeps what was told of the others.
        let forget = FetchRequest(sessionId: id, sessionEpoch: 4, forgottenTopicsData: [.init(topic: "t", partitions: [1])])
        let fourth = try #require(Self.continued(cache.context(for: forget, version: 12, now: 5)))
        #expect(fourth.entries.map(\.key.partition) == [0, 2] && fourth.reported[0].highWatermark == 5)
    }
}
