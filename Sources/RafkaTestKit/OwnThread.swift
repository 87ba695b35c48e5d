import Foundation

/// Runs minutes of CPU-bound work (a simulation) on a thread of its own: on Swift's
/// cooperative pool (one thread per core) it would starve the async tests of every other suite
/// running beside it.
public func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: work()) }.start()
    }
}
