import ArgumentParser
import ConveyorCore
import ConveyorJournal
import Foundation

/// `conveyor journal backup|check`: the operator's tools for the journal file.
///
/// Why a command of its own and not "copy data/": copying the SQLite file
/// misses what is in `-wal` (and tears while the broker writes); `backup`
/// takes a consistent online copy through SQLite's backup API, and `check`
/// says whether a copy is one a broker would start from, before it is needed.
struct JournalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal", abstract: "Back up and verify the broker's SQLite journal.",
        subcommands: [Backup.self, Check.self]
    )

    struct Backup: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "backup",
            abstract: "Write a consistent copy of the journal to FILE, while the broker runs (or not).",
            discussion: "Reads DATA_DIR/\(SQLiteJournal.fileName) (its -wal included) in one read transaction; FILE is one self-contained SQLite file, written under a temporary name and renamed into place, then checked. Exit status 1 if it cannot be made."
        )
        @Argument(help: "Where to write the copy (replaced if it exists).") var file: String
        @Option(help: "The broker's journal directory (env CONVEYOR_DATA_DIR, default ./data).") var dataDir: String?

        func run() throws {
            var config = JournalConfig()
            config.dataDirectory = dataDir ?? env("CONVEYOR_DATA_DIR") ?? "./data"
            let started = Date()
            do {
                try JournalBackup.copy(journalAt: config.journalPath, to: file)
            } catch {
                writeErr("conveyor: journal backup failed: \(error)")
                throw ExitCode(1)
            }
            let report = JournalCheck.run(path: file)
            emit("backup of \(config.journalPath) written to \(file) in \(Int(Date().timeIntervalSince(started) * 1000)) ms")
            emit(report.summary)
            if !report.isHealthy { throw ExitCode(1) }
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Verify a journal file: integrity, schema version, every row, counts; exit status 1 on damage.",
            discussion: "FILE is a backup or the live DATA_DIR/\(SQLiteJournal.fileName) (read-only; a running broker is not disturbed). When FILE\(HighWaterMark.fileSuffix) exists next to it, a journal behind that high-water mark counts as damage too."
        )
        @Argument(help: "The journal file to verify.") var file: String
        @Flag(help: "One JSON object instead of the text report.") var json = false

        func run() throws {
            let r = JournalCheck.run(path: file)
            if json {
                var counts: [String: Int] = [:]
                for (k, v) in r.counts { counts[k] = v }
                let object: [String: Any] = [
                    "file": r.path, "ok": r.isHealthy, "problems": r.problems, "tasks": r.tasks, "by_state": counts,
                    "dead_letters": r.deadLetters, "schema_version": Int(r.schemaVersion), "generation": r.position.generation,
                    "last_task_id": r.position.lastID == 0 ? NSNull() : TaskID(raw: r.position.lastID).description as Any,
                    "paused_types": r.paused, "bytes": r.bytes,
                    "high_water_mark": r.mark.map { ["generation": $0.generation, "last_task_id": TaskID(raw: $0.lastID).description] as [String: Any] } ?? NSNull(),
                ]
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                emit(String(decoding: data, as: UTF8.self))
            } else {
                emit(r.summary)
            }
            if !r.isHealthy { throw ExitCode(1) }
        }
    }
}
