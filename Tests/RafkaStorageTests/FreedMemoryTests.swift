import RafkaCore
import Testing

@Suite struct FreedMemoryTests {
    /// glibc takes every setting `rafka` and `rafka-bench` ask of it at start: a value it
    /// refuses (a threshold past its 32 MiB ceiling, say) turns the call false.
    @Test func theAllocatorTakesEverySetting() {
        #if os(Linux)
        #expect(FreedMemory.keepForReuse())
        #endif
    }
}
