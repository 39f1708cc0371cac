import ConveyorCore
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization

/// The journal on PostgreSQL (through postgres-nio): the broker's state in
/// an established, replicated database, so that losing the broker's machine
/// loses no acknowledged task, and a standby broker on another machine can
/// take over from the same rows (`JournalLease`).
///
/// Why it looks like this:
/// * **Group commit, batched statements.** `apply` writes one loop
///   iteration's batch with one prepared statement (`PostgresSchema.fencedBatch`):
///   its upserts as one `INSERT … SELECT FROM unnest(arrays) ON CONFLICT`
///   (27 parameters, one plan, whatever the number of rows), its deletes as
///   one `DELETE … = ANY`, so one round trip and one commit carry a thousand tasks.
/// * **Durability modes.** `fsync`: the broker's reply waits for COMMIT, with
///   `synchronous_commit` as the server is configured (a synchronous standby
///   included). `batch`: `synchronous_commit = off` for this session — the
///   server flushes within `wal_writer_delay`, a server crash can lose that much.
/// * **Fencing.** Once this broker holds the lease, every write first
///   locks the lease row (`FOR SHARE`) and checks the epoch: a deposed
///   broker's writes fail with `JournalFenced`, and a takeover waits for a
///   write in flight to end, so the new active broker reads everything the
///   old one committed.
/// * **Reconnects.** A lost connection is reopened by the next call; a
///   failed `apply` leaves the batch with `Journal`, which retries it.
///
/// Threading: the broker's loop thread calls every method, and waits for
/// each (the journal is on the reply's critical path anyway); postgres-nio
/// runs on a private one-thread event loop group.
public final class PostgresJournal: JournalBackend, JournalLease, @unchecked Sendable {
    public let url: PostgresURL
    public let durability: Durability
    public enum Durability: String, Sendable {
        case fsync, batch
    }

    private let password: String?
    private let group: MultiThreadedEventLoopGroup
    private let logger: Logger
    private var connection: PostgresConnection?
    private var lastIDWritten: Int64 = 0
    /// The epoch this broker holds (once it took the lease): every write is fenced with it.
    public internal(set) var epoch: Int64?
    /// A random id for this process: a restarted broker is a new holder.
    public let holder = UUID().uuidString
    private var isClosed = false

    public var location: String { url.description }

    /// Connects, then creates or migrates the schema.
    ///
    /// - Throws: `PostgresJournalError` naming the URL and what failed
    ///   (unreachable server, authentication, a schema newer than this broker's).
    public init(url: PostgresURL, durability: Durability, password: String?, logger: Logger = Logger(label: "conveyor.journal.postgres")) throws {
        self.url = url
        self.durability = durability
        self.password = password
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            try prepareSchema()
            lastIDWritten = try lastIDStored()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    deinit {
        try? close()
    }

    // MARK: Connection

    /// Runs `body` on a live connection, opening one if needed; a connection
    /// that failed is dropped, so the next call reconnects.
    func withConnection<T: Sendable>(_ doing: String, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T) throws -> T {
        guard !isClosed else { throw PostgresJournalError(url: url, doing: doing, detail: "the journal is closed") }
        if let c = connection, c.isClosed { connection = nil }
        let conn = try connection ?? connect()
        connection = conn
        do {
            let logger = self.logger
            return try blocking(timeoutSeconds: Self.answerTimeoutSeconds) { try await body(conn, logger) }
        } catch let e as JournalFenced {
            throw e
        } catch let e as BlockingTimeout {
            // No answer (a server that went away without the connection noticing):
            // this connection is done for; the next call opens a new one.
            connection = nil
            Task { try? await conn.close() }
            throw PostgresJournalError(url: url, doing: doing, detail: "\(e)")
        } catch {
            if conn.isClosed { connection = nil }
            throw PostgresJournalError(url: url, doing: doing, error: error)
        }
    }

    /// The longest any one journal call may take before the connection is
    /// given up (the broker then degrades and retries): a call that never
    /// returns would stop the broker's loop, heartbeats and lease included.
    static let answerTimeoutSeconds = 3.0

    /// Per session: a transaction left open by a frozen broker (SIGSTOP, a VM
    /// paused) is ended by the server, so its lock on the lease row cannot stop
    /// a takeover; lock waits are bounded so no loop blocks behind one.
    static let sessionSettings = [
        "SET idle_in_transaction_session_timeout = '2s'",
        "SET lock_timeout = '2s'",
        "SET statement_timeout = '2500ms'",
    ]

    /// The TLS the URL's `sslmode` asks for.
    private func tls() throws -> PostgresConnection.Configuration.TLS {
        var c = TLSConfiguration.makeClientConfiguration()
        switch url.sslMode {
        case .disable:
            return .disable
        case .prefer, .require:
            // As libpq: encrypted, but whoever answers is not checked (verify-full does that).
            c.certificateVerification = .none
        case .verifyFull:
            c.certificateVerification = .fullVerification
            if let file = url.sslRootCert {
                do { c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(file)) } catch {
                    throw PostgresJournalError(url: url, doing: "reading sslrootcert", detail: "\(file): \(error)")
                }
            }
        }
        let context: NIOSSLContext
        do { context = try NIOSSLContext(configuration: c) } catch {
            throw PostgresJournalError(url: url, doing: "setting up TLS", detail: "\(error)")
        }
        return url.sslMode == .prefer ? .prefer(context) : .require(context)
    }

    private func connect() throws -> PostgresConnection {
        var config = PostgresConnection.Configuration(host: url.host, port: url.port, username: url.user,
                                                      password: password, database: url.database, tls: try tls())
        // verify-full: postgres-nio checks the certificate against the URL's host name
        // (for an IP address, the chain only: an IP cannot be sent as SNI).
        config.options.connectTimeout = .seconds(5)
        let configuration = config
        let loop = group.next()
        let logger = self.logger
        let schema = url.schema
        let durability = self.durability
        let conn: PostgresConnection
        do {
            conn = try blocking(timeoutSeconds: Self.answerTimeoutSeconds) {
                try await PostgresConnection.connect(on: loop, configuration: configuration, id: 1, logger: logger).get()
            }
        } catch {
            throw PostgresJournalError(url: url, doing: "connecting", error: error)
        }
        do {
            try blocking(timeoutSeconds: Self.answerTimeoutSeconds) {
                for sql in Self.sessionSettings { try await conn.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
                if let schema {
                    try await conn.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(schema)"), logger: logger)
                    try await conn.query(PostgresQuery(unsafeSQL: "SET search_path TO \(schema)"), logger: logger)
                }
                if durability == .batch {
                    try await conn.query("SET synchronous_commit = off", logger: logger)
                }
            }
        } catch {
            _ = try? blocking { try await conn.close() }
            throw PostgresJournalError(url: url, doing: "configuring the session", error: error)
        }
        return conn
    }

    private func prepareSchema() throws {
        let known = PostgresSchema.version
        let url = self.url
        try withConnection("creating the schema") { conn, logger in
            try await conn.query("BEGIN", logger: logger)
            do {
                try await conn.query("SELECT pg_advisory_xact_lock(\(PostgresSchema.lockKey))", logger: logger)
                try await conn.query(PostgresQuery(unsafeSQL: PostgresSchema.create[0]), logger: logger)
                var version: Int64 = 0
                for try await v in try await conn.query("SELECT value FROM conveyor_meta WHERE key = 'schema_version'", logger: logger).decode(Int64.self) {
                    version = v
                }
                if version > known {
                    throw PostgresJournalError(url: url, doing: "checking the schema",
                                               detail: "it was written by a newer Conveyor (schema version \(version), this one knows \(known))")
                }
                if version == 0 {
                    for sql in PostgresSchema.create.dropFirst() { try await conn.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
                } else {
                    for v in version..<known {
                        for sql in PostgresSchema.migrations[v] ?? [] { try await conn.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
                    }
                }
                try await conn.query("INSERT INTO conveyor_meta VALUES ('schema_version', \(known)) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", logger: logger)
                try await conn.query("COMMIT", logger: logger)
            } catch {
                _ = try? await conn.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    private func lastIDStored() throws -> Int64 {
        try withConnection("reading the last task id") { conn, logger in
            var last: Int64 = 0
            let rows = try await conn.query("""
                SELECT GREATEST((SELECT max(id) FROM conveyor_tasks), (SELECT value FROM conveyor_meta WHERE key = 'last_id'), 0)
                """, logger: logger)
            for try await v in rows.decode(Int64.self) { last = v }
            return last
        }
    }

    // MARK: JournalBackend

    public func apply(_ batch: JournalBatch) throws {
        guard !batch.isEmpty else { return }
        var upserts: [(StoredTask, Bool)] = []
        var deletes: [Int64] = []
        upserts.reserveCapacity(batch.order.count)
        batch.forEachRow({ t, isNew in upserts.append((t, isNew)) }, delete: { deletes.append(Int64(bitPattern: $0.raw)) })
        let largest = Int64(bitPattern: batch.largestID)
        let raiseLast = largest > lastIDWritten
        let epoch = self.epoch
        var b = Self.upsertBindings(upserts)
        b.append(epoch)
        b.append(deletes)
        b.append(raiseLast ? largest : 0)
        let statement = FencedBatch(bindings: b)
        // Pauses and holds (rare): key/value rows written in the same transaction.
        // `value` nil: the row is deleted (a resume, a released hold).
        let meta: [(key: String, value: Int64?)] = batch.pauses.map { (PostgresSchema.pausedPrefix + $0.key, $0.value ? 1 : nil) }
            + batch.holds.map { (PostgresSchema.heldPrefix + $0.key, $0.value > 0 ? $0.value : nil) }
        let found: Int64? = try withConnection("writing") { conn, logger in
            // The common case is this one statement alone: one round trip, one commit.
            guard !meta.isEmpty else {
                for try await e in try await conn.execute(statement, logger: logger) { return e }
                return nil
            }
            try await conn.query("BEGIN", logger: logger)
            do {
                var found: Int64?
                for try await e in try await conn.execute(statement, logger: logger) { found = e }
                guard epoch == nil || found == epoch else {
                    try await conn.query("ROLLBACK", logger: logger)
                    return found
                }
                for (key, value) in meta {
                    if let value {
                        try await conn.query(PostgresQuery(unsafeSQL: PostgresSchema.setMeta, binds: Self.binds(key, value)), logger: logger)
                    } else {
                        try await conn.query("DELETE FROM conveyor_meta WHERE key = \(key)", logger: logger)
                    }
                }
                try await conn.query("COMMIT", logger: logger)
                return found
            } catch {
                _ = try? await conn.query("ROLLBACK", logger: logger)
                throw error
            }
        }
        if let epoch, found != epoch { throw JournalFenced(mine: epoch, current: found ?? -1) }
        if raiseLast { lastIDWritten = largest }
    }

    /// Inside a transaction: locks the lease row against a takeover until the
    /// transaction ends, and throws `JournalFenced` when another broker's epoch
    /// is in it (nil `epoch`: this journal holds no lease, e.g. a test's).
    static func fence(_ conn: PostgresConnection, _ epoch: Int64?, _ logger: Logger) async throws {
        guard let epoch else { return }
        var current: Int64 = -1
        for try await e in try await conn.query(PostgresQuery(unsafeSQL: PostgresSchema.fence), logger: logger).decode(Int64.self) {
            current = e
        }
        if current != epoch { throw JournalFenced(mine: epoch, current: current) }
    }

    private static func binds(_ key: String, _ value: Int64) -> PostgresBindings {
        var b = PostgresBindings()
        b.append(key)
        b.append(value)
        return b
    }

    /// One upsert for the whole batch: every column as one array parameter,
    /// `unnest`ed into rows (24 parameters however many rows: one plan, binary
    /// arrays, no statement text growing with the batch). Arrays cannot hold
    /// NULL here, so the last one is a bit mask of the columns that are NULL.
    static func upsertBindings(_ rows: [(StoredTask, Bool)]) -> PostgresBindings {
        let n = rows.count
        var id = [Int64](), seq = [Int64](), state = [String](), priority = [Int64](), type = [String]()
        var attempt = [Int64](), maxAttempts = [Int64](), failures = [Int64](), lost = [Int64](), timeout = [Int64]()
        var created = [Int64](), started = [Int64](), finished = [Int64](), runAt = [Int64](), dead = [Bool]()
        var backoff = [Int64](), backoffMax = [Int64](), key = [String](), worker = [String](), error = [String]()
        var result = [ByteBuffer](), payload = [ByteBuffer](), owner = [String](), nulls = [Int64]()
        id.reserveCapacity(n); seq.reserveCapacity(n); state.reserveCapacity(n); nulls.reserveCapacity(n)
        let empty = ByteBuffer()
        for (t, isNew) in rows {
            var mask: Int64 = 0
            func opt<T>(_ v: T?, _ bit: Int64, _ placeholder: T) -> T {
                if let v { return v }
                mask |= bit
                return placeholder
            }
            id.append(t.id); seq.append(t.seq); state.append(t.state); priority.append(t.priority); type.append(t.type)
            attempt.append(t.attempt); maxAttempts.append(t.maxAttempts); failures.append(t.failures)
            lost.append(t.lostDeliveries); timeout.append(t.timeoutMs); created.append(t.createdAt)
            started.append(opt(t.startedAt, 1, 0)); finished.append(opt(t.finishedAt, 2, 0)); runAt.append(opt(t.runAt, 4, 0))
            dead.append(t.dead); backoff.append(t.backoffMs); backoffMax.append(t.backoffMaxMs)
            key.append(opt(t.idempotencyKey, 8, "")); worker.append(opt(t.worker, 16, "")); error.append(opt(t.error, 32, ""))
            result.append(opt(t.result.map { ByteBuffer(bytes: $0) }, 64, empty))
            // New: the payload. Known: kept (NULL: "as stored"), or cleared once the task is done.
            let p: ByteBuffer? = isNew ? ByteBuffer(bytes: t.payload) : (t.clearsPayload ? empty : nil)
            payload.append(opt(p, 128, empty))
            owner.append(opt(t.owner, 256, ""))
            nulls.append(mask)
        }
        var b = PostgresBindings(capacity: 24)
        b.append(id); b.append(seq); b.append(state); b.append(priority); b.append(type); b.append(attempt)
        b.append(maxAttempts); b.append(failures); b.append(lost); b.append(timeout); b.append(created); b.append(started)
        b.append(finished); b.append(runAt); b.append(dead); b.append(backoff); b.append(backoffMax); b.append(key)
        b.append(worker); b.append(error); b.append(result); b.append(payload); b.append(owner); b.append(nulls)
        return b
    }

    public func load<V: JournalLoadVisitor>(finishedSince: Timestamp, keepFinished: Int, into visitor: inout V) throws {
        let meta: [(String, Int64)] = try withConnection("recovering") { conn, logger in
            var out: [(String, Int64)] = []
            let rows = try await conn.query("SELECT key, value FROM conveyor_meta WHERE key LIKE 'paused:%' OR key LIKE 'held:%' ORDER BY key", logger: logger)
            for try await (k, v) in rows.decode((String, Int64).self) { out.append((k, v)) }
            return out
        }
        for (key, value) in meta {
            if key.hasPrefix(PostgresSchema.pausedPrefix) {
                visitor.paused(String(key.dropFirst(PostgresSchema.pausedPrefix.count)))
            } else {
                visitor.held(String(key.dropFirst(PostgresSchema.heldPrefix.count)), until: value)
            }
        }
        let unfinished: Int64 = try withConnection("recovering") { conn, logger in
            var n: Int64 = 0
            for try await c in try await conn.query("SELECT count(*) FROM conveyor_tasks WHERE finished_at IS NULL", logger: logger).decode(Int64.self) { n = c }
            return n
        }
        visitor.expect(unfinished: Int(clamping: unfinished))
        // Unfinished rows in id order, a page at a time (keyset pagination):
        // a million rows never sit in memory twice.
        var after = Int64.min
        while true {
            let from = after
            let page: [StoredTask] = try withConnection("recovering") { conn, logger in
                let rows = try await conn.query(PostgresQuery(unsafeSQL: """
                    SELECT \(PostgresSchema.columns) FROM conveyor_tasks WHERE finished_at IS NULL AND id > $1 ORDER BY id LIMIT 50000
                    """, binds: { var b = PostgresBindings(); b.append(from); return b }()), logger: logger)
                var out: [StoredTask] = []
                out.reserveCapacity(50000)
                for try await row in rows { out.append(try Self.decode(row)) }
                return out
            }
            for t in page { visitor.task(t) }
            guard let last = page.last, page.count == 50000 else { break }
            after = last.id
        }
        guard keepFinished > 0 else { return }
        let recent: [StoredTask] = try withConnection("recovering") { conn, logger in
            let rows = try await conn.query("""
                SELECT \(unescaped: PostgresSchema.columns) FROM conveyor_tasks
                WHERE finished_at IS NOT NULL AND finished_at >= \(finishedSince) ORDER BY finished_at DESC LIMIT \(Int64(keepFinished))
                """, logger: logger)
            var out: [StoredTask] = []
            for try await row in rows { out.append(try Self.decode(row)) }
            return out
        }
        for t in recent.reversed() { visitor.task(t) }
    }

    public func lookup(_ id: TaskID) throws -> StoredTask? {
        let key = Int64(bitPattern: id.raw)
        return try withConnection("reading task \(id)") { conn, logger in
            let rows = try await conn.query("SELECT \(unescaped: PostgresSchema.columns) FROM conveyor_tasks WHERE id = \(key)", logger: logger)
            for try await row in rows { return try Self.decode(row) }
            return nil
        }
    }

    public func lookup(idempotencyKey: String, owner: String?) throws -> StoredTask? {
        try withConnection("looking up an idempotency key") { conn, logger in
            let rows = try await conn.query("""
                SELECT \(unescaped: PostgresSchema.columns) FROM conveyor_tasks
                WHERE idempotency_key = \(idempotencyKey) AND owner IS NOT DISTINCT FROM \(owner) ORDER BY id DESC LIMIT 1
                """, logger: logger)
            for try await row in rows { return try Self.decode(row) }
            return nil
        }
    }

    public func deadLetters(limit: Int) throws -> [StoredTask] {
        let n = Int64(max(0, limit))
        return try withConnection("listing dead letters") { conn, logger in
            let rows = try await conn.query("""
                SELECT \(unescaped: PostgresSchema.columns) FROM conveyor_tasks WHERE dead ORDER BY finished_at, id LIMIT \(n)
                """, logger: logger)
            var out: [StoredTask] = []
            for try await row in rows { out.append(try Self.decode(row)) }
            return out
        }
    }

    public func compact(olderThan cutoff: Timestamp) throws {
        let epoch = self.epoch
        try withConnection("compacting") { conn, logger in
            try await conn.query("BEGIN", logger: logger)
            do {
                try await Self.fence(conn, epoch, logger)
                try await conn.query("DELETE FROM conveyor_tasks WHERE finished_at IS NOT NULL AND finished_at < \(cutoff)", logger: logger)
                try await conn.query("COMMIT", logger: logger)
            } catch {
                _ = try? await conn.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    public func lastID() throws -> TaskID? {
        let last = max(try lastIDStored(), lastIDWritten)
        return last == 0 ? nil : TaskID(raw: UInt64(bitPattern: last))
    }

    public func close() throws {
        guard !isClosed else { return }
        let c = connection
        connection = nil
        isClosed = true
        if let c { _ = try? blocking { try await c.close() } }
        try? group.syncShutdownGracefully()
    }

    // MARK: Rows

    static func decode(_ row: PostgresRow) throws -> StoredTask {
        let r = row.makeRandomAccess()
        func bytes(_ i: Int) throws -> [UInt8]? {
            try r[i].decode(ByteBuffer?.self).map { Array($0.readableBytesView) }
        }
        return StoredTask(
            id: try r[0].decode(Int64.self), seq: try r[1].decode(Int64.self), state: try r[2].decode(String.self),
            priority: try r[3].decode(Int64.self), type: try r[4].decode(String.self), attempt: try r[5].decode(Int64.self),
            maxAttempts: try r[6].decode(Int64.self), failures: try r[7].decode(Int64.self),
            lostDeliveries: try r[8].decode(Int64.self), timeoutMs: try r[9].decode(Int64.self),
            createdAt: try r[10].decode(Int64.self), startedAt: try r[11].decode(Int64?.self),
            finishedAt: try r[12].decode(Int64?.self), runAt: try r[13].decode(Int64?.self), dead: try r[14].decode(Bool.self),
            backoffMs: try r[15].decode(Int64.self), backoffMaxMs: try r[16].decode(Int64.self),
            idempotencyKey: try r[17].decode(String?.self), worker: try r[18].decode(String?.self),
            error: try r[19].decode(String?.self), result: try bytes(20), payload: try bytes(21) ?? [],
            owner: try r[22].decode(String?.self))
    }

    // MARK: Inspection (tests, diagnostics)

    /// Rows by state.
    public func countByState() throws -> [String: Int] {
        try withConnection("counting") { conn, logger in
            var out: [String: Int] = [:]
            for try await (s, n) in try await conn.query("SELECT state, count(*) FROM conveyor_tasks GROUP BY state", logger: logger).decode((String, Int64).self) {
                out[s] = Int(n)
            }
            return out
        }
    }

    /// One statement, for tests (e.g. dropping the schema).
    public func executeForTesting(_ sql: String) throws {
        _ = try withConnection("running a test statement") { conn, logger in
            try await conn.query(PostgresQuery(unsafeSQL: sql), logger: logger)
        }
    }
}

/// `PostgresSchema.fencedBatch` as a prepared statement: parsed and planned
/// once per connection instead of at every commit.
struct FencedBatch: PostgresPreparedStatement {
    typealias Row = Int64
    static let sql = PostgresSchema.fencedBatch
    let bindings: PostgresBindings
    func makeBindings() -> PostgresBindings { bindings }
    func decodeRow(_ row: PostgresRow) throws -> Int64 { try row.decode(Int64.self) }
}

/// Waits on the calling (non-async) thread for async work: the broker's loop
/// is a plain thread that owns its ZeroMQ sockets, and the journal is on its
/// critical path anyway. nil `timeoutSeconds`: as long as it takes.
func blocking<T: Sendable>(timeoutSeconds: Double? = nil, _ body: @escaping @Sendable () async throws -> T) throws -> T {
    let box = BlockingResult<T>()
    let done = DispatchSemaphore(value: 0)
    let task = Task {
        let r: Result<T, any Error>
        do { r = .success(try await body()) } catch { r = .failure(error) }
        box.result.withLock { $0 = r }
        done.signal()
    }
    if let timeoutSeconds {
        guard done.wait(timeout: .now() + timeoutSeconds) == .success else {
            task.cancel()
            throw BlockingTimeout(seconds: timeoutSeconds)
        }
    } else {
        done.wait()
    }
    guard let result = box.result.withLock({ $0 }) else { throw CancellationError() }
    return try result.get()
}

/// Where `blocking`'s task leaves its result.
private final class BlockingResult<T>: Sendable {
    let result = Mutex<Result<T, any Error>?>(nil)
}

/// A journal call that got no answer in time.
struct BlockingTimeout: Error, CustomStringConvertible {
    let seconds: Double
    var description: String { "no answer from the server within \(Int(seconds)) s" }
}

/// A PostgreSQL journal operation that failed: the URL (never a password),
/// what was being done, and the server's own message.
public struct PostgresJournalError: Error, CustomStringConvertible, Sendable {
    public let url: PostgresURL
    public let doing: String
    public let detail: String
    /// The SQLSTATE, when the server sent one.
    public let sqlState: String?

    public init(url: PostgresURL, doing: String, detail: String, sqlState: String? = nil) {
        self.url = url
        self.doing = doing
        self.detail = detail
        self.sqlState = sqlState
    }

    init(url: PostgresURL, doing: String, error: any Error) {
        if let e = error as? PostgresJournalError {
            self = e
            return
        }
        var detail = "\(error)"
        var state: String?
        if let p = error as? PSQLError {
            state = p.serverInfo?[.sqlState]
            if let m = p.serverInfo?[.message] {
                detail = m
            } else {
                detail = "\(p.code)" + (p.underlying.map { ": \($0)" } ?? "")
            }
        }
        self.init(url: url, doing: doing, detail: detail, sqlState: state)
    }

    public var description: String { "journal \(url): \(doing) failed: \(detail)" + (sqlState.map { " (SQLSTATE \($0))" } ?? "") }
}
