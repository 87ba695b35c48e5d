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
    /// cache): the newest epoch at or before the requested one that the log has, and where the
    /// next begins (the log end for the current epoch). Copies only diverge by an unclean
    /// takeover, and the history tells that apart even once the new leader's log has grown past
    /// the consumer's position: the epochs it read are not in it. Each partition's answer is
    /// read on its loop.
    func offsetForLeaderEpoch(
        _ request: OffsetForLeaderEpochRequest,
        _ context: RequestContext
    ) -> EventLoopFuture<OffsetForLeaderEpochResponse?> {
        typealias Answer = OffsetForLeaderEpochResponse.EpochEndOffset
        let snapshot = self.epochSnapshot
        let answers: [[EventLoopFuture<Answer>]] = request.topics.map { topic in
            topic.partitions.map { partition in
                let tp = TopicPartition(topic.topic, partition.partition)
                func failed(_ code: KafkaErrorCode) -> EventLoopFuture<Answer> {
                    context.eventLoop.makeSucceededFuture(Answer(errorCode: code.rawValue, partition: partition.partition))
                }
                guard let shell = self.broker.replicas.shell(for: tp) else {
                    return failed(self.missingPartitionError(tp).code)
                }
                let current = self.leaderEpoch(of: tp, in: snapshot)
                if let error = Self.leaderEpochError(partition.currentLeaderEpoch, current: current) {
                    return failed(error.code)
                }
                return shell.endOffset(of: partition.leaderEpoch, current: current)
                    .map { found in
                        // Undefined (an epoch this partition has not reached): -1 and -1, as Kafka answers it.
                        Answer(
                            partition: partition.partition, leaderEpoch: found?.epoch ?? -1,
                            endOffset: found?.endOffset ?? -1)
                    }
                    .recover { [apis = self] error in
                        Answer(errorCode: apis.servingError(error, tp).code.rawValue, partition: partition.partition)
                    }
                    .hop(to: context.eventLoop)
            }
        }
        return EventLoopFuture.whenAllSucceed(answers.flatMap { $0 }, on: context.eventLoop).map { flat in
            var response = OffsetForLeaderEpochResponse()
            var next = flat.makeIterator()
            response.topics = zip(request.topics, answers).map { topic, partitions in
                .init(topic: topic.topic, partitions: partitions.map { _ in next.next()! })
            }
            return response
        }
    }
}
