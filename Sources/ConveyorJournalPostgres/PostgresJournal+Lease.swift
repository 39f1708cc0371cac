import ConveyorCore
import PostgresNIO

/// The lease row (`conveyor_lease`): which of the brokers sharing this
/// journal is active. Expiry is the server's `clock_timestamp()`.
extension PostgresJournal {
    public func acquireLease(endpoint: String, ttlMs: Int64) throws -> LeaseStatus {
        let holder = self.holder
        let secs = Double(ttlMs) / 1000
        let status: LeaseStatus = try withConnection("taking the lease") { conn, logger in
            let taken = try await conn.query("""
                UPDATE conveyor_lease SET epoch = epoch + 1, holder = \(holder), endpoint = \(endpoint),
                    expires_at = clock_timestamp() + make_interval(secs => \(secs))
                WHERE id = 1 AND expires_at < clock_timestamp() RETURNING epoch
                """, logger: logger)
            for try await e in taken.decode(Int64.self) { return .acquired(epoch: e) }
            let held = try await conn.query("SELECT epoch, endpoint FROM conveyor_lease WHERE id = 1", logger: logger)
            for try await (e, ep) in held.decode((Int64, String).self) { return .heldElsewhere(epoch: e, endpoint: ep) }
            return .heldElsewhere(epoch: 0, endpoint: "")
        }
        if case .acquired(let e) = status { epoch = e }
        return status
    }

    public func renewLease(ttlMs: Int64) throws {
        guard let mine = epoch else { throw JournalFenced(mine: 0, current: 0) }
        let secs = Double(ttlMs) / 1000
        // nil: renewed; else the epoch another broker holds now.
        let other: Int64? = try withConnection("renewing the lease") { conn, logger in
            let rows = try await conn.query("""
                UPDATE conveyor_lease SET expires_at = clock_timestamp() + make_interval(secs => \(secs))
                WHERE id = 1 AND epoch = \(mine) RETURNING epoch
                """, logger: logger)
            for try await _ in rows.decode(Int64.self) { return nil }
            for try await e in try await conn.query("SELECT epoch FROM conveyor_lease WHERE id = 1", logger: logger).decode(Int64.self) {
                return e
            }
            return -1
        }
        if let other { throw JournalFenced(mine: mine, current: other) }
    }

    public func releaseLease() throws {
        guard let mine = epoch else { return }
        _ = try withConnection("releasing the lease") { conn, logger in
            try await conn.query("UPDATE conveyor_lease SET expires_at = '-infinity' WHERE id = 1 AND epoch = \(mine)", logger: logger)
        }
    }
}
