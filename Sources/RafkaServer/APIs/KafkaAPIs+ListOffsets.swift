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
    func listOffsets(_ request: ListOffsetsRequest, _ context: RequestContext) -> EventLoopFuture<ListOffsetsResponse?> {
        var futures: [EventLoopFuture<ListOffsetsResponse.ListOffsetsPartitionResponse>] = []
        for topic in request.topics {
            for partition in topic.partitions {
                futures.append(self.listOffset(topic: topic.name, partition: partition, context: context))
            }
        }
        return EventLoopFuture.whenAllSucceed(futures, on: context.eventLoop).map { results in
            var response = ListOffsetsResponse()
            var cursor = 0
            for topic in request.topics {
                let count = topic.partitions.count
                response.topics.append(.init(name: topic.name, partitions: Array(results[cursor..<cursor + count])))
                cursor += count
            }
            return response
        }
    }

    private func listOffset(
        topic: String,
        partition: ListOffsetsRequest.ListOffsetsPartition,
        context: RequestContext
    ) -> EventLoopFuture<ListOffsetsResponse.ListOffsetsPartitionResponse> {
        typealias Result = ListOffsetsResponse.ListOffsetsPartitionResponse
        @Sendable func failed(_ code: KafkaErrorCode) -> Result {
            Result(partitionIndex: partition.partitionIndex, errorCode: code.rawValue, timestamp: -1, offset: -1, leaderEpoch: -1)
        }
        let tp = TopicPartition(topic, partition.partitionIndex)
        guard let shell = self.broker.replicas.shell(for: tp) else {
            return context.eventLoop.makeSucceededFuture(failed(self.missingPartitionError(tp).code))
        }
        if partition.currentLeaderEpoch > 0 {
            return context.eventLoop.makeSucceededFuture(failed(.unknownLeaderEpoch))
        }
        let found: EventLoopFuture<(timestamp: Int64, offset: Int64)?>
        switch partition.timestamp {
        case OffsetSpec.latest:
            found = shell.offsets().map { (-1, $0.highWatermark) }
        case OffsetSpec.earliest:
            found = shell.offsets().map { (-1, $0.logStart) }
        case OffsetSpec.maxTimestamp:
            found = shell.maxTimestamp()
        case let timestamp where timestamp >= 0:
            found = shell.offset(forTimestamp: timestamp)
        default:
            return context.eventLoop.makeSucceededFuture(failed(.invalidRequest))
        }
        return found.map { hit in
            // No record at or after the timestamp: Kafka answers offset -1, timestamp -1.
            Result(
                partitionIndex: partition.partitionIndex, errorCode: 0, timestamp: hit?.timestamp ?? -1,
                offset: hit?.offset ?? -1, leaderEpoch: hit == nil ? -1 : 0)
        }.recover { error in
            failed((error as? BrokerError)?.code ?? .unknownServerError)
        }.hop(to: context.eventLoop)
    }
}
