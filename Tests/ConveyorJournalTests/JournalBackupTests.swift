import ConveyorCore
@testable import ConveyorJournal
import Foundation
import GRDB
import XCTest

/// `journal backup` copies a live journal consistently (its -wal included)
/// into one file; `journal check` tells a good copy from a damaged one; a
/// commit that fails keeps its changes for the next one.
final class JournalBackupTests: SQLiteJournalTestCase {
    /// A harness with `n` queued tasks, `k` of them succeeded; all committed, much of it only in -wal.
    private func journalWithTasks(_ n: Int, succeeded k: Int) throws -> JournalHarness {
        let h = try JournalHarness()
        for i in 0..<n { try h.submit(TaskSpec(type: i % 2 == 0 ? "a" : "b", payload: Array("payload \(i)".utf8))) }
        let w = PeerID(Array("w".utf8))
        h.scheduler.register(worker: w, name: "w", types: nil, capacity: k, now: h.now)
        for a in try h.dispatch() { try h.succeed(a.id) }
        return h
    }

    func testBackupOfALiveJournalIsCompleteAndSelfContained() throws {
        let h = try journalWithTasks(50, succeeded: 10)
        let walBytes = (try? FileManager.default.attributesOfItem(atPath: h.config.journalPath + "-wal")[.size] as? Int) ?? 0
        XCTAssertGreaterThan(walBytes, 0, "the test needs commits that are only in the -wal")
        let file = try scratch().appendingPathComponent("copy.sqlite").path
        // Through the file, as the CLI does, while the broker's connection is open and idle.
        try JournalBackup.copy(journalAt: h.config.journalPath, to: file)
        XCTAssertFalse(FileManager.default.fileExists(atPath: file + "-wal"))

        let check = JournalCheck.run(path: file)
        XCTAssertTrue(check.isHealthy, check.summary)
        XCTAssertEqual(check.tasks, 50)
        XCTAssertEqual(check.counts["succeeded"], 10)
        XCTAssertEqual(check.counts["queued"], 40)
        XCTAssertEqual(check.position.lastID, h.ids.last?.raw)

        // A broker started on the copy alone finds every task.
        let dir = try scratch()
        try FileManager.default.copyItem(atPath: file, toPath: dir.appendingPathComponent(SQLiteJournal.fileName).path)
        var c = JournalConfig()
        c.dataDirectory = dir.path
        let j = try SQLiteJournal(c)
        var s = Scheduler(config: h.schedulerConfig, now: h.now, lastID: try j.lastTaskID())
        let r = try j.recover(into: &s, now: h.now)
        XCTAssertEqual(r.queued, 40)
        XCTAssertEqual(r.finished, 10)
        try j.close()

        // The source goes on, and still closes into one file (no reader left behind).
        try h.submit(TaskSpec(type: "a"))
        try h.restart()
    }

    func testBackupRefusesAMissingOrForeignSource() throws {
        let dir = try scratch()
        XCTAssertThrowsError(try JournalBackup.copy(journalAt: dir.appendingPathComponent("none.sqlite").path, to: dir.appendingPathComponent("x").path))
        let foreign = dir.appendingPathComponent("other.sqlite").path
        let q = try DatabaseQueue(path: foreign)
        try q.write { try $0.execute(sql: "CREATE TABLE t (x)") }
        try q.close()
        XCTAssertThrowsError(try JournalBackup.copy(journalAt: foreign, to: dir.appendingPathComponent("y").path)) {
            XCTAssertEqual(($0 as? JournalError)?.kind, .incompatible)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("y").path), "no half backup left")
    }

    func testCheckFindsDamage() throws {
        let h = try journalWithTasks(400, succeeded: 0)
        let file = try scratch().appendingPathComponent("copy.sqlite").path
        try JournalBackup.copy(journalAt: h.config.journalPath, to: file)
        XCTAssertTrue(JournalCheck.run(path: file).isHealthy)

        // Overwrite the middle of the file: pages a broker needs.
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: file))
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: 2 * 4096)
        try handle.write(contentsOf: Data(repeating: 0xA5, count: max(4096, Int(size) - 3 * 4096)))
        try handle.close()
        let damaged = JournalCheck.run(path: file)
        XCTAssertFalse(damaged.isHealthy, damaged.summary)
        XCTAssertTrue(damaged.summary.contains("DAMAGED"), damaged.summary)

        XCTAssertFalse(JournalCheck.run(path: file + ".absent").isHealthy)
        let empty = file + ".empty"
        XCTAssertTrue(FileManager.default.createFile(atPath: empty, contents: Data()))
        XCTAssertFalse(JournalCheck.run(path: empty).isHealthy)
    }

    /// A row a broker would refuse (here an unknown state) is damage even when SQLite is happy.
    func testCheckDecodesEveryRow() throws {
        let h = try journalWithTasks(5, succeeded: 0)
        let file = try scratch().appendingPathComponent("copy.sqlite").path
        try JournalBackup.copy(journalAt: h.config.journalPath, to: file)
        let q = try DatabaseQueue(path: file)
        try q.write { try $0.execute(sql: "UPDATE tasks SET state = 'exploded' WHERE id = (SELECT min(id) FROM tasks)") }
        try q.close()
        let r = JournalCheck.run(path: file)
        XCTAssertFalse(r.isHealthy)
        XCTAssertTrue(r.problems.contains { $0.contains("exploded") }, r.summary)
    }

    /// The live journal, next to its mark, checks out while open.
    func testCheckOfTheLiveJournalComparesItsMark() throws {
        let h = try journalWithTasks(3, succeeded: 1)
        let live = JournalCheck.run(path: h.config.journalPath)
        XCTAssertTrue(live.isHealthy, live.summary)
        XCTAssertNotNil(live.mark)
        XCTAssertEqual(live.tasks, 3)
    }

    /// SQLITE_FULL (here from `max_page_count`, as a full disk answers): the
    /// commit fails and keeps what it staged; the next commit writes it.
    func testFailedCommitKeepsItsChangesForTheNext() throws {
        let h = try JournalHarness()
        try h.submit(TaskSpec(type: "a", payload: [1]))
        guard let j = h.journal, let file = h.sqlite else { return XCTFail("no journal") }
        let pages = try XCTUnwrap(Int(exactly: try pageCount(h.config.journalPath)))
        try file.executeForTesting("PRAGMA max_page_count = \(pages)")
        XCTAssertThrowsError(try h.submit(TaskSpec(type: "a", payload: [UInt8](repeating: 7, count: 64 * 1024)))) { e in
            XCTAssertEqual((e as? JournalError)?.kind, .unwritable, "\(e)")
            XCTAssertTrue("\(e)".contains("full"), "\(e)")
        }
        XCTAssertGreaterThan(j.uncommittedChanges, 0)
        // Still failing: nothing is dropped.
        XCTAssertThrowsError(try j.commit())
        try file.executeForTesting("PRAGMA max_page_count = 1073741823")
        try j.commit()
        XCTAssertEqual(j.uncommittedChanges, 0)
        try h.restart()
        XCTAssertEqual(h.scheduler.queueSize, 2, "both tasks are in the journal")
        XCTAssertEqual(h.recovery.queued, 2)
    }

    private func pageCount(_ path: String) throws -> Int64 {
        let q = try DatabaseQueue(path: path, configuration: { var c = Configuration(); c.readonly = true; return c }())
        defer { try? q.close() }
        return try q.read { try Int64.fetchOne($0, sql: "PRAGMA page_count") } ?? 0
    }
}
