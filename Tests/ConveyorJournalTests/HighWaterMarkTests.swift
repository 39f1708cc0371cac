import ConveyorCore
@testable import ConveyorJournal
import Foundation
import XCTest

/// The high-water mark: a journal that went backwards is refused, a journal
/// that lost nothing never is, and `acceptJournalLoss` starts anyway without
/// handing out an acknowledged id twice.
final class HighWaterMarkTests: SQLiteJournalTestCase {
    private func config(_ dir: URL, durability: JournalConfig.Durability = .fsync, accept: Bool = false) -> JournalConfig {
        var c = JournalConfig()
        c.dataDirectory = dir.path
        c.durability = durability
        c.acceptJournalLoss = accept
        return c
    }

    private func readMark(_ c: JournalConfig) throws -> HighWaterMark? {
        try HighWaterMarkFile(path: c.markPath, sync: false).read()
    }

    /// Opens like the broker (recovering), submits `n` tasks, commits each; returns their ids.
    private func submit(_ n: Int, into j: SQLiteJournal) throws -> [TaskID] {
        var sc = SchedulerConfig()
        sc.maxQueue = 100_000
        var s = Scheduler(config: sc, now: t0, lastID: try j.lastTaskID())
        _ = try j.recover(into: &s, now: t0)
        var out: [SchedulerOutput] = []
        s.drainOutput(into: &out)
        var ids: [TaskID] = []
        for i in 0..<n {
            guard case .success(let a) = s.submit(TaskSpec(type: "t", payload: Array("task \(i)".utf8)), from: nil, now: t0) else {
                throw TestFailure("submission \(i) rejected")
            }
            ids.append(a.id)
            s.drainOutput(into: &out)
            try j.commitEvents(out, s)
        }
        return ids
    }

    private func openError(_ c: JournalConfig, file: StaticString = #filePath, line: UInt = #line) -> JournalError? {
        do {
            let j = try SQLiteJournal(c)
            _ = try? j.close()
            XCTFail("the journal at \(c.journalPath) opened", file: file, line: line)
            return nil
        } catch let e as JournalError {
            return e
        } catch {
            XCTFail("not a JournalError: \(error)", file: file, line: line)
            return nil
        }
    }

    // MARK: The pure comparison

    func testMarkTextRoundTripsAndJunkIsRefused() {
        let m = HighWaterMark(generation: 7, lastID: 0x01a2_3199_5203_0013)
        XCTAssertEqual(HighWaterMark(text: m.text), m)
        XCTAssertTrue(m.text.contains("last_id 01a2319952030013"), m.text)
        for junk in ["", "generation 1\nlast_id 0000000000000001\n", m.text.replacingOccurrences(of: "generation 7", with: "generation -1"),
                     m.text + "generation 8\n", m.text.replacingOccurrences(of: "last_id", with: "lastid"),
                     m.text.replacingOccurrences(of: "01a2319952030013", with: "1a2319952030013")] {
            XCTAssertNil(HighWaterMark(text: junk), "accepted: \(junk.debugDescription)")
        }
    }

    /// Slots: a torn or stray one is ignored, the newest valid one wins, so an
    /// update cut short leaves the previous mark (behind, never ahead).
    func testTornSlotLeavesThePreviousMark() throws {
        let slot = HighWaterMarkFile.encodeSlot(HighWaterMark(generation: 2, lastID: 99), seq: 5)
        XCTAssertEqual(slot.count, HighWaterMarkFile.slotSize)
        XCTAssertEqual(HighWaterMarkFile.decodeSlot(slot[...])?.seq, 5)
        XCTAssertEqual(HighWaterMarkFile.decodeSlot(slot[...])?.mark, HighWaterMark(generation: 2, lastID: 99))
        var torn = slot
        torn[40] ^= 0x01
        XCTAssertNil(HighWaterMarkFile.decodeSlot(torn[...]))

        let dir = try scratch()
        let path = dir.appendingPathComponent("j.hwm").path
        let file = HighWaterMarkFile(path: path, sync: true)
        XCTAssertNil(try file.read())
        let a = HighWaterMark(generation: 1, lastID: 10), b = HighWaterMark(generation: 1, lastID: 20)
        try file.write(a)
        try file.write(b)
        XCTAssertEqual(try HighWaterMarkFile(path: path, sync: false).read(), b)
        XCTAssertEqual((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int), 2 * HighWaterMarkFile.slotSize,
                       "updated in place: the size never changes")
        // Tear the slot that holds b (sequence 2: slot 0).
        let h = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try h.seek(toOffset: 30)
        try h.write(contentsOf: Data("XXXX".utf8))
        try h.close()
        XCTAssertEqual(try HighWaterMarkFile(path: path, sync: false).read(), a)
        // Both torn: unreadable, which the broker refuses rather than guessing.
        try Data(repeating: 0x41, count: 2 * HighWaterMarkFile.slotSize).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try HighWaterMarkFile(path: path, sync: false).read())
    }

    func testShortfallCases() {
        let m = HighWaterMark(generation: 3, lastID: 100)
        XCTAssertEqual(m.shortfall(of: .init(isEmpty: true, generation: 0, lastID: 0)), .emptied)
        XCTAssertEqual(m.shortfall(of: .init(isEmpty: false, generation: 3, lastID: 99)), .missingTasks(journalLastID: 99))
        XCTAssertEqual(m.shortfall(of: .init(isEmpty: false, generation: 2, lastID: 100)), .olderGeneration(journalGeneration: 2))
        XCTAssertEqual(m.shortfall(of: .init(isEmpty: false, generation: 1, lastID: 50)), .missingTasks(journalLastID: 50), "lost tasks are named first")
        // Equal or ahead (the broker stopped between a commit and the mark's update): fine.
        XCTAssertNil(m.shortfall(of: .init(isEmpty: false, generation: 3, lastID: 100)))
        XCTAssertNil(m.shortfall(of: .init(isEmpty: false, generation: 4, lastID: 250)))
        // A mark of a journal that never held anything does not refuse an empty one.
        XCTAssertNil(HighWaterMark(generation: 0, lastID: 0).shortfall(of: .init(isEmpty: true, generation: 0, lastID: 0)))
        let text = m.explain(.missingTasks(journalLastID: 99), markPath: "/d/j.hwm")
        XCTAssertTrue(text.contains("0000000000000063") && text.contains("0000000000000064"), text)
        XCTAssertTrue(text.contains("--accept-journal-loss") && text.contains("/d/j.hwm"), text)
    }

    // MARK: The journal and its mark

    func testMarkFollowsCommitsAndRestartsAreNeverRefused() throws {
        for mode in [JournalConfig.Durability.fsync, .batch] {
            let c = config(try scratch(), durability: mode)
            var j = try SQLiteJournal(c)
            XCTAssertEqual(try readMark(c), HighWaterMark(generation: 1, lastID: 0), "\(mode): a fresh journal starts generation 1")
            let ids = try submit(5, into: j)
            if mode == .fsync {
                XCTAssertEqual(try readMark(c)?.lastID, ids.last?.raw, "fsync: the mark follows each commit that grew the id")
            }
            try j.close()
            XCTAssertEqual(try readMark(c), HighWaterMark(generation: 1, lastID: ids.last?.raw ?? 0), "\(mode): close brings the mark up")
            j = try SQLiteJournal(c)
            XCTAssertEqual(j.generation, 2)
            XCTAssertNil(j.acceptedLoss)
            XCTAssertEqual(try readMark(c)?.generation, 2)
            try j.close()
        }
    }

    /// A kill -9 as the disk sees it (files copied while open, with the mark)
    /// opens again: the mark is never ahead of what was committed.
    func testCrashCopyWithItsWALIsAccepted() throws {
        let c = config(try scratch())
        let j = try SQLiteJournal(c)
        let ids = try submit(20, into: j)
        let copy = config(try scratch())
        for suffix in ["", "-wal"] {
            try FileManager.default.copyItem(atPath: c.journalPath + suffix, toPath: copy.journalPath + suffix)
        }
        try FileManager.default.copyItem(atPath: c.markPath, toPath: copy.markPath)
        try j.close()
        let back = try SQLiteJournal(copy)
        XCTAssertNil(back.acceptedLoss)
        XCTAssertEqual(try back.lastTaskID(), ids.last)
        try back.close()
    }

    func testTruncatedToZeroIsRefusedThenAccepted() throws {
        let c = config(try scratch())
        let j = try SQLiteJournal(c)
        let ids = try submit(3, into: j)
        try j.close()
        XCTAssertEqual(truncate(c.journalPath, 0), 0)

        let e = openError(c)
        XCTAssertEqual(e?.kind, .behindMark)
        XCTAssertTrue(e?.description.contains("it is empty") ?? false, "\(String(describing: e))")
        XCTAssertTrue(e?.description.contains(ids[2].description) ?? false, "names the last acknowledged id: \(String(describing: e))")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: c.journalPath)[.size] as? Int, 0, "a refused journal is not touched")

        var accept = c
        accept.acceptJournalLoss = true
        let a = try SQLiteJournal(accept)
        XCTAssertNotNil(a.acceptedLoss)
        XCTAssertEqual(try a.lastTaskID(), ids[2], "ids continue after the mark: none is handed out twice")
        let fresh = try submit(1, into: a)
        XCTAssertGreaterThan(fresh[0], ids[2])
        try a.close()
        // The mark was reset: the next start needs no flag.
        let again = try SQLiteJournal(c)
        XCTAssertNil(again.acceptedLoss)
        try again.close()
    }

    /// After a clean stop the main file holds everything; the next run's
    /// commits are in the -wal only, and losing it is refused.
    func testLostWALIsRefused() throws {
        let c = config(try scratch())
        var j = try SQLiteJournal(c)
        let before = try submit(4, into: j)
        try j.close()
        j = try SQLiteJournal(c)
        let after = try submit(4, into: j)
        // The main file as it is now, without its -wal: what deleting the -wal after a kill -9 leaves.
        let copy = config(try scratch())
        try FileManager.default.copyItem(atPath: c.journalPath, toPath: copy.journalPath)
        try FileManager.default.copyItem(atPath: c.markPath, toPath: copy.markPath)
        try j.close()

        let e = openError(copy)
        XCTAssertEqual(e?.kind, .behindMark)
        let text = e?.description ?? ""
        XCTAssertTrue(text.contains("ends at task \(before[3])") && text.contains(after[3].description), text)
        XCTAssertTrue(text.contains("-wal"), text)
    }

    func testOldBackupIsRefused() throws {
        let c = config(try scratch())
        var j = try SQLiteJournal(c)
        _ = try submit(2, into: j)
        let backup = try scratch().appendingPathComponent("backup.sqlite").path
        try j.backup(to: backup)
        // Same ids, a later run: refused by generation.
        try j.close()
        j = try SQLiteJournal(c)
        try j.close()
        try replaceJournal(c, with: backup)
        let e = openError(c)
        XCTAssertEqual(e?.kind, .behindMark)
        XCTAssertTrue(e?.description.contains("older copy") ?? false, "\(String(describing: e))")

        // More tasks since the backup: refused by id.
        try replaceJournal(c, with: backup, accept: true)
        j = try SQLiteJournal(c)
        _ = try submit(2, into: j)
        let backup2 = backup + ".2"
        try j.backup(to: backup2)
        _ = try submit(2, into: j)
        try j.close()
        try replaceJournal(c, with: backup2)
        XCTAssertTrue(openError(c)?.description.contains("are missing") ?? false)
    }

    /// Puts `file` in place of the journal (and its -wal, none after a clean stop),
    /// optionally opening it once with `acceptJournalLoss`.
    private func replaceJournal(_ c: JournalConfig, with file: String, accept: Bool = false) throws {
        let fm = FileManager.default
        try? fm.removeItem(atPath: c.journalPath + "-wal")
        try? fm.removeItem(atPath: c.journalPath)
        try fm.copyItem(atPath: file, toPath: c.journalPath)
        if accept {
            var a = c
            a.acceptJournalLoss = true
            let j = try SQLiteJournal(a)
            XCTAssertNotNil(j.acceptedLoss)
            try j.close()
        }
    }

    /// A journal made before the mark existed starts one, with a notice.
    func testJournalWithoutAMarkStartsOne() throws {
        let c = config(try scratch())
        let j = try SQLiteJournal(c)
        let ids = try submit(2, into: j)
        try j.close()
        try FileManager.default.removeItem(atPath: c.markPath)
        let again = try SQLiteJournal(c)
        XCTAssertNotNil(again.markNotice)
        XCTAssertNil(again.acceptedLoss)
        try again.close()
        XCTAssertEqual(try readMark(c)?.lastID, ids[1].raw)
    }

    func testUnreadableMarkIsRefusedUnlessAccepted() throws {
        let c = config(try scratch())
        try SQLiteJournal(c).close()
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: c.markPath))
        XCTAssertEqual(openError(c)?.kind, .corrupt)
        var a = c
        a.acceptJournalLoss = true
        let j = try SQLiteJournal(a)
        XCTAssertNotNil(j.acceptedLoss)
        try j.close()
        XCTAssertNotNil(try readMark(c))
    }

    /// The main file alone, after `close`, holds every task: what an operator copies is complete.
    func testCloseLeavesOneSelfContainedFile() throws {
        let c = config(try scratch())
        let j = try SQLiteJournal(c)
        let ids = try submit(300, into: j)
        XCTAssertTrue(try j.closeCheckpointed(), "checkpointed")
        let copy = config(try scratch())
        try FileManager.default.copyItem(atPath: c.journalPath, toPath: copy.journalPath)
        XCTAssertFalse(FileManager.default.fileExists(atPath: copy.journalPath + "-wal"))
        let check = JournalCheck.run(path: copy.journalPath)
        XCTAssertTrue(check.isHealthy, check.summary)
        XCTAssertEqual(check.counts["queued"], 300)
        XCTAssertEqual(check.position.lastID, ids.last?.raw)
    }
}
