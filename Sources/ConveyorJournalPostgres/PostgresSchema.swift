/// The PostgreSQL journal's layout, in one place: the same columns as the
/// SQLite journal (`StoredTask`), plus the lease that makes one broker of
/// several the active one.
///
/// Versioned in `conveyor_meta` (`schema_version`); a broker creates or
/// migrates it under an advisory lock, so two brokers starting together
/// cannot race, and refuses a schema newer than it knows.
enum PostgresSchema {
    static let version: Int64 = 1
    /// `pg_advisory_xact_lock` key for schema changes ("CVYJ").
    static let lockKey: Int64 = 0x4356_594A

    /// From each older version to the next (none yet: version 1 is the first).
    static let migrations: [Int64: [String]] = [:]

    static let create: [String] = [
        "CREATE TABLE IF NOT EXISTS conveyor_meta (key text PRIMARY KEY, value bigint NOT NULL)",
        """
        CREATE TABLE IF NOT EXISTS conveyor_tasks (
            id bigint PRIMARY KEY, seq bigint NOT NULL, state text NOT NULL, priority bigint NOT NULL,
            type text NOT NULL, attempt bigint NOT NULL, max_attempts bigint NOT NULL, failures bigint NOT NULL,
            lost_deliveries bigint NOT NULL, timeout_ms bigint NOT NULL, created_at bigint NOT NULL,
            started_at bigint, finished_at bigint, run_at bigint, dead boolean NOT NULL,
            backoff_ms bigint NOT NULL, backoff_max_ms bigint NOT NULL, idempotency_key text, worker text,
            error text, result bytea, payload bytea, owner text)
            -- Room on each page for the in-place (HOT) update when a task starts.
            WITH (fillfactor = 70)
        """,
        "CREATE INDEX IF NOT EXISTS conveyor_tasks_open ON conveyor_tasks (id) WHERE finished_at IS NULL",
        "CREATE INDEX IF NOT EXISTS conveyor_tasks_finished ON conveyor_tasks (finished_at) WHERE finished_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS conveyor_tasks_key ON conveyor_tasks (idempotency_key, owner) WHERE idempotency_key IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS conveyor_tasks_dead ON conveyor_tasks (finished_at) WHERE dead",
        """
        CREATE TABLE IF NOT EXISTS conveyor_lease (
            id int PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL, holder text NOT NULL,
            endpoint text NOT NULL, expires_at timestamptz NOT NULL)
        """,
        "INSERT INTO conveyor_lease VALUES (1, 0, '', '', '-infinity') ON CONFLICT (id) DO NOTHING",
    ]

    static let columns = """
        id, seq, state, priority, type, attempt, max_attempts, failures, lost_deliveries, timeout_ms, \
        created_at, started_at, finished_at, run_at, dead, backoff_ms, backoff_max_ms, idempotency_key, \
        worker, error, result, payload, owner
        """
    static let columnCount = 23

    /// A whole batch in one statement, so one round trip (alone, an implicit
    /// transaction): the lease row locked `FOR SHARE` and checked against $25
    /// (this broker's epoch; NULL without a lease), then — only when the epoch
    /// is ours — the upsert of every row from 24 arrays ($1…$24, NULLs from the
    /// bit mask `n`), the deletes ($26) and the last id ($27, 0: unchanged).
    /// Answers the epoch found. A new row is written whole; a known one keeps
    /// its payload unless the row's payload is an empty value (cleared: the task
    /// is done) — a NULL payload means "as stored".
    static let fencedBatch = """
        WITH fence AS (SELECT epoch FROM conveyor_lease WHERE id = 1 FOR SHARE),
        ok AS (SELECT 1 FROM fence WHERE $25::bigint IS NULL OR epoch = $25::bigint),
        ins AS (
            INSERT INTO conveyor_tasks (\(columns))
            SELECT id, seq, state, priority, type, attempt, max_attempts, failures, lost_deliveries, timeout_ms, created_at,
                CASE WHEN n & 1 = 0 THEN started_at END, CASE WHEN n & 2 = 0 THEN finished_at END,
                CASE WHEN n & 4 = 0 THEN run_at END, dead, backoff_ms, backoff_max_ms,
                CASE WHEN n & 8 = 0 THEN idempotency_key END, CASE WHEN n & 16 = 0 THEN worker END,
                CASE WHEN n & 32 = 0 THEN error END, CASE WHEN n & 64 = 0 THEN result END,
                CASE WHEN n & 128 = 0 THEN payload END, CASE WHEN n & 256 = 0 THEN owner END
            FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[],
                        $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[],
                        $15::bool[], $16::bigint[], $17::bigint[], $18::text[], $19::text[], $20::text[], $21::bytea[],
                        $22::bytea[], $23::text[], $24::bigint[])
                AS v(id, seq, state, priority, type, attempt, max_attempts, failures, lost_deliveries, timeout_ms, created_at,
                     started_at, finished_at, run_at, dead, backoff_ms, backoff_max_ms, idempotency_key, worker, error,
                     result, payload, owner, n)
            WHERE EXISTS (SELECT 1 FROM ok)
            ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, attempt = EXCLUDED.attempt,
                failures = EXCLUDED.failures, lost_deliveries = EXCLUDED.lost_deliveries, started_at = EXCLUDED.started_at,
                finished_at = EXCLUDED.finished_at, run_at = EXCLUDED.run_at, dead = EXCLUDED.dead, worker = EXCLUDED.worker,
                error = EXCLUDED.error, result = EXCLUDED.result,
                payload = COALESCE(EXCLUDED.payload, conveyor_tasks.payload)
            RETURNING 1),
        del AS (DELETE FROM conveyor_tasks WHERE id = ANY($26::bigint[]) AND EXISTS (SELECT 1 FROM ok) RETURNING 1),
        last AS (INSERT INTO conveyor_meta (key, value) SELECT 'last_id', $27::bigint WHERE $27::bigint > 0 AND EXISTS (SELECT 1 FROM ok)
                 ON CONFLICT (key) DO UPDATE SET value = GREATEST(conveyor_meta.value, EXCLUDED.value) RETURNING 1)
        SELECT epoch FROM fence
        """

    static let setMeta = "INSERT INTO conveyor_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    static let pausedPrefix = "paused:"
    static let heldPrefix = "held:"

    /// The fence: the lease row locked against a takeover until this transaction ends.
    static let fence = "SELECT epoch FROM conveyor_lease WHERE id = 1 FOR SHARE"
}
