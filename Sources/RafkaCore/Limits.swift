/// Every bound Rafka enforces, in one place.
///
/// A queue, batch or buffer without a maximum is a way for one client to take the whole process
/// down; each limit here is named after what it bounds, with its unit last.
public enum Limits {
    /// The largest request frame a client may send (Kafka's `socket.request.max.bytes`).
    public static let requestBytesMaxDefault = 100 * 1024 * 1024
    /// Requests decoded but not yet answered on one connection; past this the connection stops
    /// reading until responses drain (Kafka answers one at a time; librdkafka pipelines up to 5).
    /// Only produce and fetch overlap others (`RequestRouter.overlapping`).
    public static let inFlightRequestsPerConnectionMax = 64
    /// Request bytes held in memory across all connections at once; past it, connections stop
    /// reading until requests are answered.
    public static let requestMemoryBytesMaxDefault = 512 * 1024 * 1024
    /// Records held in memory for fetch responses, across all connections, until the responses
    /// are written: read from the device, or the hot cache's batches. Past it, records are sent
    /// from their file instead (`sendfile` on the connection's loop, which may then wait for the
    /// device): memory stays bounded however many fetches are pipelined and left unread.
    public static let readMemoryBytesMaxDefault = 256 * 1024 * 1024
    /// Open client connections per listener; connections past this are closed at accept.
    public static let connectionsMaxDefault = 10_000
    /// How long a client may read nothing of its responses before its connection is closed
    /// (`response-write-timeout-ms`): they hold memory, or the segments' files open. Kafka's
    /// `connections.max.idle.ms`, so a client Kafka keeps, Rafka keeps.
    public static let responseWriteTimeoutMillisecondsDefault: Int64 = 600_000
    /// The largest record batch a topic may accept unless `max.message.bytes` says otherwise
    /// (Kafka's default, 1 MiB + the batch overhead).
    public static let messageBytesMaxDefault = 1_048_588
    /// The largest `max.message.bytes` a topic may set.
    public static let messageBytesMaxCeiling = 64 * 1024 * 1024
    /// How much a compressed batch may expand to while it is validated. A batch that claims more
    /// is rejected as corrupt rather than decompressed without bound.
    public static let decompressedBatchBytesMax = 128 * 1024 * 1024
    /// The decompression buffer a thread keeps between batches it validates; one grown past this
    /// by a larger batch is let go after it.
    public static let decompressionBufferBytesKeptMax = 8 << 20
    /// Fetch responses are capped at this many bytes whatever the client asks.
    public static let fetchResponseBytesMax = 64 * 1024 * 1024
    /// How much larger than a produced batch the request frame it came in may be for the batch
    /// to be appended and cached where it is, when that is more than a copy would take
    /// (`PartitionLog.keepsInPlace`); beyond it the batch is copied, so that a cached batch
    /// never keeps a much larger frame in memory.
    public static let inPlaceSlackBytes = 4096
    /// Bytes appended to a segment after which its writeback is started (without waiting for
    /// it), so that dirty pages never pile up to where the kernel throttles writers.
    public static let writebackChunkBytes = 1 << 20
    /// The most file blocks an active segment reserves ahead of its writes (see
    /// `LogSegment.reserveBlocks`); at most this much disk is reserved and unused per partition.
    public static let segmentReservationBytesMax = 4 << 20
    /// The longest a fetch may wait for `min.bytes` to arrive.
    public static let fetchWaitMillisecondsMax = 60_000
    /// Partitions one topic may have on this node.
    public static let partitionsPerTopicMax = 100_000
    /// Producer ids a single partition remembers for idempotence before the oldest are evicted.
    public static let producerIdsPerPartitionMax = 10_000
    /// Batches per producer whose sequence numbers are kept for duplicate detection (Kafka keeps 5).
    public static let producerBatchesRemembered = 5
    /// Topic names: Kafka's limit on length.
    public static let topicNameLengthMax = 249
    /// Tokens one data node may own on the ring.
    public static let ringTokensPerNodeMax = 1024
    /// Tokens a data node gets unless configured: with the controllers' allocation, 16 keep
    /// partition load within 1.3× of the mean at 1,000 nodes (`RingSimulationTests` prints the
    /// table); more cost Chord state and stabilization traffic per node.
    public static let ringTokensPerNodeDefault = 16
    /// Stretches of the ring a metadata image's leader-epoch map keeps at the least before it
    /// raises its oldest epochs (it keeps up to 4 per token besides): a few kilobytes of image.
    public static let leaderEpochArcsMin = 1024
    /// Epochs a partition log's leader epoch history keeps (a line of its recovery-point file,
    /// rewritten at every checkpoint): past it the second oldest is forgotten, so that the
    /// oldest epoch still begins at the log start and the one before the forgotten runs on to
    /// where the next begins.
    public static let leaderEpochHistoryEntriesMax = 1024
}
