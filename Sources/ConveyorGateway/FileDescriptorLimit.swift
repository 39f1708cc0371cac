#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's open-file limit (`RLIMIT_NOFILE`).
///
/// Why the gateway touches it: every HTTP connection is a descriptor, and so is
/// every ZeroMQ socket and signaler the broker connection needs — libzmq aborts
/// the process when it cannot get one. Distributions start services with a soft
/// limit of 1,024 and a far higher hard limit, so the gateway raises its own soft
/// limit to the hard one at start and sizes its connection limits from the result
/// (`ConnectionGuard`), keeping descriptors in reserve for everything else.
public enum FileDescriptorLimit {
    public struct Limits: Sendable, Equatable {
        public var soft: Int
        public var hard: Int
    }

    /// The current soft and hard limits (nil if the system will not say).
    public static func current() -> Limits? {
        var r = rlimit()
        guard getrlimit(resourceNoFile, &r) == 0 else { return nil }
        return Limits(soft: clamp(r.rlim_cur), hard: clamp(r.rlim_max))
    }

    /// Raises the soft limit to the hard limit; returns the limits before and after.
    /// An unlimited hard limit is capped at 1,048,576 (Linux's default `nr_open`).
    @discardableResult
    public static func raiseSoftToHard() -> (before: Limits, after: Limits)? {
        var r = rlimit()
        guard getrlimit(resourceNoFile, &r) == 0 else { return nil }
        let before = Limits(soft: clamp(r.rlim_cur), hard: clamp(r.rlim_max))
        var target = r.rlim_max
        if target == infinity || target > rlim_t(cap) { target = rlim_t(cap) }
        if target > r.rlim_cur {
            var raised = r
            raised.rlim_cur = target
            if setrlimit(resourceNoFile, &raised) != 0 {
                #if canImport(Darwin)
                // macOS refuses more than OPEN_MAX for the soft limit.
                raised.rlim_cur = min(target, rlim_t(OPEN_MAX))
                _ = setrlimit(resourceNoFile, &raised)
                #endif
            }
        }
        return (before, current() ?? before)
    }

    static let cap = 1_048_576
    /// `RLIM_INFINITY` (all bits set on Linux and macOS; the C macro does not import).
    static let infinity = rlim_t.max

    static func clamp(_ v: rlim_t) -> Int {
        v == infinity || v > rlim_t(cap) ? cap : Int(v)
    }

    #if canImport(Glibc)
    static var resourceNoFile: __rlimit_resource_t { __rlimit_resource_t(UInt32(RLIMIT_NOFILE.rawValue)) }
    #else
    static var resourceNoFile: Int32 { RLIMIT_NOFILE }
    #endif
}
