import Synchronization

/// A task as the broker holds it.
///
/// Kept small on purpose: a million queued tasks must fit in memory, so the
/// fields every task needs are inline and packed, and what only started or
/// finished tasks need lives in `details`, allocated on first use.
public struct TaskRecord: Sendable {
    public let id: TaskID
    /// Global submission order; FIFO within a level compares it.
    public internal(set) var seq: UInt64
    public let createdAt: Timestamp
    /// When the task last became dispatchable (monotonic): dispatch latency counts from here.
    public internal(set) var readyAt: Timestamp
    public let type: String
    public internal(set) var payload: [UInt8]
    /// The client connection to notify of progress and the outcome.
    public internal(set) var submitter: PeerID?
    public let timeoutMs: UInt32
    public let priority: Priority
    /// The state's code in the low bits; the top bit is `mutesProgress`
    /// (one flag must not cost 8 bytes a task in a packed record).
    var stateCode: UInt8
    /// Dispatches so far (the current attempt's number once running).
    public internal(set) var attempt: UInt16
    public let maxAttempts: UInt16
    /// Failed or timed-out attempts so far (lost workers are counted apart).
    public internal(set) var failures: UInt16
    /// Whose task it is, as an index into `OwnerNames` (0: nobody's). Four
    /// bytes in what was padding: ownership costs no memory per task.
    var ownerIndex: UInt32 = 0
    public internal(set) var details: TaskDetails?
    /// Whose task it is (`TaskSpec.owner`).
    public var owner: String? { OwnerNames.shared.name(ownerIndex) }

    public var state: TaskState {
        get { TaskState(code: stateCode & 0x7F) }
        set { stateCode = (stateCode & 0x80) | newValue.code }
    }

    /// The submitter asked for FINISHED only (`notify=final`); `notify=none`
    /// leaves `submitter` nil instead.
    var mutesProgress: Bool {
        get { stateCode & 0x80 != 0 }
        set { stateCode = newValue ? stateCode | 0x80 : stateCode & 0x7F }
    }

    public init(
        id: TaskID, seq: UInt64, createdAt: Timestamp, type: String, priority: Priority, payload: [UInt8],
        timeoutMs: UInt32, maxAttempts: UInt16, state: TaskState = .queued, attempt: UInt16 = 0,
        failures: UInt16 = 0, submitter: PeerID? = nil, details: TaskDetails? = nil, owner: String? = nil
    ) {
        self.ownerIndex = OwnerNames.shared.index(owner)
        self.id = id
        self.seq = seq
        self.createdAt = createdAt
        self.readyAt = createdAt
        self.type = type
        self.priority = priority
        self.payload = payload
        self.timeoutMs = timeoutMs
        self.maxAttempts = maxAttempts
        self.stateCode = state.code
        self.attempt = attempt
        self.failures = failures
        self.submitter = submitter
        self.details = details
    }

    /// The mutable details, created on first write.
    mutating func detailsForWriting() -> TaskDetails {
        if let d = details { return d }
        let d = TaskDetails()
        details = d
        return d
    }
}

/// Owner names interned for the process: a record keeps a 4-byte index. The
/// names are CURVE keys of allowlisted clients and HTTP token names from the
/// configuration, so the table stays small.
final class OwnerNames: Sendable {
    static let shared = OwnerNames()
    private let state = Mutex<(names: [String], index: [String: UInt32])>(([], [:]))

    /// 0 for nil.
    func index(_ name: String?) -> UInt32 {
        guard let name else { return 0 }
        return state.withLock { s in
            if let i = s.index[name] { return i }
            s.names.append(name)
            let i = UInt32(truncatingIfNeeded: s.names.count)
            s.index[name] = i
            return i
        }
    }

    func name(_ index: UInt32) -> String? {
        guard index > 0 else { return nil }
        return state.withLock { s in Int(index) <= s.names.count ? s.names[Int(index) - 1] : nil }
    }
}

/// The part of a task that only some tasks need. A class so that the record
/// stays small; owned by the scheduler's thread, like the record itself.
public final class TaskDetails: @unchecked Sendable {
    public var worker: String?
    var workerPeer: PeerID?
    /// Wall-clock times, stored and shown.
    public var startedAt: Timestamp?
    public var finishedAt: Timestamp?
    /// The same moments on the scheduler's monotonic clock, for durations and expiry.
    public var startedMono: Timestamp?
    public var finishedMono: Timestamp = 0
    /// When the task started waiting in the queue before its latest dispatch
    /// (monotonic): a returned or lost task goes back with it, for aging.
    var queuedSince: Timestamp?
    public var progressPercent: UInt8?
    public var progressMessage: String?
    public var result: [UInt8]?
    public var error: String?
    public var idempotencyKey: String?
    public var runAt: Timestamp?
    public var backoffMs: UInt32 = TaskSpec.defaultBackoffMs
    public var backoffMaxMs: UInt32 = TaskSpec.defaultBackoffMaxMs
    /// Dispatches lost with their worker (bounded by `maxDeliveries`).
    public var lostDeliveries: UInt16 = 0
    /// RETURNs since the broker started or the task was last retried from
    /// the dead letters (bounded by `maxReturns`; not journaled).
    public var returns: UInt16 = 0
    /// The scheduler's dispatch counter at the latest dispatch: a lost worker's
    /// tasks go back to the head in the order they were dispatched (§9.2).
    var dispatchSeq: UInt64 = 0
    /// In the dead-letter set: final after its last failed attempt, until retried or purged.
    public var dead = false

    public init() {}
}
