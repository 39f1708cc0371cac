import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `conveyor journal backup FILE`: a consistent copy of a journal, taken
/// while its broker runs.
///
/// Why SQLite's backup API and not `cp`: copying the main file alone misses
/// what is still in `-wal`, and copying both while the broker writes can
/// tear. `sqlite3_backup_step(-1)` copies every page under one read
/// transaction: a snapshot of one commit, never blocking the broker (WAL
/// readers do not block the writer). The copy is switched out of WAL mode,
/// written to a temporary name, fsynced and renamed into place, so FILE is
/// one self-contained file and never half a backup.
public enum JournalBackup {
    /// Copies the journal at `source` (a running broker's, or a stopped one's) to `file`.
    public static func copy(journalAt source: String, to file: String) throws {
        guard FileManager.default.fileExists(atPath: source) else {
            throw JournalError(.unwritable, path: source, detail: "no such file (is --data-dir right?)")
        }
        let src: DatabaseQueue
        do {
            src = try DatabaseQueue(path: source, configuration: JournalCheck.readerConfiguration())
        } catch {
            throw JournalError.from(error, path: source, doing: "opening for backup")
        }
        defer { try? src.close() }
        let appID = try? src.read { try Int32.fetchOne($0, sql: "PRAGMA application_id") }
        guard appID == JournalSchema.applicationID else {
            throw JournalError(.incompatible, path: source, detail: "it is not a Conveyor journal")
        }
        try copy(from: src, sourcePath: source, to: file)
    }

    static func copy(from src: DatabaseQueue, sourcePath: String, to file: String) throws {
        let tmp = "\(file).tmp-\(getpid())"
        unlink(tmp)
        do {
            let dest = try DatabaseQueue(path: tmp)
            do {
                try src.backup(to: dest)
                try dest.writeWithoutTransaction { db in
                    // One file: no -wal for whoever copies the backup on.
                    _ = try String.fetchOne(db, sql: "PRAGMA journal_mode = DELETE")
                }
                try dest.close()
            } catch {
                try? dest.close()
                throw error
            }
            try syncFile(tmp)
            guard rename(tmp, file) == 0 else {
                throw JournalError(.unwritable, path: file, detail: "renaming \(tmp): \(String(cString: strerror(errno)))")
            }
            let dir = (file as NSString).deletingLastPathComponent
            try? syncFile(dir.isEmpty ? "." : dir)
        } catch {
            unlink(tmp)
            if let e = error as? JournalError { throw e }
            throw JournalError.from(error, path: file, doing: "backing up \(sourcePath)")
        }
    }

    private static func syncFile(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw JournalError(.unwritable, path: path, detail: "opening: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw JournalError(.unwritable, path: path, detail: "fsync: \(String(cString: strerror(errno)))") }
    }
}
