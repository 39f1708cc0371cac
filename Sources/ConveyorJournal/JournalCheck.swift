import ConveyorCore
import Foundation
import GRDB

/// `conveyor journal check FILE`: is this journal (a backup, or the live
/// file) one a broker would start from, and what does it hold?
///
/// Why more than `PRAGMA integrity_check`: SQLite can be perfectly happy with
/// a file that is not a Conveyor journal, is from a newer Conveyor, lacks
/// part of the schema, holds rows a broker would refuse (every row is decoded
/// as recovery decodes it), or is behind its high-water mark (when FILE has
/// one next to it). Every one of those is a `problem`; none is fatal to the
/// check itself, so the report always says as much as it can.
public struct JournalCheck: Sendable {
    public let path: String
    public private(set) var problems: [String] = []
    public private(set) var schemaVersion: Int32 = 0
    /// Rows by state (`queued`, `succeeded`, …).
    public private(set) var counts: [String: Int] = [:]
    public private(set) var deadLetters = 0
    public private(set) var position = HighWaterMark.Position(isEmpty: true, generation: 0, lastID: 0)
    public private(set) var paused: [String] = []
    /// The file and its `-wal`, in bytes.
    public private(set) var bytes = 0
    /// The mark next to FILE, if there is one.
    public private(set) var mark: HighWaterMark?

    public var isHealthy: Bool { problems.isEmpty }
    public var tasks: Int { counts.values.reduce(0, +) }

    /// Read-only, and waiting briefly for a busy writer rather than failing.
    static func readerConfiguration() -> Configuration {
        var c = Configuration()
        c.readonly = true
        c.busyMode = .timeout(5)
        c.label = "conveyor.journal.reader"
        return c
    }

    public static func run(path: String) -> JournalCheck {
        var r = JournalCheck(path: path)
        r.inspect()
        return r
    }

    private init(path: String) { self.path = path }

    private mutating func inspect() {
        let fm = FileManager.default
        guard fm.fileExists(atPath: path) else { return problems.append("no such file") }
        bytes = [path, path + "-wal"].reduce(0) { $0 + ((try? fm.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
        let db: DatabaseQueue
        do {
            db = try DatabaseQueue(path: path, configuration: Self.readerConfiguration())
        } catch {
            return problems.append("cannot open: \(JournalError.from(error, path: path, doing: "opening").detail)")
        }
        defer { try? db.close() }
        do {
            try db.read { db in try inspect(db) }
        } catch {
            problems.append(JournalError.from(error, path: path, doing: "reading").detail)
        }
        checkMark()
    }

    private mutating func inspect(_ db: Database) throws {
        let tables = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master") ?? 0
        guard tables > 0 else { return problems.append("it holds no journal (an empty file)") }
        let appID = try Int32.fetchOne(db, sql: "PRAGMA application_id") ?? 0
        guard appID == JournalSchema.applicationID else {
            return problems.append("it is an SQLite database but not a Conveyor journal (application_id \(appID))")
        }
        schemaVersion = try Int32.fetchOne(db, sql: "PRAGMA user_version") ?? 0
        if schemaVersion > JournalSchema.version {
            problems.append("it was written by a newer Conveyor (journal version \(schemaVersion), this one reads \(JournalSchema.version))")
        }
        let integrity = try String.fetchAll(db, sql: "PRAGMA integrity_check(20)")
        if integrity != ["ok"] {
            problems.append(contentsOf: integrity.map { "integrity_check: \($0)" })
        }
        let names = try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")
        let missing = ["tasks", "meta", "tasks_open", "tasks_finished"].filter { !names.contains($0) }
        guard missing.isEmpty else { return problems.append("its schema lacks \(missing.joined(separator: ", "))") }

        position = try SQLiteJournal.position(db)
        for row in try Row.fetchAll(db, sql: "SELECT state, count(*) FROM tasks GROUP BY state") {
            let state: String = row[0], n: Int = row[1]
            counts[state] = n
        }
        deadLetters = try Int.fetchOne(db, sql: "SELECT count(*) FROM tasks WHERE dead != 0") ?? 0
        paused = try String.fetchAll(db, sql: JournalSchema.listPaused).map { String($0.dropFirst(JournalSchema.pausedPrefix.count)) }

        // Every row as a restarted broker would read it.
        var codec = TaskRowCodec()
        var repairs: [String] = []
        let s = RawStatement(try db.makeStatement(sql: "SELECT \(JournalSchema.columns) FROM tasks ORDER BY id"), path: path)
        defer { s.reset() }
        var bad = 0
        while try s.step() {
            do { _ = try codec.decode(s).record(defaultTimeoutMs: 3_600_000, now: 0, repairs: &repairs) } catch {
                bad += 1
                if bad <= 5 { problems.append(error.description) }
            }
            repairs.removeAll(keepingCapacity: true)
        }
        if bad > 5 { problems.append("\(bad - 5) more rows a broker would refuse") }
    }

    private mutating func checkMark() {
        let file = HighWaterMarkFile(path: path + HighWaterMark.fileSuffix, sync: false)
        do {
            mark = try file.read()
        } catch let e as JournalError {
            return problems.append("\(e.path): \(e.detail)")
        } catch {
            return problems.append("\(file.path): \(error)")
        }
        if let mark, let short = mark.shortfall(of: position) {
            problems.append("behind its high-water mark: " + mark.explain(short, markPath: file.path))
        }
    }

    /// The report `conveyor journal check` prints.
    public var summary: String {
        var lines = ["journal \(path): \(isHealthy ? "ok" : "DAMAGED")"]
        if tasks > 0 || !position.isEmpty {
            let order = ["queued", "running", "delayed", "succeeded", "failed", "timed_out", "cancelled"]
            let states = (order + counts.keys.filter { !order.contains($0) }.sorted())
                .compactMap { s in counts[s].map { "\(s) \($0)" } }
            lines.append("  tasks: \(tasks)\(states.isEmpty ? "" : " (" + states.joined(separator: ", ") + ")"), dead letters \(deadLetters)")
            lines.append("  last task id: \(position.lastID == 0 ? "none" : TaskID(raw: position.lastID).description), generation \(position.generation)")
            lines.append("  schema version: \(schemaVersion); paused types: \(paused.isEmpty ? "none" : paused.joined(separator: ","))")
        }
        lines.append("  size: \(bytes) bytes")
        if let mark { lines.append("  high-water mark: \(mark)") }
        for p in problems { lines.append("  problem: \(p)") }
        return lines.joined(separator: "\n")
    }
}
