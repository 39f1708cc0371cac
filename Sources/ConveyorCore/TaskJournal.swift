/// Durable storage for the scheduler's events. The broker records every
/// `TaskEvent` of a loop iteration, then calls `commit()` once (group commit)
/// before it sends any reply that promises durability.
public protocol TaskJournal: AnyObject {
    /// Stages one event; `task` is the record after the change (nil if forgotten).
    func record(_ event: TaskEvent, task: TaskRecord?, now: Timestamp) throws
    /// Makes everything staged as durable as the journal's mode promises.
    func commit(now: Timestamp) throws
    /// The largest task id ever journaled (nil for an empty journal), read
    /// without loading any task: a scheduler created with it as `lastID`
    /// never reissues an id, so recovery needs a single pass.
    func lastTaskID() throws -> TaskID?
    /// Loads unfinished tasks (and retained finished ones) back into a scheduler.
    func recover(into scheduler: inout Scheduler, now: Timestamp) throws -> JournalRecovery
    /// A finished task no longer held in memory.
    func lookup(_ id: TaskID) throws -> TaskRecord?
    /// Drops finished tasks older than the TTL and reclaims space.
    func compact(olderThan cutoff: Timestamp) throws
}

public struct JournalRecovery: Sendable {
    public var queued = 0
    public var requeuedRunning = 0
    public var delayed = 0
    public var finished = 0
    public var lastID: TaskID?
    /// Rows whose values were out of range and were clamped, and rows that
    /// could not be tasks and were skipped: one line each, naming the task
    /// (the first `maxNotes`; the counts are exact).
    public private(set) var repaired: [String] = []
    public private(set) var skipped: [String] = []
    public private(set) var repairedCount = 0
    public private(set) var skippedCount = 0
    public static let maxNotes = 100
    public init() {}

    public mutating func note(repaired line: String) {
        repairedCount += 1
        if repaired.count < Self.maxNotes { repaired.append(line) }
    }

    public mutating func note(skipped line: String) {
        skippedCount += 1
        if skipped.count < Self.maxNotes { skipped.append(line) }
    }
}
