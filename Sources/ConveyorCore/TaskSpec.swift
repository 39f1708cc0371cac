/// What a client asks for when it submits: validated by the codec or the
/// gateway before it reaches the scheduler.
public struct TaskSpec: Sendable, Equatable {
    public var type: String
    public var priority: Priority
    public var payload: [UInt8]
    /// nil: the broker's default timeout.
    public var timeoutMs: UInt32?
    /// Failed or timed-out attempts allowed before the task is final.
    public var maxAttempts: UInt16
    public var idempotencyKey: String?
    /// When the task becomes due (absolute); nil: now.
    public var runAt: Timestamp?
    /// Relative delay, resolved against `now` at submission.
    public var delayMs: Int64?
    public var backoffMs: UInt32
    public var backoffMaxMs: UInt32
    /// Whose task it is: `key:Z85` for a CURVE client, or what an admin client
    /// (the gateway) names, e.g. `http:NAME`. nil: nobody's (no authentication).
    public var owner: String?
    /// Which pushes the submitting connection wants (SUBMIT option `notify`, 1.1).
    /// nil: the option was not given, which means `.all` and a 1.0 ACCEPTED.
    public var notify: Notify?

    /// Retry defaults (spec §5.2, §9.4); `Limits` in ConveyorProtocol names them for other modules.
    public static let defaultBackoffMs: UInt32 = 1000
    public static let defaultBackoffMaxMs: UInt32 = 300_000
    public static let defaultMaxAttempts: UInt16 = 1

    public init(
        type: String, priority: Priority = .normal, payload: [UInt8] = [], timeoutMs: UInt32? = nil,
        maxAttempts: UInt16 = 1, idempotencyKey: String? = nil, runAt: Timestamp? = nil, delayMs: Int64? = nil,
        backoffMs: UInt32 = TaskSpec.defaultBackoffMs, backoffMaxMs: UInt32 = TaskSpec.defaultBackoffMaxMs
    ) {
        self.type = type
        self.priority = priority
        self.payload = payload
        self.timeoutMs = timeoutMs
        self.maxAttempts = maxAttempts
        self.idempotencyKey = idempotencyKey
        self.runAt = runAt
        self.delayMs = delayMs
        self.backoffMs = backoffMs
        self.backoffMaxMs = backoffMaxMs
    }
}

/// Which unsolicited messages a submitter wants for its task (spec §5.2 `notify`):
/// a fire-and-forget producer should not have to read and discard a FINISHED per task.
public enum Notify: String, Sendable, CaseIterable {
    /// PROGRESS and FINISHED.
    case all
    /// FINISHED only.
    case final
    /// Neither.
    case none
}
