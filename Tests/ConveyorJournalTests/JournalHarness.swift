import ConveyorCore
import ConveyorJournal
import ConveyorJournalPostgres
import Foundation
import XCTest

/// A fixed, realistic epoch (2024-07-15T09:30:00Z) in microseconds.
let t0: Timestamp = 1_721_035_800_000_000

func sec(_ n: Int64) -> Timestamp { n * 1_000_000 }

/// Which backend the journal suites run on: SQLite unless
/// `CONVEYOR_TEST_JOURNAL=postgres` (then `CONVEYOR_TEST_POSTGRES_URL` and
/// `PGPASSWORD` name a throwaway server; `ops/test` runs the suites both ways).
enum TestBackend {
    case sqlite, postgres

    static let current: TestBackend = ProcessInfo.processInfo.environment["CONVEYOR_TEST_JOURNAL"] == "postgres" ? .postgres : .sqlite

    /// The throwaway server's URL (without a schema).
    static var postgresURL: PostgresURL? {
        ProcessInfo.processInfo.environment["CONVEYOR_TEST_POSTGRES_URL"].flatMap { try? PostgresURL(parsing: $0) }
    }

    /// Skips a test that is about the SQLite file itself when the suites run on PostgreSQL.
    static func requireSQLite() throws {
        try XCTSkipIf(current == .postgres, "SQLite-specific (file, WAL, high-water mark): run by the SQLite pass")
    }
}

/// The base of the suites about the SQLite file itself: skipped in the
/// PostgreSQL pass, with temporary directories removed after each test.
class SQLiteJournalTestCase: XCTestCase {
    private var dirs: [URL] = []

    override func setUpWithError() throws { try TestBackend.requireSQLite() }

    override func tearDown() {
        for d in dirs { try? FileManager.default.removeItem(at: d) }
        dirs = []
        super.tearDown()
    }

    /// A new empty directory, removed after the test.
    func scratch() throws -> URL {
        let d = FileManager.default.temporaryDirectory
            .appendingPathComponent("conveyor-\(type(of: self))-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        dirs.append(d)
        return d
    }
}

/// A scheduler wired to a real journal — a temporary SQLite directory, or a
/// fresh schema on the test PostgreSQL server — driven the way the broker
/// drives it: operations, then `flush()` (record every event, commit once).
/// `restart()` and `crashCopy()` rebuild a scheduler from the store as a
/// restarted broker would, through the same `Journal.recoveredScheduler`.
final class JournalHarness {
    let directory: URL
    var config: JournalConfig
    let schedulerConfig: SchedulerConfig
    let backendKind: TestBackend
    /// The PostgreSQL schema this harness owns (PostgreSQL runs only).
    private let schema: String
    private(set) var journal: Journal?
    /// The backend, when SQLite (file-level tests) or PostgreSQL.
    var sqlite: SQLiteJournal? { journal?.backend as? SQLiteJournal }
    var postgres: PostgresJournal? { journal?.backend as? PostgresJournal }
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

    private init(durability: JournalConfig.Durability, directory: URL, schedulerConfig: SchedulerConfig, now: Timestamp,
                 schema: String? = nil) throws {
        self.directory = directory
        backendKind = TestBackend.current
        self.schema = schema ?? "h_\(getpid())_\(UUID().uuidString.prefix(8).lowercased())"
        config = JournalConfig()
        config.dataDirectory = directory.path
        config.durability = durability
        self.schedulerConfig = schedulerConfig
        scheduler = Scheduler(config: schedulerConfig, now: now)
        self.now = now
        try open()
    }

    deinit {
        if let pg = postgres, !isCopy { try? pg.executeForTesting("DROP SCHEMA IF EXISTS \(schema) CASCADE") }
        _ = try? journal?.close()
        try? FileManager.default.removeItem(at: directory)
    }

    /// A crash copy shares the original's PostgreSQL schema: it must not drop it.
    private var isCopy = false

    /// The backend this run tests, opened on this harness's directory or schema.
    private func openBackend() throws -> any JournalBackend {
        switch backendKind {
        case .sqlite:
            return try SQLiteJournal(config)
        case .postgres:
            guard var url = TestBackend.postgresURL else {
                throw XCTSkip("CONVEYOR_TEST_JOURNAL=postgres but CONVEYOR_TEST_POSTGRES_URL is not set (ops/test starts a throwaway server)")
            }
            url.schema = schema
            return try PostgresJournal(url: url, durability: config.durability == .batch ? .batch : .fsync, password: url.password())
        }
    }

    /// Opens the journal and recovers from it exactly as `Broker.start()` does.
    private func open() throws {
        let j = Journal(try openBackend())
        journal = j
        var fresh: Scheduler
        (fresh, recovery) = try j.recoveredScheduler(config: schedulerConfig, now: now)
        fresh.drainOutput(into: &out)
        scheduler = fresh
    }

    /// A task the scheduler no longer holds, read from the journal (nil when expired).
    func lookup(_ id: TaskID) throws -> TaskRecord? {
        try journal?.lookup(id, now: now)
    }

    /// Rows by state, whatever the backend.
    func countByState() throws -> [String: Int] {
        if let pg = postgres { return try pg.countByState() }
        return try sqlite?.countByState() ?? [:]
    }

    /// The broker's flush: journal this iteration's events, commit once.
    @discardableResult
    func flush() throws -> [SchedulerOutput] {
        scheduler.drainOutput(into: &out)
        guard let journal else { throw TestFailure("journal is closed") }
        for case .event(let e) in out {
            journal.record(e, task: e.taskID.flatMap { scheduler.task($0) })
        }
        try journal.commit()
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
        if backendKind == .postgres {
            // What a second broker would read from the server right now: every committed row.
            let h = try JournalHarness(durability: config.durability, directory: copy, schedulerConfig: schedulerConfig, now: now, schema: schema)
            h.isCopy = true
            h.ids = ids
            return h
        }
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
            let back = try copy.scheduler.task(id) ?? copy.lookup(id)
            assertSameTask(scheduler.task(id), back, label, file: file, line: line)
        }
        XCTAssertEqual(copy.scheduler.queueSize, scheduler.queueSize + scheduler.runningCount, "\(label): queue size", file: file, line: line)
        XCTAssertEqual(copy.scheduler.delayed, scheduler.delayed, "\(label): delayed", file: file, line: line)
        XCTAssertEqual(copy.scheduler.deadLetters.map(\.id), scheduler.deadLetters.map(\.id), "\(label): dead letters", file: file, line: line)
    }
}

/// Shorthands for the SQLite-only suites, which drive the backend directly.
extension SQLiteJournal {
    func lastTaskID() throws -> TaskID? { try lastID() }

    func recover(into scheduler: inout Scheduler, now: Timestamp) throws -> JournalRecovery {
        try Journal(self).recover(into: &scheduler, now: now)
    }

    /// Journals the events in `out` (records from `scheduler`) and commits once.
    func commitEvents(_ out: [SchedulerOutput], _ scheduler: Scheduler) throws {
        let j = Journal(self)
        for case .event(let e) in out { j.record(e, task: e.taskID.flatMap { scheduler.task($0) }) }
        try j.commit()
    }
}
