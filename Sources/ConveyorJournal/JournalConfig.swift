/// Where and how durably the broker journals tasks.
public struct JournalConfig: Sendable {
    public enum Durability: String, Sendable, CaseIterable {
        /// Acknowledge a task only once its batch is fsynced.
        case fsync
        /// Acknowledge once written; fsync on a short interval.
        case batch
        /// Memory only: nothing survives a restart.
        case none
    }

    public var dataDirectory = "./data"
    public var durability: Durability = .fsync

    public init() {}
}
