import ConveyorCore
import ConveyorJournalPostgres
import Foundation
import XCTest

/// The lease and the fence on a real PostgreSQL server: one holder at a
/// time, expiry on the server's clock, and a deposed holder's writes refused
/// whole — the guarantee the active/standby brokers rest on.
final class PostgresLeaseTests: XCTestCase {
    private var schema = ""
    private var opened: [PostgresJournal] = []

    override func setUpWithError() throws {
        guard TestBackend.postgresURL != nil else {
            throw XCTSkip("no PostgreSQL server: CONVEYOR_TEST_POSTGRES_URL is not set (ops/test starts a throwaway one)")
        }
        schema = "lease_\(getpid())_\(UUID().uuidString.prefix(8).lowercased())"
    }

    override func tearDown() {
        try? opened.first?.executeForTesting("DROP SCHEMA IF EXISTS \(schema) CASCADE")
        for j in opened { try? j.close() }
        opened = []
    }

    private func open() throws -> PostgresJournal {
        guard var url = TestBackend.postgresURL else { throw XCTSkip("no PostgreSQL server") }
        url.schema = schema
        let j = try PostgresJournal(url: url, durability: .fsync, password: url.password())
        opened.append(j)
        return j
    }

    private func batch(_ id: UInt64) -> JournalBatch {
        var b = JournalBatch()
        let t = TaskRecord(id: TaskID(raw: id), seq: id, createdAt: 1, type: "t", priority: .normal, payload: [1], timeoutMs: 1000, maxAttempts: 1)
        b.note(.queued(t.id, position: 0), task: t)
        return b
    }

    /// Waits (bounded) until the lease has run out on the server's clock.
    private func takeOnceExpired(_ j: PostgresJournal, endpoint: String, ttlMs: Int64) throws -> LeaseStatus {
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            let s = try j.acquireLease(endpoint: endpoint, ttlMs: ttlMs)
            if case .acquired = s { return s }
            usleep(50_000) // time passing on the server's clock: nothing to wait on
        }
        return try j.acquireLease(endpoint: endpoint, ttlMs: ttlMs)
    }

    func testOneHolderAtATimeAndTheDeposedOneIsFenced() throws {
        let a = try open(), b = try open()
        XCTAssertEqual(try a.acquireLease(endpoint: "tcp://a:1", ttlMs: 300), .acquired(epoch: 1))
        XCTAssertEqual(try b.acquireLease(endpoint: "tcp://b:1", ttlMs: 300), .heldElsewhere(epoch: 1, endpoint: "tcp://a:1"),
                       "held: the standby learns who leads")
        try a.apply(batch(10))
        try a.renewLease(ttlMs: 300)

        // a stops renewing (paused, cut off): b takes over once the lease ran out.
        XCTAssertEqual(try takeOnceExpired(b, endpoint: "tcp://b:1", ttlMs: 60_000), .acquired(epoch: 2))
        XCTAssertThrowsError(try a.apply(batch(11))) { e in
            XCTAssertEqual((e as? JournalFenced)?.current, 2, "\(e)")
        }
        XCTAssertThrowsError(try a.renewLease(ttlMs: 300)) { XCTAssertTrue($0 is JournalFenced, "\($0)") }
        XCTAssertEqual(try b.lookup(TaskID(raw: 11)), nil, "a fenced batch writes nothing")
        XCTAssertNotNil(try b.lookup(TaskID(raw: 10)), "what the old holder committed before is there")
        try b.apply(batch(12))
        XCTAssertNotNil(try a.lookup(TaskID(raw: 12)), "reads are not fenced")

        // A clean stop gives the lease up at once.
        try b.releaseLease()
        XCTAssertEqual(try a.acquireLease(endpoint: "tcp://a:1", ttlMs: 60_000), .acquired(epoch: 3))
    }

    /// Pauses and holds take the multi-statement path: fenced the same way.
    func testTheSlowPathIsFencedToo() throws {
        let a = try open(), b = try open()
        _ = try a.acquireLease(endpoint: "tcp://a:1", ttlMs: 200)
        _ = try takeOnceExpired(b, endpoint: "tcp://b:1", ttlMs: 60_000)
        var withPause = batch(20)
        withPause.note(.typePaused(type: "pdf"), task: nil)
        XCTAssertThrowsError(try a.apply(withPause)) { XCTAssertTrue($0 is JournalFenced, "\($0)") }
        XCTAssertNil(try b.lookup(TaskID(raw: 20)))
    }
}

extension PostgresLeaseTests {
    /// A holder frozen inside a transaction (SIGSTOP, a paused VM) holds the
    /// lease row's lock; the server ends that transaction (the session's
    /// idle-in-transaction timeout) and the standby takes over — instead of
    /// waiting on the lock for as long as the holder stays frozen.
    func testAHolderFrozenInsideATransactionDoesNotBlockTheTakeover() throws {
        let a = try open(), b = try open()
        _ = try a.acquireLease(endpoint: "tcp://a:1", ttlMs: 300)
        try a.executeForTesting("BEGIN")
        try a.executeForTesting("SELECT epoch FROM conveyor_lease WHERE id = 1 FOR SHARE") // the fence's lock, then silence
        let started = Date()
        var status: LeaseStatus?
        while Date().timeIntervalSince(started) < 8 {
            // The lock wait is bounded (lock_timeout): a refusal is an error, and the standby tries again.
            if let s = try? b.acquireLease(endpoint: "tcp://b:1", ttlMs: 60_000), case .acquired = s {
                status = s
                break
            }
            usleep(100_000) // time passing on the server's clock: nothing to wait on
        }
        XCTAssertEqual(status, .acquired(epoch: 2), "the frozen holder's transaction was ended by the server")
        XCTAssertLessThan(Date().timeIntervalSince(started), 6, "idle_in_transaction_session_timeout (2 s) plus a lock wait (2 s)")
        XCTAssertThrowsError(try a.apply(batch(30)), "its session is gone and its epoch too")
    }
}

extension PostgresLeaseTests {
    /// The test server offers no TLS: `prefer` (the default) connects in the
    /// clear, `require` refuses to, with the URL in the message.
    func testSSLModesAgainstAServerWithoutTLS() throws {
        guard var url = TestBackend.postgresURL else { throw XCTSkip("no PostgreSQL server") }
        url.schema = schema
        XCTAssertEqual(url.sslMode, .prefer)
        opened.append(try PostgresJournal(url: url, durability: .fsync, password: url.password()))
        url.sslMode = .require
        XCTAssertThrowsError(try PostgresJournal(url: url, durability: .fsync, password: url.password())) { e in
            XCTAssertTrue("\(e)".contains("sslmode=require") && "\(e)".contains("connecting"), "\(e)")
        }
    }
}
