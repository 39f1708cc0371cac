import ConveyorCore

/// Moves a `TaskRecord` to and from a row of `JournalSchema`'s `tasks` table.
///
/// Reading validates every value instead of trusting the file: a row that
/// does not make sense is reported as corruption (naming the file and the
/// task), never turned into a half-valid task.
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

    /// The task in the current row, and its idempotency key.
    mutating func decode(_ s: RawStatement) throws -> TaskRecord {
        let idBits = s.int64(Column.id.rawValue)
        let id = TaskID(raw: UInt64(bitPattern: idBits))
        func bad(_ what: String) -> JournalError {
            JournalError(.corrupt, path: path, detail: "task \(id) has \(what)")
        }
        func small<T: FixedWidthInteger>(_ c: Column, _: T.Type) throws -> T {
            guard let v = T(exactly: s.int64(c.rawValue)) else { throw bad("an out-of-range \(c)") }
            return v
        }
        let stateText = s.bytes(Column.state.rawValue)
        guard let state = TaskState(rawValue: String(decoding: stateText, as: UTF8.self)) else {
            throw bad("an unknown state '\(String(decoding: stateText.prefix(32), as: UTF8.self))'")
        }
        guard let priority = Priority(rawValue: try small(.priority, UInt8.self)) else { throw bad("an unknown priority") }
        let type = internType(s.bytes(Column.type.rawValue))
        guard !type.isEmpty else { throw bad("an empty type") }

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
        let lost: UInt16 = try small(.lostDeliveries, UInt16.self)
        if lost != 0 { d().lostDeliveries = lost }
        let backoff: UInt32 = try small(.backoffMs, UInt32.self)
        let backoffMax: UInt32 = try small(.backoffMaxMs, UInt32.self)
        if backoff != 1000 || backoffMax != 300_000 {
            d().backoffMs = backoff
            d().backoffMaxMs = backoffMax
        }
        if let v = s.textOrNil(Column.idempotencyKey.rawValue) { d().idempotencyKey = v }
        if let v = s.textOrNil(Column.worker.rawValue) { d().worker = v }
        if let v = s.textOrNil(Column.error.rawValue) { d().error = v }
        if let v = s.blobOrNil(Column.result.rawValue) { d().result = v }
        if state.isFinal && details?.finishedAt == nil { throw bad("state \(state.rawValue) but no finished_at") }

        return TaskRecord(
            id: id, seq: UInt64(bitPattern: s.int64(Column.seq.rawValue)), createdAt: s.int64(Column.createdAt.rawValue),
            type: type, priority: priority, payload: s.blob(Column.payload.rawValue),
            timeoutMs: try small(.timeoutMs, UInt32.self), maxAttempts: try small(.maxAttempts, UInt16.self),
            state: state, attempt: try small(.attempt, UInt16.self), failures: try small(.failures, UInt16.self),
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
