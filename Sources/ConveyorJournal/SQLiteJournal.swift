import ConveyorCore

/// Placeholder until the SQLite journal lands.
public enum SQLiteJournal {
    public static func open(_ config: Any) throws -> (any TaskJournal)? { nil }
}
