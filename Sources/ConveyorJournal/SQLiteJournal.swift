import ConveyorCore
import Foundation
import GRDB

/// The embedded journal backend: every accepted task and its state in one
/// SQLite file (through GRDB) on the broker's disk, so that nothing
/// acknowledged is lost when the broker is killed (`Journal` drives it and
/// rebuilds the queue from it).
///
/// Why it looks like this:
/// * **Group commit.** `apply` writes one loop iteration's `JournalBatch` in
///   one transaction. A task submitted, dispatched and finished within one
///   iteration costs one row write, and a batch of a thousand submissions one
///   fsync, which is what keeps `fsync` mode close to memory-only throughput.
/// * **Durability modes.** `fsync`: WAL with `synchronous=FULL`, so `commit`
///   returns only once the batch is on disk (the broker replies after it).
///   `batch`: WAL with `synchronous=NORMAL`; a `WALSyncer` fsyncs the log every
///   `syncIntervalMs`. `none`: no journal at all (`open` returns nil).
/// * **One writer, many readers.** A `DataDirectoryLock` (flock): a second
///   broker on the same data directory fails at start with
///   `JournalError.locked` instead of corrupting the first one's queue, while
///   `conveyor journal backup` and `check` can read the live file (WAL
///   readers never block the writer).
/// * **Never silently backwards.** A `HighWaterMark` next to the file records
///   the largest id committed and the start generation; a journal behind it
///   (truncated, `-wal` lost, an old copy restored) is refused at open with
///   `JournalError.behindMark` unless `acceptJournalLoss`.
/// * **Self-contained at a clean stop.** `close` checkpoints the WAL into the
///   main file and truncates it, so the file alone holds every task.
/// * **Failed commits keep their changes.** A commit that fails (disk full,
///   I/O error) rolls back and leaves everything staged; the next `commit`
///   writes it together with whatever was staged since.
/// * **Bounded disk.** Finished rows are deleted when they expire (the
///   scheduler's `expired` event, and `compact` for those held only on disk);
///   `auto_vacuum=INCREMENTAL` and a truncating checkpoint give the space back.
///
/// Threading: the broker's loop thread calls every method; the connection is
/// a GRDB `DatabaseQueue`, which also serializes the batch-mode syncer.
public final class SQLiteJournal: JournalBackend, @unchecked Sendable {
    /// The journal's file name inside the data directory (plus `-wal` while open).
    public static let fileName = "conveyor-journal.sqlite"

    public let path: String
    public let durability: JournalConfig.Durability
    private let db: DatabaseQueue
    private let syncer: WALSyncer?
    private let lock: DataDirectoryLock
    private let mark: HighWaterMarkFile
    /// This run's generation (the one in the journal's `meta` and in the mark).
    public let generation: Int64
    /// Set when the journal was behind its mark and `acceptJournalLoss` let it
    /// start anyway: what was lost, for the broker to log loudly.
    public let acceptedLoss: String?
    /// Set when a journal with tasks had no mark yet (made by an older Conveyor,
    /// or the mark was deleted): one is written now.
    public let markNotice: String?

    private var lastIDWritten: UInt64 = 0
    private var isClosed = false
    private var codec: TaskRowCodec

    /// Opens (creating if needed) the journal `config` describes; nil for durability `none`.
    ///
    /// - Throws: `JournalError`, whose message names the file, when the
    ///   directory cannot be created, the file cannot be opened or written, is
    ///   corrupt, is not a Conveyor journal, or is used by another process.
    public static func open(_ config: JournalConfig) throws -> SQLiteJournal? {
        guard config.durability != .none else { return nil }
        return try SQLiteJournal(config)
    }

    /// Opens the journal whatever the durability (`none` here means: write,
    /// never fsync; the broker uses `open`, which returns nil for `none`).
    public init(_ config: JournalConfig) throws {
        path = config.journalPath
        durability = config.durability
        codec = TaskRowCodec()
        try SQLiteJournal.prepareDirectory(config.dataDirectory, journal: path)
        lock = try DataDirectoryLock(directory: config.dataDirectory, journal: path)
        mark = HighWaterMarkFile(path: config.markPath, sync: config.durability != .none)

        var c = Configuration()
        c.label = "conveyor.journal"
        c.busyMode = .immediateError
        c.foreignKeysEnabled = false
        let path = self.path
        do {
            db = try DatabaseQueue(path: path, configuration: c)
        } catch {
            throw JournalError.from(error, path: path, doing: "opening")
        }
        let synchronous = switch config.durability {
        case .fsync: "FULL"
        case .batch: "NORMAL"
        case .none: "OFF"
        }
        let start = try SQLiteJournal.setUp(db, path: path, synchronous: synchronous, mark: mark, acceptLoss: config.acceptJournalLoss)
        lastIDWritten = start.lastID
        generation = start.generation
        acceptedLoss = start.acceptedLoss
        markNotice = start.markNotice
        syncer = config.durability == .batch
            ? WALSyncer(walPath: path + "-wal", intervalMs: config.syncIntervalMs, mark: mark, generation: start.generation) : nil
    }

    deinit {
        syncer?.syncIfNeeded()
    }

    private static func prepareDirectory(_ dir: String, journal: String) throws {
        var isDir: ObjCBool = false
        let fm = FileManager.default
        if fm.fileExists(atPath: dir, isDirectory: &isDir) {
            guard isDir.boolValue else {
                throw JournalError(.cannotCreateDirectory, path: journal, detail: "\(dir) exists and is not a directory")
            }
        } else {
            do { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw JournalError(.cannotCreateDirectory, path: journal,
                                   detail: "cannot create \(dir): \((error as NSError).localizedDescription)")
            }
        }
        if fm.fileExists(atPath: journal, isDirectory: &isDir), isDir.boolValue {
            throw JournalError(.unwritable, path: journal, detail: "it is a directory, not a file")
        }
    }

    private struct Start {
        var lastID: UInt64
        var generation: Int64
        var acceptedLoss: String?
        var markNotice: String?
    }

    /// Pragmas, schema creation or verification, the high-water mark check,
    /// then this run's generation, in the journal first and in the mark after.
    private static func setUp(_ queue: DatabaseQueue, path: String, synchronous: String,
                              mark: HighWaterMarkFile, acceptLoss: Bool) throws -> Start {
        var step = "reading"
        do {
            return try queue.inDatabase { db in
                let tables = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master") ?? 0
                let appID = try Int32.fetchOne(db, sql: "PRAGMA application_id") ?? 0
                let version = try Int32.fetchOne(db, sql: "PRAGMA user_version") ?? 0
                if tables > 0 && appID != JournalSchema.applicationID {
                    throw JournalError(.incompatible, path: path,
                                       detail: "it is an SQLite database but not a Conveyor journal (application_id \(appID))")
                }
                if version > JournalSchema.version {
                    throw JournalError(.incompatible, path: path,
                                       detail: "it was written by a newer Conveyor (journal version \(version), this one reads \(JournalSchema.version))")
                }
                if tables > 0 {
                    step = "checking the schema"
                    let names = try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")
                    for needed in ["tasks", "meta", "tasks_open", "tasks_finished"] where !names.contains(needed) {
                        throw JournalError(.corrupt, path: path, detail: "its schema lacks '\(needed)'")
                    }
                }

                // Before anything is written: is this journal behind its mark?
                step = "checking the high-water mark"
                let position = tables == 0
                    ? HighWaterMark.Position(isEmpty: true, generation: 0, lastID: 0)
                    : try position(db)
                var acceptedLoss: String?
                var markNotice: String?
                var known: HighWaterMark?
                do {
                    known = try mark.read()
                } catch let e as JournalError where acceptLoss {
                    acceptedLoss = "\(e); a new mark is written"
                }
                if let known, let short = known.shortfall(of: position) {
                    let why = known.explain(short, markPath: mark.path)
                    guard acceptLoss else { throw JournalError(.behindMark, path: path, detail: why) }
                    acceptedLoss = "accepted with --accept-journal-loss: journal \(path) went backwards: \(why)"
                } else if known == nil && acceptedLoss == nil && !position.isEmpty {
                    markNotice = "journal \(path) had no high-water mark (\(mark.path)); starting one at \(HighWaterMark(generation: position.generation, lastID: position.lastID))"
                }

                step = "configuring"
                if tables == 0 {
                    // Only possible before the first table exists.
                    try db.execute(sql: "PRAGMA auto_vacuum = INCREMENTAL")
                }
                let mode = try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL")
                guard mode?.lowercased() == "wal" else {
                    throw JournalError(.unwritable, path: path, detail: "cannot switch it to WAL mode (got \(mode ?? "nothing"))")
                }
                try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
                // The WAL shrinks back to this after a checkpoint that followed a large transaction.
                try db.execute(sql: "PRAGMA journal_size_limit = 67108864")
                try db.execute(sql: "PRAGMA temp_store = MEMORY")
                try db.execute(sql: "PRAGMA cache_size = -32768")
                if tables == 0 {
                    step = "creating the schema"
                    try db.inTransaction(.immediate) {
                        try db.execute(sql: JournalSchema.create)
                        try db.execute(sql: "PRAGMA application_id = \(JournalSchema.applicationID)")
                        try db.execute(sql: "PRAGMA user_version = \(JournalSchema.version)")
                        return .commit
                    }
                } else if version < JournalSchema.version {
                    step = "migrating the schema from version \(version)"
                    try db.inTransaction(.immediate) {
                        for v in version..<JournalSchema.version {
                            if let sql = JournalSchema.migrations[v] { try db.execute(sql: sql) }
                        }
                        try db.execute(sql: "PRAGMA user_version = \(JournalSchema.version)")
                        return .commit
                    }
                }

                // A new generation for this run, above both the journal's and
                // the mark's; after an accepted loss the last id stays the mark's,
                // so ids a client may still hold are never handed out again.
                step = "starting a new generation"
                let generation = max(position.generation, known?.generation ?? 0) + 1
                let lastID = acceptLoss ? max(position.lastID, known?.lastID ?? 0) : position.lastID
                try db.inTransaction(.immediate) {
                    try db.execute(sql: JournalSchema.setGeneration, arguments: [generation])
                    if lastID > position.lastID {
                        try db.execute(sql: JournalSchema.setLastID, arguments: [Int64(bitPattern: lastID)])
                    }
                    return .commit
                }
                // Fold what a kill -9 left in the WAL into the main file now, so
                // the main file holds this generation (a reader may hold it: then later).
                try checkpointUnlessBusy(db)
                step = "writing the high-water mark"
                try mark.write(HighWaterMark(generation: generation, lastID: lastID))
                return Start(lastID: lastID, generation: generation, acceptedLoss: acceptedLoss, markNotice: markNotice)
            }
        } catch {
            throw JournalError.from(error, path: path, doing: step)
        }
    }

    /// The generation and the largest task id a journal's file holds.
    static func position(_ db: Database) throws -> HighWaterMark.Position {
        let generation = try Int64.fetchOne(db, sql: JournalSchema.getGeneration) ?? 0
        let last = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'last_id'") ?? 0
        let maxRow = try Int64.fetchOne(db, sql: "SELECT max(id) FROM tasks") ?? 0
        return HighWaterMark.Position(isEmpty: false, generation: generation,
                                      lastID: max(UInt64(bitPattern: last), UInt64(bitPattern: maxRow)))
    }

    /// A truncating checkpoint; a reader (`journal backup`, `check`) holding a
    /// snapshot makes it busy, which is not a failure: the WAL is folded in later.
    @discardableResult
    static func checkpointUnlessBusy(_ db: Database) throws -> Bool {
        do {
            try db.checkpoint(.truncate)
            return true
        } catch let e as DatabaseError where e.resultCode == .SQLITE_BUSY || e.resultCode == .SQLITE_LOCKED {
            return false
        }
    }

    // MARK: JournalBackend

    public var location: String { "sqlite:\(path)" }

    /// One transaction for the batch; rolled back whole if any of it fails.
    /// In fsync (and none) mode the high-water mark follows each commit that
    /// grew the largest id (a mark write that failed is retried at the next).
    public func apply(_ batch: JournalBatch) throws {
        if !batch.isEmpty {
            try write(batch)
            lastIDWritten = max(lastIDWritten, batch.largestID)
            syncer?.noteCommit(lastID: lastIDWritten)
        }
        if syncer == nil && lastIDWritten > (mark.current?.lastID ?? 0) {
            try mark.write(HighWaterMark(generation: generation, lastID: lastIDWritten))
        }
    }

    private func write(_ batch: JournalBatch) throws {
        let path = self.path
        let lastIDWritten = self.lastIDWritten
        do {
            try db.inDatabase { db in
                try db.inTransaction(.immediate) {
                    let insert = RawStatement(try db.cachedStatement(sql: JournalSchema.insert), path: path)
                    let update = RawStatement(try db.cachedStatement(sql: JournalSchema.update), path: path)
                    let delete = RawStatement(try db.cachedStatement(sql: JournalSchema.delete), path: path)
                    // A failure mid-row leaves bindings behind; the next commit starts clean.
                    defer { insert.reset(); update.reset(); delete.reset() }
                    try batch.forEachRow({ t, isNew in
                        if !isNew {
                            try TaskRowCodec.bindMutable(update, t)
                            try update.bind(JournalSchema.clearPayloadParameter, t.clearsPayload)
                            try update.run()
                            if update.changes > 0 { return }
                            // Not on disk (compacted meanwhile): write it whole.
                        }
                        try TaskRowCodec.bindAll(insert, t)
                        try insert.run()
                    }, delete: { id in
                        try delete.bind(1, Int64(bitPattern: id.raw))
                        try delete.run()
                    })
                    for (type, paused) in batch.pauses {
                        if paused {
                            try db.execute(sql: JournalSchema.setPaused, arguments: [JournalSchema.pausedKey(type)])
                        } else {
                            try db.execute(sql: JournalSchema.clearPaused, arguments: [JournalSchema.pausedKey(type)])
                        }
                    }
                    for (type, until) in batch.holds {
                        if until > 0 {
                            try db.execute(sql: JournalSchema.setHeld, arguments: [JournalSchema.heldKey(type), until])
                        } else {
                            try db.execute(sql: JournalSchema.clearPaused, arguments: [JournalSchema.heldKey(type)])
                        }
                    }
                    if batch.largestID > lastIDWritten {
                        let s = RawStatement(try db.cachedStatement(sql: JournalSchema.setLastID), path: path)
                        try s.bind(1, Int64(bitPattern: batch.largestID))
                        try s.run()
                    }
                    return .commit
                }
            }
        } catch {
            throw JournalError.from(error, path: path, doing: "writing")
        }
    }

    public func lastID() throws -> TaskID? {
        let path = self.path
        do {
            let maxRow = try db.inDatabase { db in try Int64.fetchOne(db, sql: "SELECT max(id) FROM tasks") }
            let last = max(maxRow.map { UInt64(bitPattern: $0) } ?? 0, lastIDWritten)
            return last == 0 ? nil : TaskID(raw: last)
        } catch {
            throw JournalError.from(error, path: path, doing: "reading the last task id")
        }
    }

    public func load<V: JournalLoadVisitor>(finishedSince: Timestamp, keepFinished: Int, into visitor: inout V) throws {
        let path = self.path
        var codec = self.codec
        defer { self.codec = codec }
        do {
            try db.inDatabase { db in
                for key in try String.fetchAll(db, sql: JournalSchema.listPaused) {
                    visitor.paused(String(key.dropFirst(JournalSchema.pausedPrefix.count)))
                }
                for row in try Row.fetchAll(db, sql: JournalSchema.listHeld) {
                    let key: String = row[0], until: Int64 = row[1]
                    visitor.held(String(key.dropFirst(JournalSchema.heldPrefix.count)), until: until)
                }
                visitor.expect(unfinished: try Int.fetchOne(db, sql: "SELECT count(*) FROM tasks INDEXED BY tasks_open WHERE finished_at IS NULL") ?? 0)
                let open = RawStatement(try db.makeStatement(
                    sql: "SELECT \(JournalSchema.columns) FROM tasks INDEXED BY tasks_open WHERE finished_at IS NULL ORDER BY id"), path: path)
                defer { open.reset() }
                while try open.step() { visitor.task(codec.decode(open)) }
                // The most recent finished tasks still within the retention; older
                // ones stay on disk only and are reached through `lookup`.
                guard keepFinished > 0 else { return }
                let done = RawStatement(try db.makeStatement(sql: """
                    SELECT \(JournalSchema.columns) FROM tasks INDEXED BY tasks_finished
                    WHERE finished_at IS NOT NULL AND finished_at >= ?1 ORDER BY finished_at DESC LIMIT ?2
                    """), path: path)
                defer { done.reset() }
                try done.bind(1, finishedSince)
                try done.bind(2, keepFinished)
                var recent: [StoredTask] = []
                while try done.step() { recent.append(codec.decode(done)) }
                for t in recent.reversed() { visitor.task(t) }
            }
        } catch {
            throw JournalError.from(error, path: path, doing: "recovering")
        }
    }

    public func lookup(_ id: TaskID) throws -> StoredTask? {
        try fetchOne("SELECT \(JournalSchema.columns) FROM tasks WHERE id = ?1", doing: "reading task \(id)") {
            try $0.bind(1, Int64(bitPattern: id.raw))
        }
    }

    public func lookup(idempotencyKey: String, owner: String?) throws -> StoredTask? {
        try fetchOne("""
            SELECT \(JournalSchema.columns) FROM tasks INDEXED BY tasks_key
            WHERE idempotency_key = ?1 AND owner IS ?2 ORDER BY id DESC LIMIT 1
            """, doing: "looking up an idempotency key") {
            try $0.bind(1, text: idempotencyKey)
            try $0.bind(2, text: owner)
        }
    }

    public func deadLetters(limit: Int) throws -> [StoredTask] {
        let path = self.path
        var codec = self.codec
        defer { self.codec = codec }
        do {
            return try db.inDatabase { db in
                let s = RawStatement(try db.cachedStatement(sql: """
                    SELECT \(JournalSchema.columns) FROM tasks INDEXED BY tasks_dead WHERE dead = 1 ORDER BY finished_at, id LIMIT ?1
                    """), path: path)
                defer { s.reset() }
                try s.bind(1, max(0, limit))
                var out: [StoredTask] = []
                while try s.step() { out.append(codec.decode(s)) }
                return out
            }
        } catch {
            throw JournalError.from(error, path: path, doing: "listing dead letters")
        }
    }

    private func fetchOne(_ sql: String, doing: String, bind: (RawStatement) throws -> Void) throws -> StoredTask? {
        let path = self.path
        var codec = self.codec
        defer { self.codec = codec }
        do {
            return try db.inDatabase { db in
                let s = RawStatement(try db.cachedStatement(sql: sql), path: path)
                defer { s.reset() }
                try bind(s)
                guard try s.step() else { return nil }
                return codec.decode(s)
            }
        } catch {
            throw JournalError.from(error, path: path, doing: doing)
        }
    }

    public func compact(olderThan cutoff: Timestamp) throws {
        let path = self.path
        do {
            try db.inDatabase { db in
                try db.execute(sql: "DELETE FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?", arguments: [cutoff])
                // Free pages back to the file system, then fold the WAL into the
                // file and truncate it: disk follows the live data, not the history.
                try db.execute(sql: "PRAGMA incremental_vacuum")
                try SQLiteJournal.checkpointUnlessBusy(db)
            }
        } catch {
            throw JournalError.from(error, path: path, doing: "compacting")
        }
    }

    public func close() throws {
        _ = try closeCheckpointed()
    }

    /// Makes the last commit durable whatever the mode, folds the WAL into the
    /// main file and truncates it (so that file alone holds every task: what
    /// an operator copies is complete), then releases the file and the data
    /// directory; the journal cannot be used afterwards.
    ///
    /// - Returns: false when the WAL could not be folded in (a reader such as
    ///   `journal backup` held it for seconds, or the checkpoint failed): the
    ///   journal is intact, but needs its `-wal` file.
    @discardableResult
    public func closeCheckpointed() throws -> Bool {
        // A second close is a no-op: GRDB traps on a closed connection.
        guard !isClosed else { return false }
        isClosed = true
        syncer?.syncIfNeeded()
        var selfContained = false
        // A running `journal backup` holds a snapshot: wait for it a little.
        for attempt in 0..<50 {
            do {
                selfContained = try db.inDatabase { try SQLiteJournal.checkpointUnlessBusy($0) }
            } catch {
                break // storage trouble: the WAL keeps what the main file lacks
            }
            if selfContained || attempt == 49 { break }
            usleep(100_000)
        }
        do { try db.close() } catch { throw JournalError.from(error, path: path, doing: "closing") }
        lock.release()
        return selfContained
    }

    /// Writes a consistent copy of this journal (SQLite's backup API, one read
    /// transaction) to `file`; see `JournalBackup`.
    public func backup(to file: String) throws {
        try JournalBackup.copy(from: db, sourcePath: path, to: file)
    }

    // MARK: Inspection (tests, diagnostics)

    /// One statement on the journal's own connection, for tests only (e.g.
    /// `PRAGMA max_page_count`, which makes commits fail with SQLITE_FULL).
    func executeForTesting(_ sql: String) throws {
        try db.inDatabase { try $0.execute(sql: sql) }
    }

    /// Bytes on disk: the file and its WAL.
    public var diskBytes: Int {
        let fm = FileManager.default
        return [path, path + "-wal"].reduce(0) { sum, p in
            sum + ((try? fm.attributesOfItem(atPath: p)[.size] as? Int) ?? 0)
        }
    }

    /// Rows in the journal, by state (tests, diagnostics).
    public func countByState() throws -> [String: Int] {
        try db.inDatabase { db in
            var out: [String: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT state, count(*) FROM tasks GROUP BY state") {
                let state: String = row[0]
                let n: Int = row[1]
                out[state] = n
            }
            return out
        }
    }
}
