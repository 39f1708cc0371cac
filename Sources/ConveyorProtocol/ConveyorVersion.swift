/// Why: one place defines the release, so `conveyor --version`, the broker's
/// start-up log and its STATS (`"version"`) can never disagree.
public enum ConveyorVersion {
    public static let current = "0.4.0"
}
