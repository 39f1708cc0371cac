/// A task as every journal backend stores it: one row of plain values
/// (integers, text, bytes), the same columns in SQLite and PostgreSQL.
///
/// Why a type of its own: a backend moves these values in and out of its
/// store and nothing more; what they mean — which columns a state uses, that
/// a finished task's payload is no longer needed, and above all that a row
/// read back is validated instead of trusted — is decided here, once.
/// Times are wall-clock microseconds since the Unix epoch; `id` and `seq` are
/// the 64-bit values' bit patterns.
public struct StoredTask: Sendable, Equatable {
    public var id: Int64
    public var seq: Int64
    /// The wire name (`queued`, `timed_out`, …), readable in the store's own shell.
    public var state: String
    public var priority: Int64
    public var type: String
    public var attempt: Int64
    public var maxAttempts: Int64
    public var failures: Int64
    public var lostDeliveries: Int64
    public var timeoutMs: Int64
    public var createdAt: Int64
    public var startedAt: Int64?
    /// Set only in a final state; recovery and compaction find finished tasks by it.
    public var finishedAt: Int64?
    /// Set only while delayed.
    public var runAt: Int64?
    public var dead: Bool
    public var backoffMs: Int64
    public var backoffMaxMs: Int64
    public var idempotencyKey: String?
    public var worker: String?
    public var error: String?
    public var result: [UInt8]?
    public var payload: [UInt8]
    public var owner: String?

    public init(id: Int64, seq: Int64, state: String, priority: Int64, type: String, attempt: Int64, maxAttempts: Int64,
                failures: Int64, lostDeliveries: Int64, timeoutMs: Int64, createdAt: Int64, startedAt: Int64?,
                finishedAt: Int64?, runAt: Int64?, dead: Bool, backoffMs: Int64, backoffMaxMs: Int64,
                idempotencyKey: String?, worker: String?, error: String?, result: [UInt8]?, payload: [UInt8], owner: String?) {
        self.id = id; self.seq = seq; self.state = state; self.priority = priority; self.type = type
        self.attempt = attempt; self.maxAttempts = maxAttempts; self.failures = failures
        self.lostDeliveries = lostDeliveries; self.timeoutMs = timeoutMs; self.createdAt = createdAt
        self.startedAt = startedAt; self.finishedAt = finishedAt; self.runAt = runAt; self.dead = dead
        self.backoffMs = backoffMs; self.backoffMaxMs = backoffMaxMs; self.idempotencyKey = idempotencyKey
        self.worker = worker; self.error = error; self.result = result; self.payload = payload; self.owner = owner
    }

    /// The row for a record: only the columns its state uses are set.
    public init(_ t: TaskRecord) {
        let d = t.details
        self.init(
            id: Int64(bitPattern: t.id.raw), seq: Int64(bitPattern: t.seq), state: t.state.rawValue,
            priority: Int64(t.priority.rawValue), type: t.type, attempt: Int64(t.attempt),
            maxAttempts: Int64(t.maxAttempts), failures: Int64(t.failures), lostDeliveries: Int64(d?.lostDeliveries ?? 0),
            timeoutMs: Int64(t.timeoutMs), createdAt: t.createdAt, startedAt: d?.startedAt,
            finishedAt: t.state.isFinal ? d?.finishedAt : nil, runAt: t.state == .delayed ? d?.runAt : nil,
            dead: d?.dead ?? false, backoffMs: Int64(d?.backoffMs ?? TaskSpec.defaultBackoffMs),
            backoffMaxMs: Int64(d?.backoffMaxMs ?? TaskSpec.defaultBackoffMaxMs), idempotencyKey: d?.idempotencyKey,
            worker: d?.worker, error: t.state == .succeeded ? nil : d?.error,
            result: t.state == .succeeded ? (d?.result ?? []) : nil, payload: t.payload, owner: t.owner)
    }

    /// Whether an update may drop the stored payload: the handler has run for
    /// good. A dead-lettered task keeps it, because `dead retry` runs it again.
    public var clearsPayload: Bool {
        (TaskState(rawValue: state)?.isFinal ?? false) && !dead
    }

    /// A row that cannot be made into a task at all (unknown state, no type):
    /// recovery skips it, with a message naming the task, and leaves the row
    /// in the store for an operator.
    public struct Rejected: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// The task this row holds. Values out of range — a hostile worker's
    /// counters, a damaged or hand-edited store — are clamped into range (and
    /// described in `repairs`, naming the task) instead of trusted: a bad row
    /// must never trap the broker or stop it. A row that cannot be a task
    /// throws `Rejected`.
    ///
    /// - Parameters:
    ///   - defaultTimeoutMs: what a row with an unusable `timeout_ms` gets.
    ///   - now: a finished row without `finished_at` finished now.
    public func record(defaultTimeoutMs: UInt32, now: Timestamp, repairs: inout [String]) throws(Rejected) -> TaskRecord {
        let tid = TaskID(raw: UInt64(bitPattern: id))
        var fixed: [String] = []
        func clamp<T: FixedWidthInteger>(_ name: String, _ raw: Int64, _ range: ClosedRange<T>, or fallback: T? = nil) -> T {
            if let v = T(exactly: raw), range.contains(v) { return v }
            let v = fallback ?? (raw < Int64(range.lowerBound) ? range.lowerBound : range.upperBound)
            fixed.append("\(name) \(raw) -> \(v)")
            return v
        }
        guard let taskState = TaskState(rawValue: state) else {
            throw Rejected(description: "task \(tid) has an unknown state '\(state.prefix(32))'")
        }
        guard !type.isEmpty else { throw Rejected(description: "task \(tid) has an empty type") }
        let prio = Priority(rawValue: clamp("priority", priority, 0...UInt8(ReadyQueue.levels - 1))) ?? .normal

        var details: TaskDetails?
        func d() -> TaskDetails {
            if let details { return details }
            let fresh = TaskDetails()
            details = fresh
            return fresh
        }
        if let v = startedAt { d().startedAt = v }
        if let v = finishedAt { d().finishedAt = v }
        if let v = runAt { d().runAt = v }
        if dead { d().dead = true }
        let lost: UInt16 = clamp("lostDeliveries", lostDeliveries, 0...UInt16.max)
        if lost != 0 { d().lostDeliveries = lost }
        let backoff: UInt32 = clamp("backoffMs", backoffMs, 0...UInt32.max)
        let backoffMax: UInt32 = clamp("backoffMaxMs", backoffMaxMs, 0...UInt32.max)
        if backoff != TaskSpec.defaultBackoffMs || backoffMax != TaskSpec.defaultBackoffMaxMs {
            d().backoffMs = backoff
            d().backoffMaxMs = backoffMax
        }
        if let v = idempotencyKey { d().idempotencyKey = v }
        if let v = worker { d().worker = v }
        if let v = error { d().error = v }
        if let v = result { d().result = v }
        if taskState.isFinal && details?.finishedAt == nil {
            fixed.append("state \(taskState.rawValue) without finished_at -> finished now")
            d().finishedAt = now
        }
        // The protocol's ranges (§11): timeouts of 1 ms..7 days, 1..100 attempts.
        let timeout: UInt32 = clamp("timeoutMs", timeoutMs, 1...604_800_000, or: timeoutMs > 604_800_000 ? 604_800_000 : defaultTimeoutMs)
        let maxAtt: UInt16 = clamp("maxAttempts", maxAttempts, 1...100)
        let att: UInt16 = clamp("attempt", attempt, 0...UInt16.max)
        // More failed attempts than allowed: the next failure is the last.
        let fails: UInt16 = clamp("failures", failures, 0...maxAtt)
        if !fixed.isEmpty { repairs.append("task \(tid): " + fixed.joined(separator: ", ")) }

        return TaskRecord(
            id: tid, seq: UInt64(bitPattern: seq), createdAt: createdAt, type: type, priority: prio, payload: payload,
            timeoutMs: timeout, maxAttempts: maxAtt, state: taskState, attempt: att, failures: fails,
            submitter: nil, details: details, owner: owner)
    }
}
