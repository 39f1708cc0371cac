import GRDB

/// Why the journal cannot be used. Every message names the file (or the
/// directory) so that the broker's one-line exit message tells an operator
/// exactly what to look at: a broker must never start empty silently.
public struct JournalError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        /// The data directory is missing and cannot be created, or is not a directory.
        case cannotCreateDirectory = "cannot_create_directory"
        /// The file cannot be opened or written (permissions, read-only media, disk full, I/O error).
        case unwritable
        /// The file is damaged or not an SQLite database at all.
        case corrupt
        /// A valid SQLite database, but not a Conveyor journal (or from a newer Conveyor).
        case incompatible
        /// Another process (another broker) holds the journal.
        case locked
        /// The journal holds less than its high-water mark says was acknowledged:
        /// truncated, its `-wal` lost, or an older copy put back (`HighWaterMark`).
        case behindMark = "behind_mark"
    }

    public let kind: Kind
    /// The journal file or data directory concerned.
    public let path: String
    public let detail: String

    public init(_ kind: Kind, path: String, detail: String) {
        self.kind = kind
        self.path = path
        self.detail = detail
    }

    public var description: String {
        switch kind {
        case .cannotCreateDirectory:
            "cannot create the journal directory \(path): \(detail)"
        case .unwritable:
            "journal \(path) cannot be opened for writing: \(detail)"
        case .corrupt:
            "journal \(path) is corrupt: \(detail); restore a backup (conveyor journal check FILE verifies one), or move it aside (with its -wal file) and start with --accept-journal-loss to start empty"
        case .incompatible:
            "journal \(path) is not usable: \(detail)"
        case .locked:
            "journal \(path) is locked by another process (is another broker using this data directory?): \(detail)"
        case .behindMark:
            "journal \(path) went backwards: \(detail)"
        }
    }

    /// Classifies an SQLite failure on `path` while `doing` something.
    static func from(_ error: any Error, path: String, doing: String) -> JournalError {
        if let e = error as? JournalError { return e }
        guard let db = error as? DatabaseError else {
            return JournalError(.unwritable, path: path, detail: "\(doing): \(error)")
        }
        let text = "\(doing): \(db.message ?? "SQLite error \(db.extendedResultCode.rawValue)")"
        switch db.resultCode {
        case .SQLITE_CORRUPT, .SQLITE_NOTADB, .SQLITE_FORMAT: return JournalError(.corrupt, path: path, detail: text)
        case .SQLITE_BUSY, .SQLITE_LOCKED: return JournalError(.locked, path: path, detail: text)
        default: return JournalError(.unwritable, path: path, detail: text)
        }
    }
}
