/// Checks that a history of operations on independent registers is linearizable (Herlihy and
/// Wing): there is a total order consistent with real time in which every read returns the
/// latest write. Registers are checked one key at a time (linearizability is compositional).
///
/// Writes whose outcome is unknown (the client lost its server) may take effect at any point
/// after they were invoked, or never. Uses Wing and Gong's search with memoization.
public struct LinearizabilityChecker: Sendable {
    public enum Kind: Sendable, Equatable {
        case write(String)
        /// A read that returned this value (nil: the key was never written).
        case read(String?)
    }

    public struct Operation: Sendable, Equatable {
        public var key: String
        public var kind: Kind
        public var invokedAt: Int
        /// nil: no response (a write that may or may not have happened).
        public var completedAt: Int?

        public init(key: String, kind: Kind, invokedAt: Int, completedAt: Int?) {
            self.key = key
            self.kind = kind
            self.invokedAt = invokedAt
            self.completedAt = completedAt
        }
    }

    public init() {}

    /// The first key whose history is not linearizable, or nil.
    public func firstViolation(in history: [Operation]) -> String? {
        let byKey = Dictionary(grouping: history, by: \.key)
        for key in byKey.keys.sorted() {
            // Reads without a response had no effect; writes without one might have.
            let operations = byKey[key]!.filter { $0.completedAt != nil || self.isWrite($0) }
            if !self.isLinearizable(operations) { return key }
        }
        return nil
    }

    private func isWrite(_ operation: Operation) -> Bool {
        if case .write = operation.kind { return true }
        return false
    }

    func isLinearizable(_ operations: [Operation]) -> Bool {
        precondition(operations.count <= 64, "the checker handles up to 64 operations per key")
        var required: UInt64 = 0
        for (i, operation) in operations.enumerated() where operation.completedAt != nil { required |= 1 << UInt64(i) }
        var failed = Set<State>()
        return self.search(operations, done: 0, value: nil, required: required, failed: &failed)
    }

    private struct State: Hashable {
        var done: UInt64
        var value: String?
    }

    private func search(
        _ operations: [Operation],
        done: UInt64,
        value: String?,
        required: UInt64,
        failed: inout Set<State>
    ) -> Bool {
        if done & required == required { return true }
        let state = State(done: done, value: value)
        if failed.contains(state) { return false }
        // An operation can go next only if no remaining operation finished before it began.
        var earliestReturn = Int.max
        for (i, operation) in operations.enumerated() where done & (1 << UInt64(i)) == 0 {
            if let completed = operation.completedAt { earliestReturn = min(earliestReturn, completed) }
        }
        for (i, operation) in operations.enumerated() where done & (1 << UInt64(i)) == 0 {
            guard operation.invokedAt <= earliestReturn else { continue }
            let next = done | (1 << UInt64(i))
            switch operation.kind {
            case .write(let written):
                if self.search(operations, done: next, value: written, required: required, failed: &failed) { return true }
            case .read(let seen):
                if seen == value && self.search(operations, done: next, value: value, required: required, failed: &failed) {
                    return true
                }
            }
        }
        failed.insert(state)
        return false
    }
}
