import ConveyorCore

/// Moves a `StoredTask` to and from a row of `JournalSchema`'s `tasks` table.
///
/// Only the columns: what the values mean, and validating them when they are
/// read back, is `StoredTask`'s business (shared with every backend).
struct TaskRowCodec {
    typealias Column = JournalSchema.Column
    /// Task types seen so far: a million tasks of a few types share a few strings.
    private var types: [String] = []

    init() {}

    // MARK: Writing

    /// Binds what `update` rewrites (and `insert` too).
    static func bindMutable(_ s: RawStatement, _ t: StoredTask) throws {
        try s.bind(Column.id.parameter, t.id)
        try s.bind(Column.state.parameter, text: t.state)
        try s.bind(Column.attempt.parameter, t.attempt)
        try s.bind(Column.failures.parameter, t.failures)
        try s.bind(Column.lostDeliveries.parameter, t.lostDeliveries)
        try s.bind(Column.startedAt.parameter, t.startedAt)
        try s.bind(Column.finishedAt.parameter, t.finishedAt)
        try s.bind(Column.runAt.parameter, t.runAt)
        try s.bind(Column.dead.parameter, t.dead)
        try s.bind(Column.worker.parameter, text: t.worker)
        try s.bind(Column.error.parameter, text: t.error)
        try s.bind(Column.result.parameter, blob: t.result)
    }

    /// Binds every column, for `insert`.
    static func bindAll(_ s: RawStatement, _ t: StoredTask) throws {
        try bindMutable(s, t)
        try s.bind(Column.seq.parameter, t.seq)
        try s.bind(Column.priority.parameter, t.priority)
        try s.bind(Column.type.parameter, text: t.type)
        try s.bind(Column.maxAttempts.parameter, t.maxAttempts)
        try s.bind(Column.timeoutMs.parameter, t.timeoutMs)
        try s.bind(Column.createdAt.parameter, t.createdAt)
        try s.bind(Column.backoffMs.parameter, t.backoffMs)
        try s.bind(Column.backoffMaxMs.parameter, t.backoffMaxMs)
        try s.bind(Column.idempotencyKey.parameter, text: t.idempotencyKey)
        try s.bind(Column.payload.parameter, blob: t.payload)
        try s.bind(Column.owner.parameter, text: t.owner)
    }

    // MARK: Reading

    /// The current row's values, as stored (validated later, by `StoredTask.record`).
    mutating func decode(_ s: RawStatement) -> StoredTask {
        StoredTask(
            id: s.int64(Column.id.rawValue), seq: s.int64(Column.seq.rawValue), state: s.text(Column.state.rawValue),
            priority: s.int64(Column.priority.rawValue), type: internType(s.bytes(Column.type.rawValue)),
            attempt: s.int64(Column.attempt.rawValue), maxAttempts: s.int64(Column.maxAttempts.rawValue),
            failures: s.int64(Column.failures.rawValue), lostDeliveries: s.int64(Column.lostDeliveries.rawValue),
            timeoutMs: s.int64(Column.timeoutMs.rawValue), createdAt: s.int64(Column.createdAt.rawValue),
            startedAt: s.int64OrNil(Column.startedAt.rawValue), finishedAt: s.int64OrNil(Column.finishedAt.rawValue),
            runAt: s.int64OrNil(Column.runAt.rawValue), dead: s.int64(Column.dead.rawValue) != 0,
            backoffMs: s.int64(Column.backoffMs.rawValue), backoffMaxMs: s.int64(Column.backoffMaxMs.rawValue),
            idempotencyKey: s.textOrNil(Column.idempotencyKey.rawValue), worker: s.textOrNil(Column.worker.rawValue),
            error: s.textOrNil(Column.error.rawValue), result: s.blobOrNil(Column.result.rawValue),
            payload: s.blob(Column.payload.rawValue), owner: s.textOrNil(Column.owner.rawValue))
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
