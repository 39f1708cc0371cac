import ConveyorCore
import ConveyorJournal
import Foundation
import XCTest

/// A fixed, realistic epoch (2024-07-15T09:30:00Z) in microseconds.
let t0: Timestamp = 1_721_035_800_000_000

func sec(_ n: Int64) -> Timestamp { n * 1_000_000 }

/// A scheduler wired to a real journal in a temporary directory, driven the
/// way the broker drives it: operations, then `flush()` (record every event,
/// commit once). `restart()` and `crashCopy()` rebuild a scheduler from disk
/// as a restarted broker would.
final class JournalHarness {
    let directory: URL
    var config: JournalConfig
    let schedulerConfig: SchedulerConfig
    private(set) var journal: SQLiteJournal?
    var scheduler: Scheduler
    var now: Timestamp = t0
    private(set) var recovery = JournalRecovery()
    /// Every task ever submitted, in submission order.
    private(set) var ids: [TaskID] = []
    private var out: [SchedulerOutput] = []
    /// Everything the last `flush` handed to the adapter.
    private(set) var lastOutput: [SchedulerOutput] = []

    convenience init(durability: JournalConfig.Durability = .fsync, configure: (inout SchedulerConfig) -> Void = { _ in }) throws {
        var s = SchedulerConfig()
        s.maxRunning = 100
        s.maxQueue = 1_000_000
        configure(&s)
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("conveyor-journal-test-\(getpid())-\(UUID().uuidString.prefix(8))")
        try self.init(durability: durability, directory: dir, schedulerConfig: s, now: t0)
    }

    private init(durability: JournalConfig.Durability, directory: URL, schedulerConfig: SchedulerConfig, now: Timestamp) throws {
        self.directory = directory
        config = JournalConfig()
        config.dataDirectory = directory.path
        config.durability = durability
        self.schedulerConfig = schedulerConfig
        scheduler = Scheduler(config: schedulerConfig, now: now)
        self.now = now
        try open()
    }

    deinit {
        _ = try? journal?.close()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Opens the journal and recovers from it exactly as `Broker.start()` does
    /// (a first pass for the last id, then a second into a scheduler that knows it).
    private func open() throws {
        let j = try SQLiteJournal(config)
        journal = j
        var fresh = Scheduler(config: schedulerConfig, now: now)
        recovery = try j.recover(into: &fresh, now: now)
        if let last = recovery.lastID {
            var withIDs = Scheduler(config: schedulerConfig, now: now, lastID: last)
            recovery = try j.recover(into: &withIDs, now: now)
            fresh = withIDs
        }
        fresh.drainOutput(into: &out)
        scheduler = fresh
    }

    /// The broker's flush: journal this iteration's events, commit once.
    @discardableResult
    func flush() throws -> [SchedulerOutput] {
        scheduler.drainOutput(into: &out)
        guard let journal else { throw TestFailure("journal is closed") }
        for case .event(let e) in out {
            try journal.record(e, task: e.taskID.flatMap { scheduler.task($0) }, now: now)
        }
        try journal.commit(now: now)
        lastOutput = out
        return out
    }

    /// A clean stop and start on the same directory.
    func restart() throws {
        try journal?.close()
        journal = nil
        try open()
    }

    /// A `kill -9` as the disk sees it: a copy of the files taken while the
    /// journal is open, recovered in a new harness (this one goes on).
    func crashCopy() throws -> JournalHarness {
        let copy = FileManager.default.temporaryDirectory
            .appendingPathComponent("conveyor-journal-test-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: copy, withIntermediateDirectories: true)
        for suffix in ["", "-wal"] {
            let from = config.journalPath + suffix
            if FileManager.default.fileExists(atPath: from) {
                try FileManager.default.copyItem(atPath: from, toPath: copy.appendingPathComponent(SQLiteJournal.fileName + suffix).path)
            }
        }
        let h = try JournalHarness(durability: config.durability, directory: copy, schedulerConfig: schedulerConfig, now: now)
        h.ids = ids
        return h
    }

    // MARK: Driving

    @discardableResult
    func submit(_ spec: TaskSpec, client: PeerID? = PeerID([9])) throws -> TaskID {
        switch scheduler.submit(spec, from: client, now: now) {
        case .success(let a):
            if !a.duplicate { ids.append(a.id) }
            try flush()
            return a.id
        case .failure(let r):
            throw TestFailure("submission rejected: \(r)")
        }
    }

    /// Dispatches and returns the assignments made.
    @discardableResult
    func dispatch() throws -> [(worker: PeerID, id: TaskID, attempt: UInt16)] {
        scheduler.dispatch(now: now)
        return try flush().compactMap {
            if case .assign(let w, let id, let a) = $0 { return (w, id, a) }
            return nil
        }
    }

    /// Moves the clock and runs the timers; registered workers count as heard
    /// from (these tests are about tasks, not heartbeats).
    func advance(_ us: Timestamp) throws {
        now += us
        for w in scheduler.allWorkers { _ = scheduler.heard(from: w.peer, now: now) }
        scheduler.tick(now: now)
        try flush()
    }

    func succeed(_ id: TaskID, result: [UInt8] = Array("ok".utf8)) throws {
        guard let t = scheduler.task(id), let w = worker(of: id) else { throw TestFailure("task \(id) is not running") }
        scheduler.succeeded(id, attempt: t.attempt, result: result, from: w, now: now)
        try flush()
    }

    func fail(_ id: TaskID, error: String = "boom") throws {
        guard let t = scheduler.task(id), let w = worker(of: id) else { throw TestFailure("task \(id) is not running") }
        scheduler.failed(id, attempt: t.attempt, error: error, from: w, now: now)
        try flush()
    }

    /// The worker connection a running task was dispatched to.
    func worker(of id: TaskID) -> PeerID? {
        scheduler.allWorkers.first { $0.running.contains(id) }?.peer
    }
}

/// Deterministic randomness for tests.
typealias TestRNG = SplitMix64

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The recovered task equals the live one, as far as the journal promises:
/// a running task comes back queued (its attempt already counted), progress
/// and the worker connection are not journaled.
func assertSameTask(_ live: TaskRecord?, _ back: TaskRecord?, _ label: String = "", file: StaticString = #filePath, line: UInt = #line) {
    guard let live else {
        XCTAssertNil(back, "\(label): task should be gone after recovery", file: file, line: line)
        return
    }
    guard let back else { return XCTFail("\(label): task \(live.id) (\(live.state.rawValue)) was not recovered", file: file, line: line) }
    let tag = "\(label) task \(live.id)"
    XCTAssertEqual(back.id, live.id, tag, file: file, line: line)
    XCTAssertEqual(back.seq, live.seq, "\(tag) seq", file: file, line: line)
    XCTAssertEqual(back.createdAt, live.createdAt, "\(tag) createdAt", file: file, line: line)
    XCTAssertEqual(back.type, live.type, "\(tag) type", file: file, line: line)
    XCTAssertEqual(back.priority, live.priority, "\(tag) priority", file: file, line: line)
    XCTAssertEqual(back.payload, live.payload, "\(tag) payload", file: file, line: line)
    XCTAssertEqual(back.timeoutMs, live.timeoutMs, "\(tag) timeoutMs", file: file, line: line)
    XCTAssertEqual(back.maxAttempts, live.maxAttempts, "\(tag) maxAttempts", file: file, line: line)
    XCTAssertEqual(back.state, live.state == .running ? .queued : live.state, "\(tag) state", file: file, line: line)
    XCTAssertEqual(back.attempt, live.attempt, "\(tag) attempt", file: file, line: line)
    XCTAssertEqual(back.failures, live.failures, "\(tag) failures", file: file, line: line)
    let l = live.details, b = back.details
    XCTAssertEqual(b?.startedAt, l?.startedAt, "\(tag) startedAt", file: file, line: line)
    if live.state.isFinal { XCTAssertEqual(b?.finishedAt, l?.finishedAt, "\(tag) finishedAt", file: file, line: line) }
    if live.state == .succeeded {
        XCTAssertEqual(b?.result, l?.result, "\(tag) result", file: file, line: line)
    } else {
        XCTAssertEqual(b?.error, l?.error, "\(tag) error", file: file, line: line)
    }
    if live.state == .delayed { XCTAssertEqual(b?.runAt, l?.runAt, "\(tag) runAt", file: file, line: line) }
    XCTAssertEqual(b?.idempotencyKey, l?.idempotencyKey, "\(tag) idempotencyKey", file: file, line: line)
    XCTAssertEqual(b?.backoffMs ?? 1000, l?.backoffMs ?? 1000, "\(tag) backoffMs", file: file, line: line)
    XCTAssertEqual(b?.backoffMaxMs ?? 300_000, l?.backoffMaxMs ?? 300_000, "\(tag) backoffMaxMs", file: file, line: line)
    XCTAssertEqual(b?.lostDeliveries ?? 0, l?.lostDeliveries ?? 0, "\(tag) lostDeliveries", file: file, line: line)
    XCTAssertEqual(b?.dead ?? false, l?.dead ?? false, "\(tag) dead", file: file, line: line)
}

extension JournalHarness {
    /// Recovers a crash copy and checks every task ever submitted against the live scheduler.
    func assertRecoversSame(_ label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let copy = try crashCopy()
        for id in ids {
            let back = try copy.scheduler.task(id) ?? copy.journal?.lookup(id)
            assertSameTask(scheduler.task(id), back, label, file: file, line: line)
        }
        XCTAssertEqual(copy.scheduler.queueSize, scheduler.queueSize + scheduler.runningCount, "\(label): queue size", file: file, line: line)
        XCTAssertEqual(copy.scheduler.delayed, scheduler.delayed, "\(label): delayed", file: file, line: line)
        XCTAssertEqual(copy.scheduler.deadLetters.map(\.id), scheduler.deadLetters.map(\.id), "\(label): dead letters", file: file, line: line)
    }
}
