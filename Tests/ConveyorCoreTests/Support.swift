import XCTest
@testable import ConveyorCore

/// A fixed, realistic epoch (2024-07-15T09:30:00Z) in microseconds.
let t0: Timestamp = 1_721_035_800_000_000

func ms(_ n: Int64) -> Timestamp { n * 1000 }
func sec(_ n: Int64) -> Timestamp { n * 1_000_000 }

func peer(_ name: String) -> PeerID { PeerID(Array(name.utf8)) }

/// Deterministic randomness for tests (not the scheduler's own generator).
typealias TestRNG = SplitMix64

struct Assignment: Equatable {
    let worker: PeerID
    let task: TaskID
    let attempt: UInt16
}

struct WorkerCancel: Equatable {
    let worker: PeerID
    let task: TaskID
    let attempt: UInt16
    let reason: CancelReason
}

struct Finished: Equatable {
    let client: PeerID
    let task: TaskID
    let state: TaskState
    let body: [UInt8]
}

extension SchedulerOutput {
    var assignment: Assignment? {
        if case .assign(let w, let t, let a) = self { return Assignment(worker: w, task: t, attempt: a) }
        return nil
    }
    var workerCancel: WorkerCancel? {
        if case .cancelOnWorker(let w, let t, let a, let r) = self { return WorkerCancel(worker: w, task: t, attempt: a, reason: r) }
        return nil
    }
    var finished: Finished? {
        if case .notifyFinished(let c, let t, let s, let b) = self { return Finished(client: c, task: t, state: s, body: b) }
        return nil
    }
    var event: TaskEvent? {
        if case .event(let e) = self { return e }
        return nil
    }
}

extension TaskEvent {
    /// The event's case name, for compact assertions.
    var name: String {
        switch self {
        case .queued: "queued"
        case .delayed: "delayed"
        case .due: "due"
        case .started: "started"
        case .progress: "progress"
        case .succeeded: "succeeded"
        case .failed: "failed"
        case .timedOut: "timedOut"
        case .retrying: "retrying"
        case .reassigned: "reassigned"
        case .returned: "returned"
        case .cancelled: "cancelled"
        case .deadRetried: "deadRetried"
        case .purged: "purged"
        case .expired: "expired"
        case .workerJoined: "workerJoined"
        case .workerLost: "workerLost"
        case .rateLimited: "rateLimited"
        case .typeHeld: "typeHeld"
        case .typeReleased: "typeReleased"
        case .typePaused: "typePaused"
        case .typeResumed: "typeResumed"
        }
    }
}

/// A scheduler driven by hand: a clock that only moves when told, and every
/// output collected so tests can assert on exactly what the adapter would do.
struct Harness {
    var s: Scheduler
    var now: Timestamp
    /// Everything output since the last `take()`.
    private(set) var pending: [SchedulerOutput] = []
    private var buffer: [SchedulerOutput] = []
    let client = peer("client-1")

    init(_ configure: (inout SchedulerConfig) -> Void = { _ in }, now: Timestamp = t0, seed: UInt64 = 42, lastID: TaskID? = nil) {
        var c = SchedulerConfig()
        c.maxRunning = 100
        c.maxQueue = 10_000
        // Workers never go silent unless a test says so (liveness tests set their own).
        c.heartbeatLiveness = 1_000_000_000
        configure(&c)
        s = Scheduler(config: c, now: now, lastID: lastID, seed: seed)
        self.now = now
    }

    /// Outputs since the last call.
    mutating func take() -> [SchedulerOutput] {
        s.drainOutput(into: &buffer)
        pending.append(contentsOf: buffer)
        defer { pending = [] }
        return pending
    }

    mutating func collect() {
        s.drainOutput(into: &buffer)
        pending.append(contentsOf: buffer)
    }

    @discardableResult
    mutating func submit(
        _ type: String = "a", _ priority: Priority = .normal, payload: String = "p", timeoutMs: UInt32? = nil,
        maxAttempts: UInt16 = 1, key: String? = nil, delayMs: Int64? = nil, runAt: Timestamp? = nil,
        backoffMs: UInt32 = 1000, backoffMaxMs: UInt32 = 300_000, file: StaticString = #filePath, line: UInt = #line
    ) -> TaskID {
        let spec = TaskSpec(
            type: type, priority: priority, payload: Array(payload.utf8), timeoutMs: timeoutMs, maxAttempts: maxAttempts,
            idempotencyKey: key, runAt: runAt, delayMs: delayMs, backoffMs: backoffMs, backoffMaxMs: backoffMaxMs
        )
        switch s.submit(spec, from: client, now: now) {
        case .success(let a):
            collect()
            return a.id
        case .failure(let r):
            XCTFail("submit rejected: \(r)", file: file, line: line)
            return TaskID(raw: 0)
        }
    }

    mutating func submitResult(_ spec: TaskSpec) -> Result<Accepted, Rejection> {
        defer { collect() }
        return s.submit(spec, from: client, now: now)
    }

    mutating func register(_ name: String, types: Set<String>? = nil, capacity: Int = 1) -> PeerID {
        let p = peer(name)
        s.register(worker: p, name: name, types: types, capacity: capacity, now: now)
        collect()
        return p
    }

    /// Runs `dispatch` and returns the assignments it made, in order.
    @discardableResult
    mutating func dispatch() -> [Assignment] {
        s.dispatch(now: now)
        s.drainOutput(into: &buffer)
        pending.append(contentsOf: buffer)
        return buffer.compactMap(\.assignment)
    }

    /// Moves the clock forward and runs the timers.
    mutating func advance(_ us: Timestamp) {
        now += us
        s.tick(now: now)
        collect()
    }

    /// Keeps every worker alive (as their heartbeats would).
    mutating func heartbeatAll() {
        for w in s.allWorkers { _ = s.heard(from: w.peer, now: now) }
    }

    func state(_ id: TaskID) -> TaskState? { s.task(id)?.state }
    func queuedIDs() -> [TaskID] { s.queuedInOrder(limit: Int.max, now: now).map(\.id) }
}
