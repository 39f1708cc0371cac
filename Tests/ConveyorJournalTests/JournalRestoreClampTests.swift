import ConveyorCore
import ConveyorJournal
import Foundation
import GRDB
import XCTest

/// A journal row with values out of range — a RETURN storm's attempt
/// counter, a hand edit, a damaged row — never stops recovery and never
/// traps the broker later: values are clamped (and reported, naming the
/// task), rows that cannot be a task are skipped (and reported) and left in
/// the file.
final class JournalRestoreClampTests: SQLiteJournalTestCase {
    private func edit(_ h: JournalHarness, _ sql: String) throws {
        try h.journal?.close()
        let db = try DatabaseQueue(path: h.config.journalPath)
        try db.write { try $0.execute(sql: sql) }
        try db.close()
    }

    func testOutOfRangeValuesAreClampedAndNamed() throws {
        let h = try JournalHarness { $0.defaultTimeoutMs = 5000 }
        var ids: [TaskID] = []
        for _ in 0..<6 { ids.append(try h.submit(TaskSpec(type: "t", priority: .normal, maxAttempts: 2))) }
        func row(_ i: Int) -> Int64 { Int64(bitPattern: ids[i].raw) }
        try edit(h, """
            UPDATE tasks SET attempt = 65535, failures = 70000 WHERE id = \(row(0));
            UPDATE tasks SET priority = 9 WHERE id = \(row(1));
            UPDATE tasks SET priority = -3, timeout_ms = 0 WHERE id = \(row(2));
            UPDATE tasks SET max_attempts = 0, lost_deliveries = 99999999, attempt = -1 WHERE id = \(row(3));
            UPDATE tasks SET state = 'exploded' WHERE id = \(row(4));
            UPDATE tasks SET type = '' WHERE id = \(row(5));
            """)
        try h.restart()
        let r = h.recovery
        XCTAssertEqual(r.skippedCount, 2, "\(r.skipped)")
        XCTAssertTrue(r.skipped.contains { $0.contains(ids[4].description) && $0.contains("exploded") }, "\(r.skipped)")
        XCTAssertTrue(r.skipped.contains { $0.contains(ids[5].description) && $0.contains("empty type") }, "\(r.skipped)")
        XCTAssertEqual(r.repairedCount, 4, "\(r.repaired)")
        for i in 0..<4 { XCTAssertTrue(r.repaired.contains { $0.contains(ids[i].description) }, "task \(i) not named: \(r.repaired)") }
        XCTAssertEqual(r.queued, 4)

        let s = h.scheduler
        XCTAssertEqual(s.task(ids[0])?.attempt, 65535)
        XCTAssertEqual(s.task(ids[0])?.failures, 2, "failures clamped to max_attempts")
        XCTAssertEqual(s.task(ids[1])?.priority, .urgent)
        XCTAssertEqual(s.task(ids[2])?.priority, .low)
        XCTAssertEqual(s.task(ids[2])?.timeoutMs, 5000, "a timeout of 0 gets the default")
        XCTAssertEqual(s.task(ids[3])?.maxAttempts, 1)
        XCTAssertEqual(s.task(ids[3])?.attempt, 0)
        XCTAssertEqual(s.task(ids[3])?.details?.lostDeliveries, .max)
        XCTAssertNil(s.task(ids[4]))
        XCTAssertNil(s.task(ids[5]))

        // The repaired tasks run (or end) without trapping; the skipped rows stay on disk.
        h.scheduler.register(worker: PeerID([1]), name: "w", types: nil, capacity: 8, now: h.now)
        let started = try h.dispatch()
        XCTAssertEqual(Set(started.map(\.id)), Set([ids[1], ids[2], ids[3]]))
        XCTAssertEqual(h.scheduler.task(ids[0])?.state, .failed, "a spent attempt counter fails the task")
        XCTAssertEqual(h.scheduler.task(ids[0])?.details?.error, "attempts_exhausted")
        for a in started { h.scheduler.workerGone(a.worker, reason: "gone", now: h.now); break }
        try h.flush()
        XCTAssertEqual(h.scheduler.task(ids[3])?.state, .failed, "lost deliveries at their maximum: worker_lost")
        let counts = try h.countByState()
        XCTAssertEqual(counts["exploded"], 1)
    }

    /// A final row without finished_at (it used to stop the broker as corrupt)
    /// is loaded as finished now.
    func testFinishedRowWithoutFinishedAtIsRepaired() throws {
        let h = try JournalHarness()
        let id = try h.submit(TaskSpec(type: "t"))
        try edit(h, "UPDATE tasks SET state = 'succeeded', finished_at = NULL WHERE id = \(Int64(bitPattern: id.raw))")
        try h.restart()
        XCTAssertEqual(h.recovery.repairedCount, 1, "\(h.recovery.repaired)")
        XCTAssertTrue(h.recovery.repaired[0].contains(id.description))
        XCTAssertEqual(h.scheduler.task(id)?.state, .succeeded)
        XCTAssertEqual(h.scheduler.queueSize, 0)
    }
}
