/// Why: when the workers together can run more tasks than `--max-running`
/// allows, the cap silently idles capacity the operator paid for. The broker
/// says so once each time the total crosses above the cap (checked when a
/// worker registers), not on every registration while it stays above.
struct CapacityWarning: Sendable {
    private(set) var above = false

    /// Returns the warning to log when `totalCapacity` has just crossed above `maxRunning`.
    mutating func check(totalCapacity: Int, maxRunning: Int) -> String? {
        guard totalCapacity > maxRunning else {
            above = false
            return nil
        }
        guard !above else { return nil }
        above = true
        return "workers' total capacity \(totalCapacity) exceeds --max-running \(maxRunning) (MAX_CONCURRENT_ANALYSIS_TASKS): "
            + "at most \(maxRunning) tasks run at once and \(totalCapacity - maxRunning) worker slots stay idle"
    }
}
