/// A store of task rows that the broker's `Journal` writes through: SQLite
/// on the broker's disk, or PostgreSQL shared by an active and a standby broker.
///
/// Why so small: everything a store need not know — which events become
/// rows, group commit, recovery, retention — lives once in `Journal` and
/// `JournalBatch`, so a new backend is five operations and nothing else can
/// drift between them.
///
/// Threading: one caller at a time (the broker's loop thread).
public protocol JournalBackend: AnyObject {
    /// Where the journal is, for logs and messages (`sqlite:/var/lib/…`, `postgres://…`; never a password).
    var location: String { get }
    /// Writes a batch in one transaction: all of it, or — throwing — none of it.
    /// An upsert that is not `isNew` may leave the stored payload as it is
    /// (`StoredTask.clearsPayload` says when to clear it). Throws
    /// `JournalFenced` when another broker has taken over the journal.
    func apply(_ batch: JournalBatch) throws
    /// Reads what recovery needs into `visitor`, in the order its methods list.
    /// - Parameters:
    ///   - finishedSince: the oldest `finished_at` of the finished rows to load.
    ///   - keepFinished: at most this many finished rows, the most recent ones.
    func load<V: JournalLoadVisitor>(finishedSince: Timestamp, keepFinished: Int, into visitor: inout V) throws
    /// One task by id, finished or not.
    func lookup(_ id: TaskID) throws -> StoredTask?
    /// The most recent task submitted with this idempotency key by this owner.
    func lookup(idempotencyKey: String, owner: String?) throws -> StoredTask?
    /// Dead-lettered tasks, oldest first.
    func deadLetters(limit: Int) throws -> [StoredTask]
    /// Deletes finished rows older than `cutoff` and gives the space back.
    func compact(olderThan cutoff: Timestamp) throws
    /// The largest task id ever written (kept when its row is deleted); nil for an empty journal.
    func lastID() throws -> TaskID?
    /// Makes everything durable and releases the store; the backend cannot be used afterwards.
    func close() throws
}

/// What a backend's `load` hands over, in this order: pauses and holds, the
/// number of unfinished rows, the unfinished rows in id order (FIFO within
/// each level, as `Scheduler.restore` requires), then the finished rows
/// oldest first.
public protocol JournalLoadVisitor {
    mutating func paused(_ type: String)
    mutating func held(_ type: String, until: Timestamp)
    mutating func expect(unfinished: Int)
    mutating func task(_ row: StoredTask)
}

/// A write refused because another broker holds the journal's lease: this
/// broker has been deposed and must stop serving at once.
public struct JournalFenced: Error, CustomStringConvertible, Sendable {
    /// The epoch this broker held, and the one the journal has now.
    public let mine: Int64
    public let current: Int64
    public init(mine: Int64, current: Int64) {
        self.mine = mine
        self.current = current
    }
    public var description: String {
        "deposed: another broker holds the journal's lease (epoch \(current); this broker held \(mine))"
    }
}
