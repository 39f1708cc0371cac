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
    /// RETURNs a task may make before it fails `returned_too_often` (`--max-returns`).
    public var maxReturns: Int = 100
    /// The most a worker's READY gets as capacity (`--max-worker-capacity`).
    public var maxWorkerCapacity: Int = 64
    /// Task types that may have queued tasks at once; a SUBMIT of one more is
    /// rejected `too_many_types` (`--max-types`).
    public var maxTypes: Int = 10_000
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

    var workerExpiryUs: Int64 { heartbeatIntervalMs.multiplied(saturating: heartbeatLiveness).multiplied(saturating: 1000) }
}
