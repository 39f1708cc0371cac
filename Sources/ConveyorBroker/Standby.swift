import ConveyorCore

/// What a standby broker keeps while another broker holds the journal's
/// lease: who is active (to name in `not_leader` replies), when to try the
/// lease again, and the workers that already came to it.
///
/// Why park workers: a worker that lost the active broker moves down its
/// endpoint list and sends READY here — possibly a moment before this broker
/// takes over. Answering nothing keeps the standby silent (spec §9.7), and
/// replaying the READY at takeover registers the worker at once instead of
/// after another round of its list.
struct Standby {
    /// The active broker's advertised client endpoint ("" when unknown).
    var leader: String
    var epoch: Int64
    var nextAttempt: Timestamp = 0
    /// The last READY of each worker connection (by its routing id).
    private(set) var parked: [[UInt8]: Parked] = [:]

    struct Parked {
        let frames: [[UInt8]]
        let userID: String
        let at: Timestamp
    }

    /// How often a standby looks at the lease.
    static let attemptIntervalUs: Int64 = 500_000
    /// Bounds what a flood of READYs can make a standby hold.
    static let maxParked = 10_000

    init(leader: String, epoch: Int64) {
        self.leader = leader
        self.epoch = epoch
    }

    /// Remembers a READY (`frames`: routing id, header, command, …); other worker messages are ignored.
    mutating func park(_ frames: [[UInt8]], userID: String, now: Timestamp) {
        guard frames.count >= 3, frames[2] == Array("READY".utf8) else { return }
        if parked.count >= Self.maxParked && parked[frames[0]] == nil { return }
        parked[frames[0]] = Parked(frames: frames, userID: userID, at: now)
    }

    /// The READYs still worth answering: sent within `withinUs` (the worker
    /// gives up on a silent broker after interval × liveness), oldest first.
    func readiesToReplay(now: Timestamp, withinUs: Int64) -> [Parked] {
        parked.values.filter { now - $0.at <= withinUs }.sorted { $0.at < $1.at }
    }

    var message: String {
        leader.isEmpty ? "standby broker; the active broker is unknown"
            : "standby broker; the active broker is \(leader)"
    }
}
