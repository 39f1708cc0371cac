import ConveyorCore
import ConveyorProtocol
import Synchronization

/// A task as a handler sees it: exactly what TASK carries (`timeoutMs` is how
/// long the broker allows from receipt before it times the task out).
public typealias WorkerTask = BrokerToWorker.Assignment

/// Runs tasks. Embed a worker in a Swift program by implementing this: `handle`
/// runs on a handler thread (never the socket thread), may block, and either
/// returns the result or throws to fail the task with the error's description.
public protocol TaskHandler: Sendable {
    func handle(_ task: WorkerTask, context: TaskContext) throws -> [UInt8]
}

/// A handler's line back to the worker: progress reports, and cancellation
/// (the broker cancelled the task or its deadline passed).
public final class TaskContext: Sendable {
    private struct State {
        var cancelReason: String?
        var onCancel: [@Sendable (String) -> Void] = []
        var cost: Int64?
    }

    private let state = Mutex(State())
    private let report: @Sendable (UInt8?, String) -> Void

    init(report: @escaping @Sendable (UInt8?, String) -> Void) {
        self.report = report
    }

    /// Sends a PROGRESS to the broker (percent 0–100, or nil for a message only).
    public func progress(_ percent: UInt8?, _ message: String = "") {
        report(percent.map { min($0, 100) }, message)
    }

    /// Records the units the task consumed (e.g. LLM tokens); sent with its
    /// result (DONE `cost`), so the broker can keep a type within a budget.
    public func reportCost(_ units: Int64) {
        state.withLock { $0.cost = max(0, units) }
    }

    /// What `reportCost` recorded, if anything.
    public var cost: Int64? { state.withLock { $0.cost } }

    /// "cancelled" or "timed_out" once the task should stop; nil while it should go on.
    public var cancelReason: String? { state.withLock { $0.cancelReason } }
    public var isCancelled: Bool { cancelReason != nil }

    /// Runs `body` when the task is cancelled (at once if it already is).
    public func onCancel(_ body: @escaping @Sendable (String) -> Void) {
        let reason: String? = state.withLock { s in
            if s.cancelReason == nil { s.onCancel.append(body) }
            return s.cancelReason
        }
        if let reason { body(reason) }
    }

    func cancel(reason: String) {
        let callbacks: [@Sendable (String) -> Void] = state.withLock { s in
            guard s.cancelReason == nil else { return [] }
            s.cancelReason = reason
            defer { s.onCancel.removeAll() }
            return s.onCancel
        }
        for c in callbacks { c(reason) }
    }
}

/// Thrown by a handler when the API it calls answered "rate limited" (HTTP
/// 429): the worker tells the broker RETRY_LATER, the task goes back to the
/// head of its level without using an attempt, and the broker holds the whole
/// type for `afterSeconds` (its default, 30 s, when nil).
public struct RetryLater: Error, Sendable, Equatable {
    public let afterSeconds: Double?
    public init(afterSeconds: Double? = nil) { self.afterSeconds = afterSeconds }
    var afterMs: Int64? { afterSeconds.map { Int64(min(86_400, max(0, $0)) * 1000) } }
}

/// A failure whose message is sent to the broker as the task's error.
public struct TaskFailure: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
}
