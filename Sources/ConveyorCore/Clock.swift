#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Microseconds since the Unix epoch. The core never reads a clock itself:
/// every operation is handed `now`, so tests control time exactly.
public typealias Timestamp = Int64

/// Where adapters get `now` from.
public protocol Clock: Sendable {
    func now() -> Timestamp
}

/// The wall clock, in microseconds.
public struct SystemClock: Clock {
    public init() {}
    public func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
    }
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
