import RafkaCore
import Testing

@testable import RafkaServer

@Suite struct PartitionIndexTests {
    /// The index by topic follows every change of the index by partition: set, replace, remove
    /// (a topic's last partition takes the topic with it), remove all.
    @Test func theTopicViewFollowsEveryChange() {
        var index = PartitionIndex<String>()
        index[TopicPartition("a", 0)] = "a0"
        index[TopicPartition("a", 1)] = "a1"
        index[TopicPartition("b", 0)] = "b0"
        #expect(index.count == 3 && index.byTopic["a"] == [0: "a0", 1: "a1"] && index.byTopic["b"] == [0: "b0"])
        index[TopicPartition("a", 1)] = "a1'"
        #expect(index[TopicPartition("a", 1)] == "a1'" && index.byTopic["a"]?[1] == "a1'")
        #expect(index.removeValue(forKey: TopicPartition("a", 0)) == "a0")
        #expect(index.removeValue(forKey: TopicPartition("a", 7)) == nil)
        #expect(index.byTopic["a"] == [1: "a1'"])
        index[TopicPartition("b", 0)] = nil
        #expect(index.byTopic["b"] == nil && index.count == 1 && Set(index.keys) == [TopicPartition("a", 1)])
        index.removeAll()
        #expect(index.count == 0 && index.byTopic.isEmpty)
    }
}
