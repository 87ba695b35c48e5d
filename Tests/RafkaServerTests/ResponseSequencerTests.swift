@testable import RafkaServer
import Testing

@Suite struct ResponseSequencerTests {
    @Test func responsesLeaveInRequestOrder() {
        var sequencer = ResponseSequencer<String>()
        let a = sequencer.begin()
        let b = sequencer.begin()
        let c = sequencer.begin()
        #expect(sequencer.finish(c, response: "c") == [])
        #expect(sequencer.finish(b, response: "b") == [])
        #expect(sequencer.inFlight == 3)
        #expect(sequencer.finish(a, response: "a") == ["a", "b", "c"])
        #expect(sequencer.inFlight == 0)
    }

    @Test func requestsWithoutResponsesDoNotBlockTheOnesAfter() {
        var sequencer = ResponseSequencer<String>()
        let a = sequencer.begin()
        let b = sequencer.begin()
        #expect(sequencer.finish(b, response: "b") == [])
        #expect(sequencer.finish(a, response: nil) == ["b"])
    }

    @Test func randomCompletionOrderAlwaysYieldsSequence() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<100 {
            var sequencer = ResponseSequencer<Int>()
            let ids = (0..<20).map { _ in sequencer.begin() }
            var out: [Int] = []
            for id in ids.shuffled(using: &generator) { out += sequencer.finish(id, response: Int(id)) }
            #expect(out == Array(0..<20))
        }
    }
}
