import DequeModule
import Dispatch
import Foundation
import Synchronization

/// A fixed set of threads that run handlers, so a blocking handler (a child
/// process, an HTTP call) never stalls the socket thread or another task.
final class HandlerPool: Sendable {
    private let jobs = Mutex(Deque<@Sendable () -> Void>())
    private let available = DispatchSemaphore(value: 0)

    init(threads: Int) {
        for i in 0..<max(1, threads) {
            let t = Thread { [self] in self.loop() }
            t.name = "conveyor-handler-\(i)"
            t.start()
        }
    }

    func submit(_ job: @escaping @Sendable () -> Void) {
        jobs.withLock { $0.append(job) }
        available.signal()
    }

    private func loop() {
        while true {
            available.wait()
            if let job = jobs.withLock({ $0.popFirst() }) { job() }
        }
    }
}
