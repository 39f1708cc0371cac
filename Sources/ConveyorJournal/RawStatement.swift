import GRDB
import GRDBSQLite

/// Direct binding, stepping and column reads on a statement GRDB prepared
/// and owns (it finalizes it with the connection).
///
/// Why not GRDB's `StatementArguments` and `Row`: the journal's two hot paths
/// are a commit of thousands of rows and the recovery of a million, and an
/// argument array or a `Row` per row costs more than SQLite itself there.
/// Everything else (opening, pragmas, transactions, errors) goes through GRDB.
struct RawStatement {
    /// Held so that GRDB does not finalize the statement while we use it.
    private let statement: Statement
    let handle: SQLiteStatement
    /// For error messages.
    let path: String

    init(_ statement: Statement, path: String) {
        self.statement = statement
        handle = statement.sqliteStatement
        self.path = path
    }

    /// SQLite copies the bytes before the bind call returns.
    private static var transient: sqlite3_destructor_type { unsafeBitCast(-1, to: sqlite3_destructor_type.self) }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    // MARK: Binding (1-based, as in SQL `?NNN`)

    func bind(_ i: Int32, _ v: Int64) throws { try check(sqlite3_bind_int64(handle, i, v)) }
    func bind(_ i: Int32, _ v: Int) throws { try bind(i, Int64(v)) }
    func bind(_ i: Int32, _ v: Bool) throws { try bind(i, Int64(v ? 1 : 0)) }

    func bind(_ i: Int32, _ v: Int64?) throws {
        if let v { try bind(i, v) } else { try check(sqlite3_bind_null(handle, i)) }
    }

    func bind(_ i: Int32, text: String?) throws {
        guard var s = text else { return try check(sqlite3_bind_null(handle, i)) }
        let rc = s.withUTF8 { buf -> Int32 in
            // A non-nil pointer even for "": SQLite binds NULL for a nil pointer.
            guard let base = buf.baseAddress else { return sqlite3_bind_text(handle, i, "", 0, RawStatement.transient) }
            return base.withMemoryRebound(to: CChar.self, capacity: buf.count) {
                sqlite3_bind_text(handle, i, $0, Int32(buf.count), RawStatement.transient)
            }
        }
        try check(rc)
    }

    /// nil binds NULL; an empty array binds an empty (non-NULL) blob.
    func bind(_ i: Int32, blob: [UInt8]?) throws {
        guard let b = blob else { return try check(sqlite3_bind_null(handle, i)) }
        if b.isEmpty { return try check(sqlite3_bind_zeroblob(handle, i, 0)) }
        let rc = b.withUnsafeBytes { sqlite3_bind_blob(handle, i, $0.baseAddress, Int32($0.count), RawStatement.transient) }
        try check(rc)
    }

    // MARK: Stepping

    /// true: a row is available; false: done.
    func step() throws -> Bool {
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let rc: throw error(rc)
        }
    }

    /// Runs a statement that returns no rows, then resets it.
    func run() throws {
        defer { reset() }
        while try step() {}
    }

    var changes: Int { Int(sqlite3_changes(sqlite3_db_handle(handle))) }

    // MARK: Columns (0-based)

    func isNull(_ c: Int32) -> Bool { sqlite3_column_type(handle, c) == SQLITE_NULL }
    func int64(_ c: Int32) -> Int64 { sqlite3_column_int64(handle, c) }
    func int64OrNil(_ c: Int32) -> Int64? { isNull(c) ? nil : int64(c) }

    /// The column's bytes without copying, valid until the next step or reset.
    func bytes(_ c: Int32) -> UnsafeRawBufferPointer {
        // sqlite3_column_blob before sqlite3_column_bytes, as SQLite documents.
        guard let p = sqlite3_column_blob(handle, c) else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: p, count: Int(sqlite3_column_bytes(handle, c)))
    }

    func blob(_ c: Int32) -> [UInt8] {
        let b = bytes(c)
        return b.isEmpty ? [] : [UInt8](b)
    }

    func blobOrNil(_ c: Int32) -> [UInt8]? { isNull(c) ? nil : blob(c) }

    func text(_ c: Int32) -> String { String(decoding: bytes(c), as: UTF8.self) }
    func textOrNil(_ c: Int32) -> String? { isNull(c) ? nil : text(c) }

    // MARK: Errors

    private func check(_ rc: Int32) throws {
        if rc != SQLITE_OK { throw error(rc) }
    }

    private func error(_ rc: Int32) -> JournalError {
        let message = String(cString: sqlite3_errmsg(sqlite3_db_handle(handle)))
        let kind: JournalError.Kind
        switch rc & 0xff {
        case SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_FORMAT: kind = .corrupt
        case SQLITE_BUSY, SQLITE_LOCKED: kind = .locked
        default: kind = .unwritable
        }
        return JournalError(kind, path: path, detail: "\(message) (SQLite code \(rc))")
    }
}
