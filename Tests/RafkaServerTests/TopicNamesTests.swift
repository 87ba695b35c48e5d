@testable import RafkaServer
import Testing

@Suite struct TopicNamesTests {
    /// Kafka refuses a topic whose name differs from an existing one only by '.' versus '_'.
    @Test func periodsAndUnderscoresCollide() {
        #expect(TopicNames.collide("a.b", "a_b"))
        #expect(TopicNames.collide("x_y.z", "x.y_z"))
        #expect(!TopicNames.collide("a.b", "a.b"), "a name does not collide with itself")
        #expect(!TopicNames.collide("a.b", "a-b"))
        #expect(!TopicNames.collide("a.b", "a.bc"))
        #expect(!TopicNames.collide("ab", "a_"))
        #expect(TopicNames.mayCollide("a_b") && TopicNames.mayCollide("a.b") && !TopicNames.mayCollide("a-b"))
    }

    @Test(arguments: ["", ".", "..", String(repeating: "x", count: 250), "a b", "ü"])
    func illegalNamesAreRefused(name: String) {
        #expect(throws: BrokerError.self) { try TopicNames.validate(name) }
    }
}
