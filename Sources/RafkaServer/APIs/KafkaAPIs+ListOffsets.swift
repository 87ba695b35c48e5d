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
        Self.perPartition(request.topics, \.partitions, on: context.eventLoop) { topic, partition in
            self.listOffset(topic: topic.name, partition: partition, context: context)
        }.map { grouped in
            var response = ListOffsetsResponse()
            response.topics = zip(request.topics, grouped).map { .init(name: $0.name, partitions: $1) }
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
        if let error = self.leaderEpochError(partition.currentLeaderEpoch) {
            return context.eventLoop.makeSucceededFuture(failed(error.code))
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
