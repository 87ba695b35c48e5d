import NIOCore

extension EventLoopPromise where Value == Void {
    /// For a request waiting on something (a partition's takeover, a newer image) but no longer
    /// than `deadline`: succeeds then unless it completed first, and runs `cleanup` once it has
    /// completed, either way, so the waiter leaves whatever list held it.
    func succeed(at deadline: NIODeadline, cleanup: @escaping @Sendable () -> Void) {
        let timer = self.futureResult.eventLoop.scheduleTask(deadline: deadline) { self.succeed() }
        self.futureResult.whenComplete { _ in
            timer.cancel()
            cleanup()
        }
    }
}
