/// Leadership over a journal that several brokers share: exactly one of
/// them — the holder of the lease — may write it and serve.
///
/// Why a lease with an epoch: a broker that stops (killed, paused, cut off)
/// cannot announce it, so leadership must run out by itself (the expiry), and
/// a broker that wakes up believing it still leads must be stopped by the
/// store itself: every write checks the epoch it holds (`JournalFenced`).
/// Expiry is measured on the store's clock, so the brokers' clocks never matter.
public protocol JournalLease: AnyObject {
    /// Takes the lease if nobody holds it (or it expired): a new epoch.
    /// `endpoint` is where clients reach this broker, for a standby to name.
    func acquireLease(endpoint: String, ttlMs: Int64) throws -> LeaseStatus
    /// Extends the lease this broker holds. Throws `JournalFenced` when another took it.
    func renewLease(ttlMs: Int64) throws
    /// Gives the lease up at a clean stop, so a standby takes over at once.
    func releaseLease() throws
}

public enum LeaseStatus: Sendable, Equatable {
    /// This broker holds the lease, with this epoch.
    case acquired(epoch: Int64)
    /// Another broker holds it; `endpoint` is where its clients reach it ("" if unknown).
    case heldElsewhere(epoch: Int64, endpoint: String)
}
