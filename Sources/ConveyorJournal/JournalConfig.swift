/// Where and how durably the broker journals tasks.
///
/// A value type the CLI fills from flags: the journal itself never reads the
/// environment, so tests can point it anywhere.
public struct JournalConfig: Sendable {
    public enum Durability: String, Sendable, CaseIterable {
        /// Acknowledge a task only once its batch is fsynced.
        case fsync
        /// Acknowledge once written; fsync on a short interval (`syncIntervalMs`).
        case batch
        /// Memory only: nothing survives a restart.
        case none
    }

    public var dataDirectory = "./data"
    /// The journal file's name inside `dataDirectory` (`--journal sqlite:DIR/NAME` names another).
    public var fileName = SQLiteJournal.fileName
    public var durability: Durability = .fsync
    /// In `batch` mode, the longest time a written batch may wait for its fsync:
    /// what a machine crash (not a broker crash) can lose.
    public var syncIntervalMs = 100
    /// Start even when the journal is behind its high-water mark (it lost
    /// acknowledged tasks), and reset the mark (`--accept-journal-loss`).
    public var acceptJournalLoss = false

    public init() {}

    /// The journal file inside `dataDirectory`.
    public var journalPath: String {
        let dir = dataDirectory.hasSuffix("/") ? String(dataDirectory.dropLast()) : dataDirectory
        return (dir.isEmpty ? "." : dir) + "/" + fileName
    }

    /// The high-water mark next to the journal file (`HighWaterMark`).
    public var markPath: String { journalPath + HighWaterMark.fileSuffix }
}
