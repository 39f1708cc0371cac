import ConveyorCore
import ConveyorJournal
import Foundation
import GRDB
import XCTest

/// A journal that cannot be trusted or written stops the broker with a
/// message naming the file; it never starts empty silently.
final class JournalFailureTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("conveyor-journal-fail-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        try TestBackend.requireSQLite()
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: scratch)
        super.tearDown()
    }

    private func config(_ dir: URL) -> JournalConfig {
        var c = JournalConfig()
        c.dataDirectory = dir.path
        c.durability = .fsync
        return c
    }

    /// Opens and recovers like the broker; returns the error it stops with.
    private func startError(_ c: JournalConfig, file: StaticString = #filePath, line: UInt = #line) -> JournalError? {
        do {
            let j = try SQLiteJournal(c)
            var s = Scheduler(config: SchedulerConfig(), now: t0)
            _ = try j.recover(into: &s, now: t0)
            XCTFail("the journal at \(c.journalPath) opened and recovered", file: file, line: line)
            return nil
        } catch let e as JournalError {
            XCTAssertTrue(e.description.contains(c.journalPath), "message must name the file: \(e)", file: file, line: line)
            return e
        } catch {
            XCTFail("not a JournalError: \(error)", file: file, line: line)
            return nil
        }
    }

    func testGarbageFileIsCorrupt() throws {
        let c = config(scratch)
        var rng = TestRNG(seed: 7)
        let junk = (0..<65536).map { _ in UInt8.random(in: 0...255, using: &rng) }
        try Data(junk).write(to: URL(fileURLWithPath: c.journalPath))
        XCTAssertEqual(startError(c)?.kind, .corrupt)
    }

    /// A journal with data whose pages were overwritten (a bad disk, a bad copy).
    func testDamagedPagesAreCorrupt() throws {
        let c = config(scratch)
        do {
            let j = try SQLiteJournal(c)
            var sc = SchedulerConfig()
            sc.maxQueue = 10_000
            var s = Scheduler(config: sc, now: t0)
            for i in 0..<2000 {
                _ = s.submit(TaskSpec(type: "t", payload: [UInt8](repeating: UInt8(i % 251), count: 400)), from: nil, now: t0)
            }
            var out: [SchedulerOutput] = []
            s.drainOutput(into: &out)
            try j.commitEvents(out, s)
            try j.close()
        }
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: c.journalPath))
        let size = try handle.seekToEnd()
        XCTAssertGreaterThan(size, 200_000)
        try handle.seek(toOffset: 2 * 4096)
        try handle.write(contentsOf: Data(repeating: 0x5A, count: Int(size) - 3 * 4096))
        try handle.close()
        XCTAssertEqual(startError(c)?.kind, .corrupt)
    }

    func testForeignSQLiteDatabaseIsRefused() throws {
        let c = config(scratch)
        let other = try DatabaseQueue(path: c.journalPath)
        try other.write { try $0.execute(sql: "CREATE TABLE invoices (id INTEGER PRIMARY KEY)") }
        try other.close()
        XCTAssertEqual(startError(c)?.kind, .incompatible)
    }

    func testJournalFromANewerVersionIsRefused() throws {
        let c = config(scratch)
        try SQLiteJournal(c).close()
        let raw = try DatabaseQueue(path: c.journalPath)
        try raw.writeWithoutTransaction { try $0.execute(sql: "PRAGMA user_version = 99") }
        try raw.close()
        let e = startError(c)
        XCTAssertEqual(e?.kind, .incompatible)
        XCTAssertTrue(e?.description.contains("newer") ?? false, "\(String(describing: e))")
    }

    func testDataDirectoryThatCannotBeCreated() throws {
        let blocker = scratch.appendingPathComponent("a-file")
        try Data("x".utf8).write(to: blocker)
        let c = config(blocker.appendingPathComponent("data"))
        XCTAssertEqual(startError(c)?.kind, .cannotCreateDirectory)
        let c2 = config(blocker)
        XCTAssertEqual(startError(c2)?.kind, .cannotCreateDirectory)
    }

    func testJournalPathThatIsNotAFile() throws {
        let c = config(scratch)
        try FileManager.default.createDirectory(atPath: c.journalPath, withIntermediateDirectories: true)
        XCTAssertEqual(startError(c)?.kind, .unwritable)
    }

    /// Two brokers on one data directory would corrupt each other's queue.
    func testSecondBrokerOnTheSameJournalIsRefused() throws {
        let c = config(scratch)
        let first = try SQLiteJournal(c)
        defer { _ = try? first.close() }
        var s = Scheduler(config: SchedulerConfig(), now: t0)
        _ = try first.recover(into: &s, now: t0)
        _ = s.submit(TaskSpec(type: "t"), from: nil, now: t0)
        var out: [SchedulerOutput] = []
        s.drainOutput(into: &out)
        try first.commitEvents(out, s)
        XCTAssertEqual(startError(c)?.kind, .locked)
    }

    func testDurabilityNoneOpensNothing() throws {
        var c = config(scratch.appendingPathComponent("never"))
        c.durability = .none
        XCTAssertNil(try SQLiteJournal.open(c))
        XCTAssertFalse(FileManager.default.fileExists(atPath: c.dataDirectory))
    }
}
