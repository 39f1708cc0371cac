import ConveyorCore

/// Whether the journal can take commits right now, and when to try again.
///
/// Why a state of its own instead of exiting on a failed commit: a full disk,
/// an I/O error or a read-only remount is usually temporary, and a broker
/// that exits takes reads, running tasks and every worker's connection down
/// with it. While degraded the broker refuses what needs the journal
/// (`storage_unavailable`), holds back every reply and notice that reports an
/// uncommitted change, and retries the commit with a capped exponential
/// backoff; the first commit that succeeds ends it.
struct StorageHealth {
    /// The error of the last failed commit; nil when commits succeed.
    private(set) var error: String?
    /// Failed commits in a row.
    private(set) var failures = 0
    /// When the journal started failing (monotonic µs), for the recovery log line.
    private(set) var since: Timestamp = 0
    /// The next commit attempt while degraded (monotonic µs).
    private(set) var retryAt: Timestamp = 0

    static let firstRetryUs: Timestamp = 100_000
    static let maxRetryUs: Timestamp = 5_000_000

    var isDegraded: Bool { error != nil }

    /// While degraded, whether a commit may be attempted now.
    func mayCommit(_ now: Timestamp) -> Bool { error == nil || now >= retryAt }

    /// A commit failed. Returns true for the first failure of a run (log it loudly).
    mutating func failed(_ message: String, now: Timestamp) -> Bool {
        let first = error == nil
        if first { since = now }
        error = message
        failures = failures < 62 ? failures + 1 : failures
        // 100 ms, 200 ms, … capped at 5 s.
        let shift = min(failures - 1, 6)
        retryAt = now + min(Self.firstRetryUs << shift, Self.maxRetryUs)
        return first
    }

    /// A commit succeeded; returns how long the journal was unavailable (µs), nil if it was not.
    mutating func succeeded(now: Timestamp) -> Timestamp? {
        guard error != nil else { return nil }
        defer { self = StorageHealth() }
        return now - since
    }
}
