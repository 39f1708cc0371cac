import ConveyorCore

/// How far a journal once got: the largest task id it ever committed and its
/// generation (bumped at every start), kept in a small file *next to* the
/// SQLite file (`conveyor-journal.sqlite.hwm`).
///
/// Why outside the database: a journal that lost its tail — truncated to 0
/// bytes, its `-wal` deleted or cut after a `kill -9`, an older backup put
/// back — is still a valid SQLite file, and SQLite opens it without a word
/// while acknowledged tasks are gone. Only a record kept elsewhere can say
/// that the journal once held more.
///
/// Why it never refuses a legitimate restart: the mark is written only
/// *after* the commit it describes is durable (journal first, then mark; in
/// `batch` mode after the WAL's fsync), so after a clean stop, a `kill -9`
/// or a power cut the mark is never ahead of a journal that lost nothing.
/// It is rewritten only when the largest id grows (once per commit at most),
/// which keeps it cheap.
public struct HighWaterMark: Equatable, Sendable, CustomStringConvertible {
    /// The mark's file is the journal's path plus this.
    public static let fileSuffix = ".hwm"
    static let header = "conveyor journal high-water mark v1"

    /// Broker starts on this journal; an older copy has a smaller one.
    public var generation: Int64
    /// The largest task id committed (0: none yet).
    public var lastID: UInt64

    public init(generation: Int64, lastID: UInt64) {
        self.generation = generation
        self.lastID = lastID
    }

    public var description: String {
        "generation \(generation), last task id \(lastID == 0 ? "none" : TaskID(raw: lastID).description)"
    }

    /// The file's text: a header line, then `key value` lines an operator can read.
    var text: String {
        "\(Self.header)\ngeneration \(generation)\nlast_id \(TaskID(raw: lastID))\n"
    }

    /// Parses `text`; nil when it is not a mark this version wrote.
    init?(text: String) {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        guard lines.first == Substring(Self.header) else { return nil }
        var generation: Int64?
        var lastID: UInt64?
        for line in lines.dropFirst() {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { return nil }
            switch parts[0] {
            case "generation":
                guard generation == nil, let g = Int64(parts[1]), g >= 0 else { return nil }
                generation = g
            case "last_id":
                guard lastID == nil, let id = TaskID(parts[1]) else { return nil }
                lastID = id.raw
            default:
                return nil
            }
        }
        guard let generation, let lastID else { return nil }
        self.init(generation: generation, lastID: lastID)
    }

    /// What a journal holds, as far as the mark is concerned.
    public struct Position: Equatable, Sendable {
        /// No Conveyor tables at all (a new, emptied or truncated file).
        public var isEmpty: Bool
        public var generation: Int64
        public var lastID: UInt64
        public init(isEmpty: Bool, generation: Int64, lastID: UInt64) {
            self.isEmpty = isEmpty
            self.generation = generation
            self.lastID = lastID
        }
    }

    /// Why a journal is behind its mark; nil when it is not.
    public enum Shortfall: Equatable, Sendable {
        /// The file holds no journal at all, but the mark says one existed.
        case emptied
        /// Tasks after `journalLastID`, up to the mark's, are missing.
        case missingTasks(journalLastID: UInt64)
        /// An older copy: its generation is below the mark's (state changes since are missing).
        case olderGeneration(journalGeneration: Int64)
    }

    /// Compares a journal with this mark. A journal ahead of the mark is fine:
    /// the broker stopped between a commit and the mark's update.
    public func shortfall(of journal: Position) -> Shortfall? {
        if journal.isEmpty { return generation > 0 || lastID > 0 ? .emptied : nil }
        if journal.lastID < lastID { return .missingTasks(journalLastID: journal.lastID) }
        if journal.generation < generation { return .olderGeneration(journalGeneration: journal.generation) }
        return nil
    }

    /// The operator's message: what is missing and how to go on.
    public func explain(_ s: Shortfall, markPath: String) -> String {
        let what: String
        switch s {
        case .emptied:
            what = "it is empty, but its high-water mark \(markPath) says it held tasks up to \(TaskID(raw: lastID)) (generation \(generation)): "
                + "the file was truncated, replaced or deleted"
        case .missingTasks(let have):
            let from = have == 0 ? "every acknowledged task is missing" : "it ends at task \(TaskID(raw: have))"
            what = "\(from), but its high-water mark \(markPath) says tasks up to \(TaskID(raw: lastID)) were acknowledged (generation \(generation)): "
                + "the tasks after \(have == 0 ? "none" : TaskID(raw: have).description) are missing "
                + "(its -wal file was deleted or truncated, or an older copy was restored)"
        case .olderGeneration(let g):
            what = "it is from generation \(g), but its high-water mark \(markPath) says generation \(generation): "
                + "it is an older copy (a restored backup, or its -wal file was lost) and the changes since are missing"
        }
        return what + ". Put back the complete journal (with its -wal file, if it had one; `conveyor journal check FILE` verifies a backup), "
            + "or start once with --accept-journal-loss (CONVEYOR_ACCEPT_JOURNAL_LOSS=1) to run with what it holds and reset the mark"
    }
}
