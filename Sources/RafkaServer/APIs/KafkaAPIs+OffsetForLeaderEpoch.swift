import KafkaProtocol
import NIOCore
import RafkaCore

extension KafkaAPIs {
    /// OffsetForLeaderEpoch v0–4 (KIP-320): where a leader epoch ends in a partition's log. A
    /// consumer that sees its partition's leader epoch change (on a data node, when a join, a
    /// leave or a fencing moves the partition) asks this of the leader for the epoch of the last record it read, and resets
    /// its position if the answer is below it: records it read are gone (log truncation).
    ///
    /// A partition's copies never diverge here unless a topic allows an unclean takeover: each
    /// leadership's log begins as the one before it ended (takeovers copy the newest copy whole),
    /// so the end of any epoch up to the current one is at most the log end, and the answer is
    /// the requested epoch and the log end. A log that lost records in an unclean takeover is
    /// shorter than a consumer's position, which it then detects; one that grew past it again
    /// cannot be told from the consumer's history without a per-epoch index, which is not kept.
    func offsetForLeaderEpoch(
        _ request: OffsetForLeaderEpochRequest,
        _ context: RequestContext
    ) -> EventLoopFuture<OffsetForLeaderEpochResponse?> {
        let snapshot = self.epochSnapshot
        var response = OffsetForLeaderEpochResponse()
        response.topics = request.topics.map { topic in
            .init(
                topic: topic.topic,
                partitions: topic.partitions.map { partition in
                    typealias Answer = OffsetForLeaderEpochResponse.EpochEndOffset
                    let tp = TopicPartition(topic.topic, partition.partition)
                    guard let shell = self.broker.replicas.shell(for: tp) else {
                        return Answer(errorCode: self.missingPartitionError(tp).code.rawValue, partition: partition.partition)
                    }
                    let current = self.leaderEpoch(of: tp, in: snapshot)
                    if let error = Self.leaderEpochError(partition.currentLeaderEpoch, current: current) {
                        return Answer(errorCode: error.code.rawValue, partition: partition.partition)
                    }
                    guard partition.leaderEpoch <= current, let offsets = shell.publishedOffsets() else {
                        // An epoch this log has not reached: undefined, as Kafka answers it.
                        return Answer(partition: partition.partition)
                    }
                    return Answer(partition: partition.partition, leaderEpoch: partition.leaderEpoch, endOffset: offsets.logEnd)
                })
        }
        return context.eventLoop.makeSucceededFuture(response)
    }
}
