/// What one loop iteration changed, as a journal stores it: the latest state
/// of every task touched (an upsert) or its removal (a delete), plus the
/// operator's pauses and the 429 holds of task types.
///
/// Why it exists: the scheduler speaks in events (`TaskEvent`), a store speaks
/// in rows. Turning one into the other — which events are worth a write,
/// that a task submitted, dispatched and finished in one iteration is one
/// insert, that a purge is a delete — is decided here, once, for every
/// backend; a backend only writes what it is handed (`JournalBackend.apply`).
public struct JournalBatch: Sendable {
    public enum Change: Sendable {
        /// The task's state after the iteration. `isNew`: the task was
        /// submitted in this batch, so the whole row (payload included) is written.
        case upsert(TaskRecord, isNew: Bool)
        case delete
    }

    /// Task ids in the order they were first touched; `changes` holds each one's last change.
    public private(set) var order: [TaskID] = []
    public private(set) var changes: [TaskID: Change] = [:]
    /// Pauses (true) and resumes (false) of task types.
    public private(set) var pauses: [String: Bool] = [:]
    /// Holds after RETRY_LATER: the wall-clock end, 0 = released.
    public private(set) var holds: [String: Timestamp] = [:]
    /// The largest task id in the batch (0 if none): backends keep the largest ever written.
    public private(set) var largestID: UInt64 = 0

    public init() {}

    public var isEmpty: Bool { order.isEmpty && pauses.isEmpty && holds.isEmpty }
    /// Changes in the batch: what a stop now would lose if it never commits.
    public var count: Int { order.count + pauses.count + holds.count }

    /// Folds one scheduler event in; `task` is the record after the change
    /// (nil when the scheduler forgot it).
    public mutating func note(_ event: TaskEvent, task: TaskRecord?) {
        let id: TaskID
        let change: Change
        switch event {
        case .workerJoined, .workerLost, .progress:
            // Not state worth a write: progress is transient, workers re-register.
            return
        case .typeHeld(let type, let until):
            holds[type] = until
            return
        case .typeReleased(let type):
            holds[type] = 0
            return
        case .typePaused(let type):
            pauses[type] = true
            return
        case .typeResumed(let type):
            pauses[type] = false
            return
        case .purged(let tid), .expired(let tid):
            id = tid
            change = .delete
        case .queued(let tid, _), .delayed(let tid, _):
            // Only a submission produces these: the row is new.
            guard let task else { return }
            id = tid
            change = .upsert(task, isNew: true)
        default:
            guard let tid = event.taskID else { return }
            id = tid
            if let task {
                let isNew = if case .upsert(_, true)? = changes[tid] { true } else { false }
                change = .upsert(task, isNew: isNew)
            } else {
                change = .delete
            }
        }
        if changes.updateValue(change, forKey: id) == nil { order.append(id) }
        if id.raw > largestID { largestID = id.raw }
    }

    public mutating func removeAll() {
        order.removeAll(keepingCapacity: true)
        changes.removeAll(keepingCapacity: true)
        pauses.removeAll()
        holds.removeAll()
        largestID = 0
    }

    /// The batch's upserts and deletes in order, as rows.
    public func forEachRow(_ body: (StoredTask, _ isNew: Bool) throws -> Void, delete: (TaskID) throws -> Void) rethrows {
        for id in order {
            switch changes[id] {
            case .upsert(let t, let isNew)?: try body(StoredTask(t), isNew)
            case .delete?: try delete(id)
            case nil: break
            }
        }
    }
}
