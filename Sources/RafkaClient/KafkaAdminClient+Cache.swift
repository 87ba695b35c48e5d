import KafkaProtocol
import NIOCore

/// One node's hot cache as `cache describe` shows it (counters since the node started).
public struct CacheReport: Sendable, Codable, Equatable {
    public var node: Int32
    public var bytesMax: Int64
    public var maxAgeMilliseconds: Int64
    public var bytes: Int64
    public var batches: Int64
    public var partitions: Int32
    public var hits: Int64
    public var hitBytes: Int64
    public var misses: Int64
    public var missBytes: Int64
    public var evictedForBytes: Int64
    public var evictedForAge: Int64
    /// Reads answered from memory over reads that returned data (1 before any read).
    public var hitRatio: Double

    init(_ response: DescribeCacheResponse) {
        self.node = response.nodeID
        self.bytesMax = response.bytesMax
        self.maxAgeMilliseconds = response.maxAgeMilliseconds
        self.bytes = response.bytes
        self.batches = response.batches
        self.partitions = response.partitions
        self.hits = response.hits
        self.hitBytes = response.hitBytes
        self.misses = response.misses
        self.missBytes = response.missBytes
        self.evictedForBytes = response.evictedForBytes
        self.evictedForAge = response.evictedForAge
        let reads = response.hits + response.misses
        self.hitRatio = reads == 0 ? 1 : Double(response.hits) / Double(reads)
    }
}

extension KafkaAdminClient {
    /// The hot cache of the connected node and of every other broker the cluster lists (a node
    /// that does not answer within 5 s is left out).
    public func describeCaches() async throws -> [CacheReport] {
        guard self.connection.supports(DescribeCacheRequest.self) else {
            throw KafkaClientError("this server has no hot cache to describe")
        }
        let own = try await self.connection.send(DescribeCacheRequest())
        var reports = [CacheReport(own)]
        for broker in try await self.describeCluster().brokers where broker.id != own.nodeID {
            guard let answer = await Self.ask(host: broker.host, port: broker.port, DescribeCacheRequest()) else { continue }
            reports.append(CacheReport(answer))
        }
        return reports.sorted { $0.node < $1.node }
    }
}
