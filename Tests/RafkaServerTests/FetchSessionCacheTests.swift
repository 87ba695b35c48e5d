import KafkaProtocol
import Testing

@testable import RafkaServer

@Suite struct FetchSessionCacheTests {
    private static func full(_ partitions: Int32, topic: String = "t") -> FetchRequest {
        FetchRequest(
            sessionId: 0, sessionEpoch: 0,
            topics: [.init(topic: topic, partitions: (0..<partitions).map { .init(partition: $0, fetchOffset: 0) })])
    }

    private static func opened(_ context: FetchSessionCache.Context) -> Int32? {
        if case .full(let id) = context { return id }
        return nil
    }

    /// The cache holds at most `slots` sessions and `partitionsMax` partitions across them. A
    /// full cache replaces its least recently used session only once that one has been idle
    /// long enough; until then a new consumer is answered without a session (id 0).
    @Test func theCacheIsBoundedAndReplacesOnlyIdleSessions() throws {
        let cache = FetchSessionCache(slots: 2, partitionsMax: 100, evictionIdleMilliseconds: 1_000)
        let first = try #require(Self.opened(cache.context(for: Self.full(10), version: 12, now: 0)))
        let second = try #require(Self.opened(cache.context(for: Self.full(10), version: 12, now: 100)))
        #expect(first != second && first > 0 && second > 0)
        #expect(cache.counts == (2, 20))
        #expect(Self.opened(cache.context(for: Self.full(10), version: 12, now: 500)) == nil, "no session idle long enough")
        // The first is used again at 600: the second becomes the idlest.
        let again = FetchRequest(sessionId: first, sessionEpoch: 1)
        guard case .incremental(first, let partitions) = cache.context(for: again, version: 12, now: 600) else {
            Issue.record("the first session did not continue")
            return
        }
        #expect(partitions.count == 10)
        let third = try #require(Self.opened(cache.context(for: Self.full(10), version: 12, now: 1_200)))
        #expect(cache.counts == (2, 20))
        let lost = FetchRequest(sessionId: second, sessionEpoch: 1)
        guard case .failed(.fetchSessionIdNotFound) = cache.context(for: lost, version: 12, now: 1_300) else {
            Issue.record("the replaced session still answers")
            return
        }
        // More partitions than the cache holds: answered without a session.
        #expect(Self.opened(cache.context(for: Self.full(101), version: 12, now: 5_000)) == nil)
        // An incremental fetch adding past the bound ends its session.
        let grow = FetchRequest(
            sessionId: third, sessionEpoch: 1,
            topics: [.init(topic: "u", partitions: (0..<90).map { .init(partition: $0, fetchOffset: 0) })])
        guard case .failed(.fetchSessionIdNotFound) = cache.context(for: grow, version: 12, now: 5_000) else {
            Issue.record("a session grew past the bound")
            return
        }
        #expect(cache.counts == (1, 10))
    }

    /// Fetch v7–12 sessions name topics, v13 sessions topic ids: a session is continued only by
    /// fetches of its kind; before v7 there are no sessions.
    @Test func sessionsKeepToTheirTopicNaming() throws {
        let cache = FetchSessionCache()
        #expect({ if case .sessionless = cache.context(for: Self.full(3), version: 6, now: 0) { true } else { false } }())
        let id = try #require(Self.opened(cache.context(for: Self.full(3), version: 12, now: 0)))
        guard case .failed(.fetchSessionTopicIdError) = cache.context(
            for: FetchRequest(sessionId: id, sessionEpoch: 1), version: 13, now: 1)
        else {
            Issue.record("a v13 fetch continued a session of topic names")
            return
        }
        // Answers move the partitions that had records to the end of the session's order.
        guard case .incremental(_, let before) = cache.context(for: FetchRequest(sessionId: id, sessionEpoch: 1), version: 12, now: 2)
        else {
            Issue.record("the session did not continue")
            return
        }
        #expect(before.map(\.key.partition) == [0, 1, 2])
        cache.answered(id, [.init(key: before[0].key, highWatermark: 5, logStartOffset: 0, hadRecords: true)])
        guard case .incremental(_, let after) = cache.context(for: FetchRequest(sessionId: id, sessionEpoch: 2), version: 12, now: 3)
        else {
            Issue.record("the session did not continue")
            return
        }
        #expect(after.map(\.key.partition) == [1, 2, 0])
        #expect(after.last?.highWatermark == 5)
    }
}
