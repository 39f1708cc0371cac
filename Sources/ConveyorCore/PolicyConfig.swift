/// What the operator says about task types: how many may run at once, how
/// fast they may start, how much API budget they may use, and whether waiting
/// tasks age into higher levels. Empty = today's strict priority, no limits.
///
/// Parsed from the flag syntax (`youtube=2,pdf=3`, `youtube=15/min`) here, in
/// the core, so that the CLI, the environment and tests share one parser.
public struct PolicyConfig: Sendable, Equatable {
    /// At most this many tasks of the type running across the pool.
    public var typeConcurrency: [String: Int] = [:]
    /// At most `limit` dispatches of the type in any window of `windowUs`.
    public var rateLimits: [String: WindowLimit] = [:]
    /// Dispatches of the type wait while the cost units reported in the last
    /// `windowUs` reach `limit`.
    public var costLimits: [String: WindowLimit] = [:]
    /// nil: strict priority. Otherwise a queued task counts one level higher
    /// for every `agingUs` it has waited, up to URGENT.
    public var agingUs: Int64?
    /// How long a type is held after a worker's RETRY_LATER without a delay.
    public var defaultHoldMs: Int64 = 30_000
    /// The longest hold a worker can ask for (a hostile value cannot park a type for ever).
    public var maxHoldMs: Int64 = 86_400_000

    public init() {}

    /// True when no policy beyond strict priority is configured.
    public var isPlain: Bool { typeConcurrency.isEmpty && rateLimits.isEmpty && costLimits.isEmpty && agingUs == nil }
}

/// N per window: a rate (`15/min`) or a budget (`1000000/min`).
public struct WindowLimit: Sendable, Equatable, CustomStringConvertible {
    public var limit: Int64
    public var windowUs: Int64
    public init(limit: Int64, windowUs: Int64) {
        self.limit = limit
        self.windowUs = windowUs
    }

    public var description: String {
        switch windowUs {
        case 1_000_000: "\(limit)/s"
        case 60_000_000: "\(limit)/min"
        case 3_600_000_000: "\(limit)/h"
        default: "\(limit)/\(windowUs / 1_000_000)s"
        }
    }

    /// `N/s`, `N/min`, `N/h` (also `N/sec`, `N/m`, `N/hour`), N ≥ 1.
    public init(parsing text: String) throws(PolicyParseError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let n = Int64(parts[0]), n >= 1, n <= 1_000_000_000_000 else {
            throw PolicyParseError("'\(text)' is not N/s, N/min or N/h with N ≥ 1")
        }
        let unit: Int64
        switch parts[1].lowercased() {
        case "s", "sec", "second": unit = 1_000_000
        case "m", "min", "minute": unit = 60_000_000
        case "h", "hour": unit = 3_600_000_000
        default: throw PolicyParseError("'\(text)': the unit must be /s, /min or /h")
        }
        self.init(limit: n, windowUs: unit)
    }
}

/// Why a queued task is not running yet (STATUS `waiting_for`).
public enum WaitReason: String, Sendable, CaseIterable {
    /// Waiting for a free slot: the global cap, worker capacity, or tasks ahead of it.
    case capacity
    case typeConcurrency = "type_concurrency"
    case rateLimit = "rate_limit"
    case costLimit = "cost_limit"
    /// A worker reported the API's 429: the type is held until a time.
    case held
    case paused
    case noWorkerForType = "no_worker_for_type"
}

public struct PolicyParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension PolicyConfig {
    /// `type=value,type=value`; each type must be a valid task type, once.
    public static func parseAssignments<V>(_ text: String, what: String, value: (String) throws(PolicyParseError) -> V)
        throws(PolicyParseError) -> [String: V]
    {
        var out: [String: V] = [:]
        for item in text.split(separator: ",", omittingEmptySubsequences: true) {
            let pair = item.trimmingSpaces
            guard let eq = pair.firstIndex(of: "=") else {
                throw PolicyParseError("\(what): '\(pair)' is not type=value")
            }
            let type = String(pair[..<eq]), v = String(pair[pair.index(after: eq)...])
            guard TaskSpec.isValidType(type) else {
                throw PolicyParseError("\(what): '\(type)' is not a task type (1-64 characters of [A-Za-z0-9_.:-])")
            }
            guard out[type] == nil else { throw PolicyParseError("\(what): type '\(type)' is given twice") }
            out[type] = try value(v)
        }
        return out
    }

    /// `youtube=2,pdf=3`.
    public static func parseConcurrency(_ text: String) throws(PolicyParseError) -> [String: Int] {
        try parseAssignments(text, what: "type concurrency") { (v: String) throws(PolicyParseError) -> Int in
            guard let n = Int(v), n >= 1, n <= 1_000_000 else { throw PolicyParseError("type concurrency: '\(v)' is not a number ≥ 1") }
            return n
        }
    }

    /// `youtube=15/min,pdf=2/s` (rates) or `youtube=1000000/min` (cost budgets).
    public static func parseWindows(_ text: String, what: String) throws(PolicyParseError) -> [String: WindowLimit] {
        try parseAssignments(text, what: what) { (v: String) throws(PolicyParseError) -> WindowLimit in
            do throws(PolicyParseError) { return try WindowLimit(parsing: v) } catch { throw PolicyParseError("\(what): \(error.message)") }
        }
    }
}

extension TaskSpec {
    /// Task types: 1–64 bytes of `[A-Za-z0-9_.:-]` (spec §3.2).
    public static func isValidType(_ s: String) -> Bool {
        let u = Array(s.utf8)
        return !u.isEmpty && u.count <= 64 && u.allSatisfy { b in
            (b >= 97 && b <= 122) || (b >= 65 && b <= 90) || (b >= 48 && b <= 57) || b == 95 || b == 46 || b == 58 || b == 45
        }
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return s
    }
}
