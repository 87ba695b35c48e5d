import KafkaProtocol
import NIOCore
import RafkaCore

extension KafkaAPIs {
    /// Kafka's special ListOffsets timestamps.
    enum OffsetSpec {
        static let latest: Int64 = -1
        static let earliest: Int64 = -2
        static let maxTimestamp: Int64 = -3
    }

    /// ListOffsets v1–7: earliest (-2), latest (-1), max timestamp (-3, v7) and by timestamp.
    ///
    /// Earliest and latest are answered on the connection's loop from the offsets each partition
    /// last published, without a hop to its loop or a future per partition: asking for the ends
    /// of 10,000 partitions, as a lag monitor does, took the broker 55 ms a request with them and
    /// 4.4 ms without (`benchmarks/idle_partitions.py`). Searches by time run on the partitions'
    /// loops and the blocking pool.
    func listOffsets(_ request: ListOffsetsRequest, _ context: RequestContext) -> EventLoopFuture<ListOffsetsResponse?> {
        typealias Result = ListOffsetsResponse.ListOffsetsPartitionResponse
        var answers: [[Result]] = []
        var searches: [(topic: Int, slot: Int, search: EventLoopFuture<Result>)] = []
        let snapshot = self.epochSnapshot
        for (t, topic) in request.topics.enumerated() {
            var partitions: [Result] = []
            partitions.reserveCapacity(topic.partitions.count)
            for partition in topic.partitions {
                switch self.listOffset(topic: topic.name, partition: partition, snapshot: snapshot, context: context) {
                case .answered(let answer):
                    partitions.append(answer)
                case .searching(let search):
                    searches.append((t, partitions.count, search))
                    partitions.append(Result(partitionIndex: partition.partitionIndex))
                }
            }
            answers.append(partitions)
        }
        let names = request.topics.map(\.name)
        guard !searches.isEmpty else {
            return context.eventLoop.makeSucceededFuture(Self.listOffsetsResponse(names, answers))
        }
        let placed = searches.map { (topic: $0.topic, slot: $0.slot) }
        let answered = answers
        return EventLoopFuture.whenAllSucceed(searches.map(\.search), on: context.eventLoop).map { found in
            var answers = answered
            for (place, answer) in zip(placed, found) { answers[place.topic][place.slot] = answer }
            return Self.listOffsetsResponse(names, answers)
        }
    }

    private static func listOffsetsResponse(
        _ names: [String],
        _ answers: [[ListOffsetsResponse.ListOffsetsPartitionResponse]]
    ) -> ListOffsetsResponse {
        var response = ListOffsetsResponse()
        response.topics = zip(names, answers).map { .init(name: $0, partitions: $1) }
        return response
    }

    /// One partition's answer, now or once a search by time finds it.
    private enum OffsetAnswer {
        case answered(ListOffsetsResponse.ListOffsetsPartitionResponse)
        case searching(EventLoopFuture<ListOffsetsResponse.ListOffsetsPartitionResponse>)
    }

    private func listOffset(
        topic: String,
        partition: ListOffsetsRequest.ListOffsetsPartition,
        snapshot: MetadataCache.Snapshot?,
        context: RequestContext
    ) -> OffsetAnswer {
        typealias Result = ListOffsetsResponse.ListOffsetsPartitionResponse
        @Sendable func failed(_ code: KafkaErrorCode) -> Result {
            Result(partitionIndex: partition.partitionIndex, errorCode: code.rawValue, timestamp: -1, offset: -1, leaderEpoch: -1)
        }
        let tp = TopicPartition(topic, partition.partitionIndex)
        // The partition's current epoch: a consumer validates a position it found here against
        // it (`offsetForLeaderEpoch`, where the current epoch ends at the log end).
        let epoch = self.leaderEpoch(of: tp, in: snapshot)
        @Sendable func found(_ hit: (timestamp: Int64, offset: Int64)?) -> Result {
            // No record at or after the timestamp: Kafka answers offset -1, timestamp -1.
            Result(
                partitionIndex: partition.partitionIndex, errorCode: 0, timestamp: hit?.timestamp ?? -1,
                offset: hit?.offset ?? -1, leaderEpoch: hit == nil ? -1 : epoch)
        }
        guard let shell = self.broker.replicas.shell(for: tp) else {
            return .answered(failed(self.missingPartitionError(tp).code))
        }
        if let error = Self.leaderEpochError(partition.currentLeaderEpoch, current: epoch) {
            return .answered(failed(error.code))
        }
        let search: EventLoopFuture<(timestamp: Int64, offset: Int64)?>
        switch partition.timestamp {
        case OffsetSpec.latest, OffsetSpec.earliest:
            guard let offsets = shell.publishedOffsets() else { return .answered(failed(.unknownTopicOrPartition)) }
            return .answered(found((-1, partition.timestamp == OffsetSpec.latest ? offsets.logEnd : offsets.logStart)))
        case OffsetSpec.maxTimestamp:
            search = shell.maxTimestamp()
        case let timestamp where timestamp >= 0:
            search = shell.offset(forTimestamp: timestamp)
        default:
            return .answered(failed(.invalidRequest))
        }
        return .searching(
            search.map(found).recover { error in
                failed((error as? BrokerError)?.code ?? .unknownServerError)
            }.hop(to: context.eventLoop))
    }
}
