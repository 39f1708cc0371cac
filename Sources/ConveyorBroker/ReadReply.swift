/// Which encoded replies may leave while the journal cannot commit.
///
/// Why by command name: replies are queued already encoded, and a reply
/// that acknowledges a change (ACCEPTED, CANCELLED, DEAD retry/purge, TYPE,
/// and any command added later) must wait for its commit, while these never
/// report one and always go at once. (A DEAD list waits with the rest: its
/// frames do not say it is a list.)
enum ReadReply {
    static let commands: Set<[UInt8]> = Set(["STATUS", "STATS", "TASKS", "PONG", "ERROR", "REJECTED"].map { Array($0.utf8) })

    /// `frames` as `ClientReply.encode()` makes them: header, command, …
    static func isRead(_ frames: [[UInt8]]) -> Bool {
        frames.count > 1 && commands.contains(frames[1])
    }
}
