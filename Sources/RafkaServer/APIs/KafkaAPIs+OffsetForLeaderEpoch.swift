import KafkaProtocol
import NIOCore
import RafkaCore

extension KafkaAPIs {
    /// OffsetForLeaderEpoch v0–4 (KIP-320): where a leader epoch ends in a partition's log. A
    /// consumer that sees its partition's leader epoch change (on a data node, when a join, a
    /// leave or a fencing moves the partition) asks this of the leader for the epoch of the last
    /// record it read, and resets its position if the answer is below it: records it read are
    /// gone (log truncation).
    ///
    /// Answered from the log's leader epoch history (`LeaderEpochHistory`, Kafka's leader epoch
    /// cache) as the partition last published it, without a hop to its loop: the newest epoch
    /// at or before the requested one that the log has, and where the next begins (the log end
    /// for the current epoch). Copies only diverge by an unclean takeover, and the history tells
    /// that apart even once the new leader's log has grown past the consumer's position: the
    /// epochs it read are not in it.
    func offsetForLeaderEpoch(
        _ request: OffsetForLeaderEpochRequest,
        _ context: RequestContext
    ) -> EventLoopFuture<OffsetForLeaderEpochResponse?> {
        typealias Answer = OffsetForLeaderEpochResponse.EpochEndOffset
        let snapshot = self.epochSnapshot
        var response = OffsetForLeaderEpochResponse()
        response.topics = request.topics.map { topic in
            .init(
                topic: topic.topic,
                partitions: topic.partitions.map { partition in
                    let tp = TopicPartition(topic.topic, partition.partition)
                    guard let shell = self.broker.replicas.shell(for: tp) else {
                        return Answer(errorCode: self.missingPartitionError(tp).code.rawValue, partition: partition.partition)
                    }
                    let current = self.leaderEpoch(of: tp, in: snapshot)
                    if let error = Self.leaderEpochError(partition.currentLeaderEpoch, current: current) {
                        return Answer(errorCode: error.code.rawValue, partition: partition.partition)
                    }
                    do {
                        // Undefined (an epoch this partition has not reached): -1 and -1, as Kafka answers it.
                        let found = try shell.endOffset(of: partition.leaderEpoch, current: current)
                        return Answer(partition: partition.partition, leaderEpoch: found?.epoch ?? -1, endOffset: found?.endOffset ?? -1)
                    } catch {
                        return Answer(errorCode: self.servingError(error, tp).code.rawValue, partition: partition.partition)
                    }
                })
        }
        return context.eventLoop.makeSucceededFuture(response)
    }
}
