/// The journal's on-disk layout, written down in one place.
///
/// One row per task, updated in place as the task moves (a state table, not an
/// append-only log): disk use follows the number of live and retained tasks,
/// not the number of events, and compaction is a `DELETE` of expired rows.
///
/// Timestamps are microseconds since the Unix epoch (`Timestamp`); `id` is the
/// task id's 64 bits (its hex form is the wire form), so `ORDER BY id` is
/// submission order; `state` is the wire name (`queued`, `timed_out`, …) so
/// that an operator can read the file with the `sqlite3` shell.
enum JournalSchema {
    /// `PRAGMA application_id`: "CVYJ". Tells a Conveyor journal from any other SQLite file.
    static let applicationID: Int32 = 0x4356_594A
    /// `PRAGMA user_version`. Bump with a migration when the layout changes.
    static let version: Int32 = 3

    /// From each older version to the next; run in order inside one transaction.
    static let migrations: [Int32: String] = [
        // 1 → 2: task ownership (CURVE keys, HTTP token names).
        1: "ALTER TABLE tasks ADD COLUMN owner TEXT",
        // 2 → 3: idempotency keys and dead letters older than memory are looked up on disk.
        2: indexes,
    ]

    /// Lookups of what the scheduler no longer holds in memory.
    static let indexes = """
        CREATE INDEX IF NOT EXISTS tasks_key ON tasks(idempotency_key) WHERE idempotency_key IS NOT NULL;
        CREATE INDEX IF NOT EXISTS tasks_dead ON tasks(finished_at) WHERE dead = 1;
        """

    /// Created once, on a new file, after `auto_vacuum = INCREMENTAL`.
    static let create = """
        CREATE TABLE tasks (
            id              INTEGER PRIMARY KEY,
            seq             INTEGER NOT NULL,
            state           TEXT    NOT NULL,
            priority        INTEGER NOT NULL,
            type            TEXT    NOT NULL,
            attempt         INTEGER NOT NULL,
            max_attempts    INTEGER NOT NULL,
            failures        INTEGER NOT NULL,
            lost_deliveries INTEGER NOT NULL,
            timeout_ms      INTEGER NOT NULL,
            created_at      INTEGER NOT NULL,
            started_at      INTEGER,
            finished_at     INTEGER,
            run_at          INTEGER,
            dead            INTEGER NOT NULL,
            backoff_ms      INTEGER NOT NULL,
            backoff_max_ms  INTEGER NOT NULL,
            idempotency_key TEXT,
            worker          TEXT,
            error           TEXT,
            result          BLOB,
            payload         BLOB    NOT NULL,
            owner           TEXT
        );
        -- Recovery reads unfinished tasks in submission order without touching
        -- the (possibly many) finished ones kept for their results.
        CREATE INDEX tasks_open ON tasks(id) WHERE finished_at IS NULL;
        -- Compaction and the recovery of recent results find finished tasks by age.
        CREATE INDEX tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL;
        -- last_id: the largest task id ever journaled, kept when its row is deleted,
        -- so that a restarted broker never hands out an id twice.
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
        """ + indexes

    /// The columns every `SELECT` reads, in `Column` order.
    static let columns = """
        id, seq, state, priority, type, attempt, max_attempts, failures, lost_deliveries, timeout_ms, \
        created_at, started_at, finished_at, run_at, dead, backoff_ms, backoff_max_ms, idempotency_key, \
        worker, error, result, payload, owner
        """

    /// Column positions in `columns`; the SQL parameter for a column is its position + 1.
    enum Column: Int32 {
        case id = 0, seq, state, priority, type, attempt, maxAttempts, failures, lostDeliveries, timeoutMs,
             createdAt, startedAt, finishedAt, runAt, dead, backoffMs, backoffMaxMs, idempotencyKey,
             worker, error, result, payload, owner

        var parameter: Int32 { rawValue + 1 }
    }

    /// Parameter of `update`: 1 when the task is final and not dead-lettered,
    /// whose payload the handler no longer needs.
    static let clearPayloadParameter: Int32 = 24

    static let insert = """
        INSERT OR REPLACE INTO tasks (\(columns))
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)
        """

    /// Rewrites only what changes after submission; the payload is not bound
    /// (it is only ever cleared, when the task is finished and not dead).
    static let update = """
        UPDATE tasks SET state = ?3, attempt = ?6, failures = ?8, lost_deliveries = ?9, started_at = ?12,
            finished_at = ?13, run_at = ?14, dead = ?15, worker = ?19, error = ?20, result = ?21,
            payload = CASE WHEN ?24 THEN x'' ELSE payload END
        WHERE id = ?1
        """

    static let delete = "DELETE FROM tasks WHERE id = ?1"
    static let setLastID = "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_id', ?1)"
    /// `generation`: bumped at every start, mirrored in the `HighWaterMark`;
    /// a journal from an earlier run (an old copy) has a smaller one.
    /// Absent in journals older than the mark: 0.
    static let setGeneration = "INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?1)"
    static let getGeneration = "SELECT value FROM meta WHERE key = 'generation'"

    /// Paused task types live in `meta` as `paused:TYPE` = 1: an operator's
    /// decision that must survive a restart (no schema change needed).
    static let pausedPrefix = "paused:"
    static func pausedKey(_ type: String) -> String { pausedPrefix + type }
    static let setPaused = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, 1)"
    static let clearPaused = "DELETE FROM meta WHERE key = ?" // also clears a hold
    static let listPaused = "SELECT key FROM meta WHERE key LIKE 'paused:%' ORDER BY key"
    /// Types held after a RETRY_LATER: `held:TYPE` = the hold's wall-clock end (µs).
    static let heldPrefix = "held:"
    static func heldKey(_ type: String) -> String { heldPrefix + type }
    static let setHeld = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
    static let listHeld = "SELECT key, value FROM meta WHERE key LIKE 'held:%' ORDER BY key"
}
