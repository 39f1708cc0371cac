/// A task's lifecycle. The wire and the journal use `rawValue`.
///
///     delayed ─▶ queued ─▶ running ─▶ succeeded
///                  ▲  ▲       │  ├──▶ failed | timed_out  (last attempt; also dead-lettered)
///                  │  └───────┘  └──▶ delayed             (retry after backoff)
///                  │  worker lost / returned
///     any non-final ─────────────────▶ cancelled
public enum TaskState: String, Sendable, CaseIterable {
    case delayed
    case queued
    case running
    case succeeded
    case failed
    case timedOut = "timed_out"
    case cancelled

    public var isFinal: Bool {
        switch self {
        case .succeeded, .failed, .timedOut, .cancelled: true
        case .delayed, .queued, .running: false
        }
    }

    /// The state machine: every transition the scheduler may make.
    public func canMove(to next: TaskState) -> Bool {
        switch (self, next) {
        case (.delayed, .queued), (.delayed, .cancelled): true
        case (.queued, .running), (.queued, .cancelled), (.queued, .failed): true
        case (.running, .succeeded), (.running, .failed), (.running, .timedOut),
             (.running, .cancelled), (.running, .queued), (.running, .delayed): true
        // A dead-lettered task may be retried by an operator.
        case (.failed, .queued), (.timedOut, .queued): true
        default: false
        }
    }

    /// Compact code for the in-memory record.
    var code: UInt8 {
        switch self {
        case .delayed: 0
        case .queued: 1
        case .running: 2
        case .succeeded: 3
        case .failed: 4
        case .timedOut: 5
        case .cancelled: 6
        }
    }

    init(code: UInt8) {
        switch code {
        case 0: self = .delayed
        case 1: self = .queued
        case 2: self = .running
        case 3: self = .succeeded
        case 4: self = .failed
        case 5: self = .timedOut
        default: self = .cancelled
        }
    }
}
