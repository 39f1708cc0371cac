import ArgumentParser
import ConveyorCore
import ConveyorJournal
import ConveyorJournalPostgres
import Foundation
import Logging

/// Which journal backend `--journal` (or `CONVEYOR_JOURNAL`) names:
/// `sqlite:PATH` or `postgres://USER@HOST:PORT/DB`. The one place that
/// knows every backend; the broker sees a `Journal` only.
enum JournalLocation {
    case sqlite(directory: String, fileName: String)
    case postgres(PostgresURL)

    /// nil when not given (the SQLite file in `--data-dir`, as always).
    init?(_ text: String?) throws {
        guard let text, !text.isEmpty else { return nil }
        if text.hasPrefix("sqlite:") {
            let path = String(text.dropFirst("sqlite:".count))
            guard !path.isEmpty, !path.hasSuffix("/") else {
                throw ValidationError("--journal sqlite:PATH needs a file path, e.g. sqlite:./data/conveyor.db")
            }
            let url = URL(fileURLWithPath: path)
            self = .sqlite(directory: url.deletingLastPathComponent().path, fileName: url.lastPathComponent)
        } else if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            do { self = .postgres(try PostgresURL(parsing: text)) } catch { throw ValidationError("--journal: \(error)") }
        } else {
            throw ValidationError("--journal must be sqlite:PATH or postgres://USER@HOST:PORT/DB, got '\(text)'")
        }
    }

    /// Opens the journal; nil for durability `none`.
    func open(_ config: JournalConfig, logger: Logger) throws -> Journal? {
        switch self {
        case .sqlite:
            return try SQLiteJournal.open(config).map { Journal($0) }
        case .postgres(let url):
            guard config.durability != .none else {
                logger.warning("--durability none: the PostgreSQL journal is not used, nothing survives a restart")
                return nil
            }
            let pg = try PostgresJournal(url: url, durability: config.durability == .batch ? .batch : .fsync,
                                         password: url.password(), logger: logger)
            return Journal(pg)
        }
    }
}
