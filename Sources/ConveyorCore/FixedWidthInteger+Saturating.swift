/// Why: timestamps, delays and counters reach the scheduler from the network
/// and from journal rows, and Swift traps on overflow. A hostile `run_at_ms`,
/// a damaged `finished_at` or a RETURN loop must never be able to take the
/// broker down, so arithmetic on such values saturates at the type's bounds
/// instead (a deadline at `Int64.max` is simply "never").
extension FixedWidthInteger {
    /// `self + other`, clamped to the type's range.
    @inlinable func adding(saturating other: Self) -> Self {
        let (r, o) = addingReportingOverflow(other)
        guard o else { return r }
        return other > 0 ? .max : .min
    }

    /// `self - other`, clamped to the type's range.
    @inlinable func subtracting(saturating other: Self) -> Self {
        let (r, o) = subtractingReportingOverflow(other)
        guard o else { return r }
        return other > 0 ? .min : .max
    }

    /// `self * other`, clamped to the type's range.
    @inlinable func multiplied(saturating other: Self) -> Self {
        let (r, o) = multipliedReportingOverflow(by: other)
        guard o else { return r }
        return (self < 0) == (other < 0) ? .max : .min
    }

    /// One more, never past `max` (counters a peer can drive up).
    @inlinable var incrementedSaturating: Self { self == .max ? .max : self + 1 }
}
