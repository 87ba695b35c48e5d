import Synchronization

/// End-to-end latency without clocks in the records: the producer notes when each
/// acknowledged batch was meant to be sent (by partition and base offset, which the
/// acknowledgement tells), the consumer notes when each batch arrived, and whichever comes
/// second gives the latency of every record in the batch. Record `i` of a batch was meant to be
/// sent at `intended + i × interval` (the open-loop schedule), so latency counts the time a
/// record waited for its batch to fill as well as the time the broker took.
final class SendLedger: Sendable {
    struct Key: Hashable {
        var partition: Int32
        var baseOffset: Int64
    }

    struct Sent {
        var intendedNanoseconds: Int64
        var recordIntervalNanoseconds: Int64
        var records: Int
        /// False for warm-up batches: they are matched but not counted.
        var measured: Bool

        /// Records each record's latency if `arrival` is measured.
        func latencies(arrivedAt arrival: Int64, into histogram: inout LatencyHistogram) {
            guard self.measured else { return }
            if self.recordIntervalNanoseconds == 0 {
                histogram.record(nanoseconds: arrival - self.intendedNanoseconds, count: self.records)
                return
            }
            for index in 0..<self.records {
                histogram.record(nanoseconds: arrival - self.intendedNanoseconds - Int64(index) * self.recordIntervalNanoseconds)
            }
        }
    }

    private struct State {
        var sent: [Key: Sent] = [:]
        var arrived: [Key: Int64] = [:]
        var latencies = LatencyHistogram()
        /// Batches acknowledged (or arrived) at a key another one was still waiting at.
        var sharedKeys = 0
    }

    private let state = Mutex(State())
    /// The highest end-to-end latency (ns) since the progress line last took it, warm-up included.
    let worstLatency = Atomic<Int64>(0)

    /// The producer's side, once the batch is acknowledged at `key`.
    func acknowledged(_ key: Key, _ sent: Sent) {
        self.state.withLock { state in
            if let arrival = state.arrived.removeValue(forKey: key) {
                sent.latencies(arrivedAt: arrival, into: &state.latencies)
                self.worstLatency.max(arrival - sent.intendedNanoseconds, ordering: .relaxed)
            } else if state.sent.updateValue(sent, forKey: key) != nil {
                state.sharedKeys += 1
            }
        }
    }

    /// The consumer's side, when the batch at `key` arrived.
    func arrived(_ key: Key, at arrival: Int64) {
        self.state.withLock { state in
            if let sent = state.sent.removeValue(forKey: key) {
                sent.latencies(arrivedAt: arrival, into: &state.latencies)
                self.worstLatency.max(arrival - sent.intendedNanoseconds, ordering: .relaxed)
            } else if state.arrived.updateValue(arrival, forKey: key) != nil {
                state.sharedKeys += 1
            }
        }
    }

    /// The end-to-end latencies of every matched, measured record.
    var latencies: LatencyHistogram { self.state.withLock { $0.latencies } }

    /// Batches acknowledged but never seen arriving (a run that ended with records missing).
    var unmatched: Int { self.state.withLock { $0.sent.count } }

    /// Batches that arrived but were never acknowledged: sent again after their request failed
    /// though the broker had written them (a producer without idempotence duplicates them so).
    var unacknowledged: Int { self.state.withLock { $0.arrived.count } }

    /// Batches acknowledged, or arrived, at a partition and base offset another batch was
    /// still waiting at: one of the two lost its latencies. Neither a broker nor this tool
    /// should ever cause it (a broker giving two batches one offset loses records).
    var sharedKeys: Int { self.state.withLock { $0.sharedKeys } }
}
