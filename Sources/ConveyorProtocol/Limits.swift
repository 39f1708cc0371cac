import ConveyorCore

/// The limits of spec §11 and the defaults of §5.2/§9.4, in one place for every
/// module that talks to another process: the codecs enforce them, the broker
/// and the gateway configure from them, the CLI validates with them.
/// (Values the pure core needs itself — payload size, retry defaults — live in
/// ConveyorCore, which cannot import this module; they are named here too.)
public enum Limits {
    public static let requestIDBytes = 64
    public static let taskTypeBytes = 64
    public static let workerNameBytes = 128
    public static let idempotencyKeyBytes = 128
    public static let ownerBytes = 128
    public static let maxTimeoutMs: UInt64 = 604_800_000
    public static let maxDelayMs: UInt64 = 31_536_000_000
    public static let maxAttempts: UInt64 = 100
    public static let maxCapacity: UInt64 = 1024
    public static let maxTasksLimit = 10_000
    public static let defaultTasksLimit = 100
    public static let maxDeadListLimit: UInt64 = 10_000
    public static let maxRetryAfterMs: UInt64 = 86_400_000
    /// SUBMIT_BATCH `count` and each submission's `option_count` (1.1).
    public static let maxBatchSubmissions = 1000
    public static let maxBatchOptions = 16
    /// DONE_BATCH results, and the READY `batch` option (1.1).
    public static let maxDoneBatch = 1000
    public static let maxTaskBatch: UInt64 = 1024
    // Payload and message sizes: `PayloadLimits`.
    /// Retry defaults of a SUBMIT without options.
    public static let defaultMaxAttempts = TaskSpec.defaultMaxAttempts
    public static let defaultBackoffMs = TaskSpec.defaultBackoffMs
    public static let defaultBackoffMaxMs = TaskSpec.defaultBackoffMaxMs
}
