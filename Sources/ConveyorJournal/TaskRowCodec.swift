import ConveyorCore

/// Moves a `TaskRecord` to and from a row of `JournalSchema`'s `tasks` table.
///
/// Reading validates every value instead of trusting the file: a value out
/// of range is clamped into range and reported (naming the task), and a row
/// that cannot be a task at all is rejected — never a trap, never a broker
/// that will not start because of one row.
struct TaskRowCodec {
    typealias Column = JournalSchema.Column
    let path: String
    /// Task types seen so far: a million tasks of a few types share a few strings.
    private var types: [String] = []

    init(path: String) { self.path = path }

    // MARK: Writing

    /// Binds what `update` rewrites (and `insert` too).
    static func bindMutable(_ s: RawStatement, _ t: TaskRecord) throws {
        let d = t.details
        try s.bind(Column.id.parameter, Int64(bitPattern: t.id.raw))
        try s.bind(Column.state.parameter, text: t.state.rawValue)
        try s.bind(Column.attempt.parameter, Int64(t.attempt))
        try s.bind(Column.failures.parameter, Int64(t.failures))
        try s.bind(Column.lostDeliveries.parameter, Int64(d?.lostDeliveries ?? 0))
        try s.bind(Column.startedAt.parameter, d?.startedAt)
        try s.bind(Column.finishedAt.parameter, t.state.isFinal ? d?.finishedAt : nil)
        try s.bind(Column.runAt.parameter, t.state == .delayed ? d?.runAt : nil)
        try s.bind(Column.dead.parameter, d?.dead ?? false)
        try s.bind(Column.worker.parameter, text: d?.worker)
        try s.bind(Column.error.parameter, text: t.state == .succeeded ? nil : d?.error)
        try s.bind(Column.result.parameter, blob: t.state == .succeeded ? (d?.result ?? []) : nil)
    }

    /// Binds every column, for `insert`.
    static func bindAll(_ s: RawStatement, _ t: TaskRecord) throws {
        try bindMutable(s, t)
        let d = t.details
        try s.bind(Column.seq.parameter, Int64(bitPattern: t.seq))
        try s.bind(Column.priority.parameter, Int64(t.priority.rawValue))
        try s.bind(Column.type.parameter, text: t.type)
        try s.bind(Column.maxAttempts.parameter, Int64(t.maxAttempts))
        try s.bind(Column.timeoutMs.parameter, Int64(t.timeoutMs))
        try s.bind(Column.createdAt.parameter, t.createdAt)
        try s.bind(Column.backoffMs.parameter, Int64(d?.backoffMs ?? 1000))
        try s.bind(Column.backoffMaxMs.parameter, Int64(d?.backoffMaxMs ?? 300_000))
        try s.bind(Column.idempotencyKey.parameter, text: d?.idempotencyKey)
        try s.bind(Column.payload.parameter, blob: t.payload)
        try s.bind(Column.owner.parameter, text: t.owner)
    }

    /// Whether `update` should drop the stored payload: the handler has run for
    /// good. A dead-lettered task keeps it, because `dead retry` runs it again.
    static func clearsPayload(_ t: TaskRecord) -> Bool {
        t.state.isFinal && t.details?.dead != true
    }

    // MARK: Reading

    /// A row that cannot be made into a task at all (unknown state, no type):
    /// recovery skips it, with a message naming the task, and leaves the row
    /// in the file for an operator.
    struct RejectedRow: Error, CustomStringConvertible {
        let description: String
    }

    /// The timeout a row with an unusable `timeout_ms` gets (the broker's default).
    var defaultTimeoutMs: UInt32 = 3_600_000
    /// The journal's clock during recovery: a finished row without `finished_at` finished now.
    var now: Timestamp = 0
    /// What decoding repaired since the caller last emptied it: one line per
    /// task, naming it and each value clamped.
    var repairs: [String] = []

    /// The task in the current row. Values out of range — a hostile worker's
    /// counters, a damaged or hand-edited file — are clamped into range (and
    /// noted in `repairs`) instead of trusted: a bad row must never trap the
    /// broker or stop it. Rows that cannot be a task throw `RejectedRow`.
    mutating func decode(_ s: RawStatement) throws -> TaskRecord {
        let idBits = s.int64(Column.id.rawValue)
        let id = TaskID(raw: UInt64(bitPattern: idBits))
        var fixed: [String] = []
        func clamp<T: FixedWidthInteger>(_ c: Column, _ range: ClosedRange<T>, or fallback: T? = nil) -> T {
            let raw = s.int64(c.rawValue)
            if let v = T(exactly: raw), range.contains(v) { return v }
            let v = fallback ?? (raw < Int64(range.lowerBound) ? range.lowerBound : range.upperBound)
            fixed.append("\(c) \(raw) -> \(v)")
            return v
        }
        let stateText = s.bytes(Column.state.rawValue)
        guard let state = TaskState(rawValue: String(decoding: stateText, as: UTF8.self)) else {
            throw RejectedRow(description: "task \(id) has an unknown state '\(String(decoding: stateText.prefix(32), as: UTF8.self))'")
        }
        let priority = Priority(rawValue: clamp(.priority, 0...UInt8(ReadyQueue.levels - 1))) ?? .normal
        let type = internType(s.bytes(Column.type.rawValue))
        guard !type.isEmpty else { throw RejectedRow(description: "task \(id) has an empty type") }

        var details: TaskDetails?
        func d() -> TaskDetails {
            if let details { return details }
            let fresh = TaskDetails()
            details = fresh
            return fresh
        }
        if let v = s.int64OrNil(Column.startedAt.rawValue) { d().startedAt = v }
        if let v = s.int64OrNil(Column.finishedAt.rawValue) { d().finishedAt = v }
        if let v = s.int64OrNil(Column.runAt.rawValue) { d().runAt = v }
        if s.int64(Column.dead.rawValue) != 0 { d().dead = true }
        let lost: UInt16 = clamp(.lostDeliveries, 0...UInt16.max)
        if lost != 0 { d().lostDeliveries = lost }
        let backoff: UInt32 = clamp(.backoffMs, 0...UInt32.max)
        let backoffMax: UInt32 = clamp(.backoffMaxMs, 0...UInt32.max)
        if backoff != 1000 || backoffMax != 300_000 {
            d().backoffMs = backoff
            d().backoffMaxMs = backoffMax
        }
        if let v = s.textOrNil(Column.idempotencyKey.rawValue) { d().idempotencyKey = v }
        if let v = s.textOrNil(Column.worker.rawValue) { d().worker = v }
        if let v = s.textOrNil(Column.error.rawValue) { d().error = v }
        if let v = s.blobOrNil(Column.result.rawValue) { d().result = v }
        if state.isFinal && details?.finishedAt == nil {
            fixed.append("state \(state.rawValue) without finished_at -> finished now")
            d().finishedAt = now
        }
        // The protocol's ranges (§11): timeouts of 1 ms..7 days, 1..100 attempts.
        let timeout: UInt32 = clamp(.timeoutMs, 1...604_800_000, or: s.int64(Column.timeoutMs.rawValue) > 604_800_000 ? 604_800_000 : defaultTimeoutMs)
        let maxAttempts: UInt16 = clamp(.maxAttempts, 1...100)
        let attempt: UInt16 = clamp(.attempt, 0...UInt16.max)
        // More failed attempts than allowed: the next failure is the last.
        let failures: UInt16 = clamp(.failures, 0...maxAttempts)
        if !fixed.isEmpty { repairs.append("task \(id): " + fixed.joined(separator: ", ")) }

        return TaskRecord(
            id: id, seq: UInt64(bitPattern: s.int64(Column.seq.rawValue)), createdAt: s.int64(Column.createdAt.rawValue),
            type: type, priority: priority, payload: s.blob(Column.payload.rawValue),
            timeoutMs: timeout, maxAttempts: maxAttempts,
            state: state, attempt: attempt, failures: failures,
            submitter: nil, details: details, owner: s.textOrNil(Column.owner.rawValue)
        )
    }

    /// Reuses the String of a type already seen (a handful of types, a million rows).
    private mutating func internType(_ bytes: UnsafeRawBufferPointer) -> String {
        for t in types.reversed() {
            var s = t
            let same = s.withUTF8 { $0.count == bytes.count && $0.elementsEqual(bytes) }
            if same { return t }
        }
        let t = String(decoding: bytes, as: UTF8.self)
        if types.count >= 64 { types.removeFirst() }
        types.append(t)
        return t
    }
}
