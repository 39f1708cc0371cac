/// Why a worker is told to stop a task.
public enum CancelReason: String, Sendable {
    case cancelled
    case timedOut = "timed_out"
}

/// Why a submission was refused: a stable `code` for programs, a `message` for people.
public struct Rejection: Error, Sendable, Equatable {
    public let code: String
    public let message: String
    public init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }
    public static func queueFull(_ max: Int) -> Rejection { .init("queue_full", "queue is full (\(max) tasks queued)") }
    public static let shuttingDown = Rejection("shutting_down", "broker is shutting down")
}

public struct Accepted: Sendable, Equatable {
    public let id: TaskID
    /// Queued tasks that will be dispatched before this one; -1 if not queued (delayed, or an earlier duplicate).
    public let position: Int
    /// True when an idempotency key matched an existing task.
    public let duplicate: Bool
    /// The task's state now (for a duplicate: whatever the original reached).
    public let state: TaskState
    public init(id: TaskID, position: Int, duplicate: Bool, state: TaskState = .queued) {
        self.id = id
        self.position = position
        self.duplicate = duplicate
        self.state = state
    }
}

/// Every state change, in order. The journal persists these and the event
/// stream publishes them: one source of truth for "what happened".
public enum TaskEvent: Sendable {
    case queued(TaskID, position: Int)
    case delayed(TaskID, runAt: Timestamp)
    case due(TaskID)
    case started(TaskID, attempt: UInt16, worker: String, latencyUs: Int64)
    case progress(TaskID, attempt: UInt16, percent: UInt8?, message: String)
    case succeeded(TaskID, durationUs: Int64)
    case failed(TaskID, error: String, durationUs: Int64)
    case timedOut(TaskID, durationUs: Int64)
    case retrying(TaskID, runAt: Timestamp, error: String)
    case reassigned(TaskID, fromWorker: String)
    case returned(TaskID, fromWorker: String)
    case cancelled(TaskID, previous: TaskState)
    case deadRetried(TaskID)
    case purged(TaskID)
    case expired(TaskID)
    /// A worker answered RETRY_LATER: the task is back at the head of its level.
    case rateLimited(TaskID, fromWorker: String, retryAfterMs: Int64)
    case workerJoined(name: String, types: [String], capacity: Int)
    case workerLost(name: String, reason: String)
    /// A type is held (429 back-pressure) until the wall-clock time `until`.
    case typeHeld(type: String, until: Timestamp)
    case typeReleased(type: String)
    /// Journaled: paused types stay paused across a restart.
    case typePaused(type: String)
    case typeResumed(type: String)

    public var taskID: TaskID? {
        switch self {
        case .queued(let id, _), .delayed(let id, _), .due(let id), .started(let id, _, _, _),
             .progress(let id, _, _, _), .succeeded(let id, _), .failed(let id, _, _), .timedOut(let id, _),
             .retrying(let id, _, _), .reassigned(let id, _), .returned(let id, _), .cancelled(let id, _),
             .deadRetried(let id), .purged(let id), .expired(let id), .rateLimited(let id, _, _):
            id
        case .workerJoined, .workerLost, .typeHeld, .typeReleased, .typePaused, .typeResumed: nil
        }
    }
}

/// One task type's figures for stats (§7.4 `types`).
public struct TypeStats: Sendable, Equatable {
    public let type: String
    public let queued: Int
    public let running: Int
    public let concurrencyLimit: Int?
    public let rateLimit: WindowLimit?
    public let dispatchesInWindow: Int
    public let costLimit: WindowLimit?
    public let costInWindow: Int64
    /// Wall-clock end of a hold, when held.
    public let heldUntil: Timestamp?
    public let paused: Bool
    /// Why no task of the type may start now, if so.
    public let blocked: WaitReason?
}

/// What the scheduler asks its adapter to do, in order.
public enum SchedulerOutput: Sendable {
    case assign(worker: PeerID, task: TaskID, attempt: UInt16)
    case cancelOnWorker(worker: PeerID, task: TaskID, attempt: UInt16, reason: CancelReason)
    case notifyProgress(client: PeerID, task: TaskID, percent: UInt8?, message: String)
    case notifyFinished(client: PeerID, task: TaskID, state: TaskState, body: [UInt8])
    case event(TaskEvent)
}
