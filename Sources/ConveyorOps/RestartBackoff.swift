/// Why: a child that crashes at once must not be restarted in a tight loop
/// (burning CPU and flooding the log), yet one that ran fine for a long time
/// and then died should come back quickly. Pure and clock-free — the caller
/// passes times in seconds from any monotonic clock — so tests drive it with
/// a manual clock.
///
/// Policy: the first restart waits `initial` (1 s), each further one doubles
/// the wait up to `maximum` (30 s); a child that stayed up `healthyAfter`
/// (60 s) or longer before exiting starts again from `initial`.
public struct RestartBackoff: Sendable, Equatable {
    public let initial: Double
    public let maximum: Double
    public let healthyAfter: Double
    /// The delay the next unexpected exit gets (unless the run was healthy).
    public private(set) var next: Double

    public init(initial: Double = 1, maximum: Double = 30, healthyAfter: Double = 60) {
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.healthyAfter = healthyAfter
        next = initial
    }

    /// The child ran from `startedAt` until `exitedAt`; returns the seconds to
    /// wait before starting it again, and advances the policy.
    public mutating func delay(startedAt: Double, exitedAt: Double) -> Double {
        if exitedAt - startedAt >= healthyAfter { next = initial }
        let d = next
        next = min(maximum, next * 2)
        return d
    }
}
