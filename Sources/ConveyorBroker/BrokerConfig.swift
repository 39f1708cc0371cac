import ConveyorCore

/// Everything the broker process is told at start. The CLI fills it from
/// flags and environment variables.
public struct BrokerConfig: Sendable {
    public var clientsEndpoint = "tcp://127.0.0.1:5555"
    public var workersEndpoint = "tcp://127.0.0.1:5556"
    public var eventsEndpoint = "tcp://127.0.0.1:5557"
    public var scheduler = SchedulerConfig()
    /// How often the `stats` event is published.
    public var statsIntervalMs: Int64 = 1000
    public var journal: JournalConfig = .init()

    public init() {}
}

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
