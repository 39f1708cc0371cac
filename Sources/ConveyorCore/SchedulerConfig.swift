/// The broker's policy knobs. Names follow the environment variables web apps
/// already set (`MAX_CONCURRENT_ANALYSIS_TASKS`, …); defaults match them.
public struct SchedulerConfig: Sendable, Equatable {
    /// Tasks running across the whole pool (reported as `max_workers`).
    public var maxRunning: Int = 3
    /// Queued (due) tasks; beyond it submissions are rejected `queue_full`.
    public var maxQueue: Int = 100
    public var defaultTimeoutMs: UInt32 = 3_600_000
    public var heartbeatIntervalMs: Int64 = 1000
    public var heartbeatLiveness: Int64 = 3
    /// Dispatches a task may lose with a dying worker before it fails `worker_lost`.
    public var maxDeliveries: UInt16 = 3
    /// nil: any type is accepted.
    public var allowedTypes: Set<String>? = nil
    public var maxPayloadBytes: Int = SchedulerConfig.defaultMaxPayloadBytes
    /// The default max payload size (spec §11): 10 MiB.
    public static let defaultMaxPayloadBytes = 10 * 1024 * 1024
    /// How long finished tasks keep their result (CONVEYOR_RESULT_TTL).
    public var resultTTLSeconds: Int64 = 86_400
    /// Finished tasks kept in memory for STATUS; older ones are only in the journal.
    public var maxFinishedInMemory: Int = 100_000
    /// Per-type limits and aging; empty = strict priority, no limits.
    public var policy = PolicyConfig()

    public init() {}

    var workerExpiryUs: Int64 { heartbeatIntervalMs * heartbeatLiveness * 1000 }
}
