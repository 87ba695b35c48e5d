/// Keeps a connection's responses in request order while requests are handled concurrently
/// (Kafka clients match responses by order as well as correlation id).
///
/// ```
///   begin() ──► seq n in flight ──► finish(n, response) ──► responses now writable, in order
///                                        │ (response nil: acks=0 produce, nothing is sent)
/// ```
/// Pure; the connection handler owns one on its event loop.
struct ResponseSequencer<Response> {
    private var nextSequence: UInt64 = 0
    private var nextToSend: UInt64 = 0
    private var finished: [UInt64: Response?] = [:]

    /// Requests begun and not yet released in order.
    var inFlight: Int { Int(self.nextSequence - self.nextToSend) }

    mutating func begin() -> UInt64 {
        defer { self.nextSequence += 1 }
        return self.nextSequence
    }

    /// Marks `sequence` done; returns the responses that can now be written, oldest first.
    mutating func finish(_ sequence: UInt64, response: Response?) -> [Response] {
        precondition(sequence >= self.nextToSend && sequence < self.nextSequence, "unknown sequence \(sequence)")
        precondition(self.finished[sequence] == nil, "sequence \(sequence) finished twice")
        self.finished[sequence] = .some(response)
        var ready: [Response] = []
        while let next = self.finished.removeValue(forKey: self.nextToSend) {
            if let response = next { ready.append(response) }
            self.nextToSend += 1
        }
        return ready
    }
}
