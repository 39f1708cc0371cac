import ConveyorProtocol

extension ClientRequest {
    /// Whether answering it changes journaled state, so that it must be
    /// refused `storage_unavailable` while the journal cannot commit. Reads
    /// are listed; anything else (including requests added later) counts as a
    /// change: refusing a read by mistake is better than acknowledging a
    /// change that is never committed.
    var needsJournal: Bool {
        switch self {
        case .status, .stats, .tasks, .ping, .dead(_, .list): false
        default: true
        }
    }
}
