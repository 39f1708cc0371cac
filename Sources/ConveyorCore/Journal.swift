/// The broker's durable memory, whatever stores it: stages the scheduler's
/// events of one loop iteration as a `JournalBatch`, commits them once (group
/// commit) before any reply that promises durability, and rebuilds a
/// scheduler from the stored rows after a restart or a takeover.
///
/// Why here and not in each backend: recovery — which rows come back, how a
/// damaged one is repaired or skipped, ids never reused, results kept for
/// their retention — is policy, and policy written twice drifts. Backends
/// (`JournalBackend`) only store rows.
///
/// Threading: the broker's loop thread calls every method.
public final class Journal {
    public let backend: any JournalBackend
    private var staged = JournalBatch()
    /// The result retention, learnt at recovery: lookups hide rows that
    /// expired but were not compacted yet.
    private var retentionUs: Int64?
    private var defaultTimeoutMs: UInt32 = SchedulerConfig().defaultTimeoutMs

    public init(_ backend: any JournalBackend) {
        self.backend = backend
    }

    public var location: String { backend.location }

    /// Changes staged but not committed (a commit failed): what a stop now would lose.
    public var uncommittedChanges: Int { staged.count }

    // MARK: Writing

    /// Stages one event; `task` is the record after the change (nil if forgotten).
    public func record(_ event: TaskEvent, task: TaskRecord?) {
        staged.note(event, task: task)
    }

    /// Writes everything staged in one transaction. A commit that fails keeps
    /// it all staged; the next one writes it together with what came since.
    public func commit() throws {
        guard !staged.isEmpty else { return }
        try backend.apply(staged)
        staged.removeAll()
    }

    // MARK: Recovery

    /// A scheduler rebuilt from the journal, as a starting (or newly active)
    /// broker needs it: ids continue after the largest ever written, so none
    /// is reused; unfinished tasks come back in order (running ones queued
    /// again: their workers are gone); the most recent finished tasks within
    /// the retention come back for STATUS and deduplication; pauses and
    /// holds come back. The journal's times are wall-clock times.
    ///
    /// - Parameter stillLoading: called every `Journal.progressRows` rows: a
    ///   broker renews its lease there, so that a long recovery never lets it
    ///   run out (a standby would take over a journal still being read).
    public func recoveredScheduler(config: SchedulerConfig, now: Timestamp, wallNow: Timestamp? = nil,
                                   stillLoading: (() -> Void)? = nil) throws -> (Scheduler, JournalRecovery) {
        var scheduler = Scheduler(config: config, now: now, wallNow: wallNow, lastID: try backend.lastID())
        let info = try recover(into: &scheduler, now: scheduler.wall(now), stillLoading: stillLoading)
        return (scheduler, info)
    }

    /// How often recovery calls `stillLoading`.
    public static let progressRows = 20_000

    /// Loads the journal into `scheduler` (whose `lastID` must be at least the
    /// journal's: `recoveredScheduler` sees to it). `now` is wall-clock time.
    public func recover(into scheduler: inout Scheduler, now: Timestamp, stillLoading: (() -> Void)? = nil) throws -> JournalRecovery {
        let retention = scheduler.config.resultTTLSeconds.multiplied(saturating: 1_000_000)
        retentionUs = retention
        defaultTimeoutMs = scheduler.config.defaultTimeoutMs
        var loader = Loader(scheduler: scheduler, now: now, keepFinished: max(0, scheduler.config.maxFinishedInMemory), stillLoading: stillLoading)
        try backend.load(finishedSince: now.subtracting(saturating: retention), keepFinished: loader.keepFinished, into: &loader)
        scheduler = loader.scheduler
        loader.info.lastID = try backend.lastID()
        return loader.info
    }

    /// Restores rows as they come.
    private struct Loader: JournalLoadVisitor {
        var scheduler: Scheduler
        let now: Timestamp
        let keepFinished: Int
        let stillLoading: (() -> Void)?
        var info = JournalRecovery()
        var repairs: [String] = []
        var rows = 0

        mutating func paused(_ type: String) { scheduler.restorePaused(type) }
        mutating func held(_ type: String, until: Timestamp) { scheduler.restoreHold(type, until: until, now: now) }
        mutating func expect(unfinished: Int) { scheduler.reserveCapacity(forTasks: unfinished + keepFinished) }

        mutating func task(_ row: StoredTask) {
            rows += 1
            if rows % Journal.progressRows == 0 { stillLoading?() }
            let t: TaskRecord
            do {
                t = try row.record(defaultTimeoutMs: scheduler.config.defaultTimeoutMs, now: now, repairs: &repairs)
            } catch {
                info.note(skipped: "\(error); the row is left in the journal")
                return
            }
            for r in repairs { info.note(repaired: r) }
            repairs.removeAll(keepingCapacity: true)
            switch t.state {
            case .queued: info.queued += 1
            case .running: info.requeuedRunning += 1
            case .delayed: info.delayed += 1
            case .succeeded, .failed, .timedOut, .cancelled: info.finished += 1
            }
            scheduler.restore(t, idempotencyKey: t.details?.idempotencyKey, now: now)
        }
    }

    // MARK: Reading

    /// The largest task id ever journaled (nil for an empty journal).
    public func lastTaskID() throws -> TaskID? { try backend.lastID() }

    /// A task no longer held in memory; nil when unknown or expired (`now`: wall clock).
    public func lookup(_ id: TaskID, now: Timestamp) throws -> TaskRecord? {
        guard let row = try backend.lookup(id) else { return nil }
        return try live(row, now: now)
    }

    /// The task an idempotency key names, when it is older than what the
    /// scheduler keeps in memory but still within the retention.
    public func lookup(idempotencyKey: String, owner: String?, now: Timestamp) throws -> TaskRecord? {
        guard let row = try backend.lookup(idempotencyKey: idempotencyKey, owner: owner) else { return nil }
        return try live(row, now: now)
    }

    /// Dead letters the journal holds (the scheduler may hold fewer), oldest first.
    public func deadLetters(limit: Int, now: Timestamp) throws -> [TaskRecord] {
        try backend.deadLetters(limit: limit).compactMap { try live($0, now: now) }
    }

    private func live(_ row: StoredTask, now: Timestamp) throws -> TaskRecord? {
        var repairs: [String] = []
        let t: TaskRecord
        do { t = try row.record(defaultTimeoutMs: defaultTimeoutMs, now: now, repairs: &repairs) } catch {
            throw JournalUnreadable(location: backend.location, detail: error.description)
        }
        // Expired but not compacted yet: as good as gone (STATUS says not_found).
        if let retentionUs, let f = t.details?.finishedAt, now.subtracting(saturating: f) > retentionUs { return nil }
        return t
    }

    // MARK: Upkeep

    public func compact(olderThan cutoff: Timestamp) throws { try backend.compact(olderThan: cutoff) }

    public func close() throws { try backend.close() }
}

/// A stored row that cannot be a task, met outside recovery (a lookup).
public struct JournalUnreadable: Error, CustomStringConvertible, Sendable {
    public let location: String
    public let detail: String
    public var description: String { "journal \(location): \(detail)" }
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
