import ConveyorCore

/// Placeholder until the SQLite journal lands.
public enum SQLiteJournal {
    /// nil for durability `none`.
    public static func open(_ config: JournalConfig) throws -> (any TaskJournal)? { nil }
}
