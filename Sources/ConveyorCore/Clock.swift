#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Microseconds. The core never reads a clock itself: every operation is
/// handed `now`, so tests control time exactly.
///
/// Two kinds of time meet here. Deadlines, heartbeats, rate windows, holds and
/// backoff are measured on a *monotonic* clock (`Clock.now()`): a step of the
/// wall clock (NTP, an operator, a VM resume) must not time out every running
/// task or declare every worker dead at once. Timestamps that are stored or
/// shown (`created_at`, `finished_at`, `run_at`, event `ts`) are *wall* time,
/// microseconds since the Unix epoch. The scheduler is handed the monotonic
/// `now` and keeps the offset to the wall clock (`Scheduler.setWallClock`).
public typealias Timestamp = Int64

/// Where adapters get time from.
public protocol Clock: Sendable {
    /// Monotonic microseconds (arbitrary origin): for every interval and deadline.
    func now() -> Timestamp
    /// Wall-clock microseconds since the Unix epoch: for stored and shown times only.
    func wallNow() -> Timestamp
}

/// The system's clocks: `CLOCK_MONOTONIC` and `CLOCK_REALTIME`, in microseconds.
public struct SystemClock: Clock {
    public init() {}
    public func now() -> Timestamp { Self.read(CLOCK_MONOTONIC) }
    public func wallNow() -> Timestamp { Self.read(CLOCK_REALTIME) }

    private static func read(_ id: clockid_t) -> Timestamp {
        var ts = timespec()
        clock_gettime(id, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
    }
}

/// A clock driven by hand, for tests: both readings move with `advance`, and
/// `stepWall` moves the wall clock alone, as NTP or an operator would.
public final class ManualClock: Clock {
    private let state: Mutex<(mono: Timestamp, wall: Timestamp)>
    public init(mono: Timestamp = 1_000_000, wall: Timestamp = 1_700_000_000_000_000) {
        state = Mutex((mono, wall))
    }
    public func now() -> Timestamp { state.withLock { $0.mono } }
    public func wallNow() -> Timestamp { state.withLock { $0.wall } }
    public func advance(_ us: Int64) { state.withLock { $0.mono += us; $0.wall += us } }
    public func stepWall(_ us: Int64) { state.withLock { $0.wall += us } }
}

extension Timestamp {
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-29T04:19:15.123Z`.
    public var rfc3339: String {
        var seconds = time_t(self / 1_000_000)
        var tmv = tm()
        gmtime_r(&seconds, &tmv)
        let ms = Int((self % 1_000_000) / 1000)
        func pad(_ v: Int32, _ n: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: Swift.max(0, n - s.count)) + s
        }
        return "\(pad(tmv.tm_year + 1900, 4))-\(pad(tmv.tm_mon + 1, 2))-\(pad(tmv.tm_mday, 2))T"
            + "\(pad(tmv.tm_hour, 2)):\(pad(tmv.tm_min, 2)):\(pad(tmv.tm_sec, 2)).\(pad(Int32(ms), 3))Z"
    }
}
