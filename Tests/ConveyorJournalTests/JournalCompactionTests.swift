import ConveyorCore
import ConveyorJournal
import Foundation
import XCTest

/// Finished tasks expire after the TTL and compaction gives their space back,
/// so that the file stays bounded under steady load instead of only growing.
final class JournalCompactionTests: XCTestCase {
    private let w = PeerID(Array("w".utf8))

    /// 20 cycles of 500 tasks (2 KiB payload, 1 KiB result), half a TTL apart,
    /// with the broker's per-minute compaction after each: the file reaches a
    /// plateau (about two cycles of results) and stays there, while 30 MiB
    /// went through it.
    func testSteadyLoadKeepsTheFileBounded() throws {
        let h = try JournalHarness(durability: .batch) { $0.resultTTLSeconds = 10; $0.maxFinishedInMemory = 100; $0.maxRunning = 100_000; $0.maxWorkerCapacity = 100_000 }
        h.scheduler.register(worker: w, name: "w", types: nil, capacity: 100_000, now: h.now)
        try TestBackend.requireSQLite()
        guard let journal = h.sqlite else { return XCTFail("no journal") }
        let payload = [UInt8](repeating: 0x61, count: 2048)
        let result = [UInt8](repeating: 0x62, count: 1024)
        var sizes: [Int] = []
        for _ in 0..<20 {
            for _ in 0..<500 {
                _ = h.scheduler.submit(TaskSpec(type: "t", payload: payload), from: nil, now: h.now)
            }
            try h.flush()
            let running = try h.dispatch()
            XCTAssertEqual(running.count, 500)
            for a in running { h.scheduler.succeeded(a.id, attempt: a.attempt, result: result, from: w, now: h.now) }
            try h.flush()
            try h.advance(sec(6))
            try journal.compact(olderThan: h.now - sec(10))
            sizes.append(journal.diskBytes)
        }
        print("journal bytes after each cycle: \(sizes)")
        let retained = try journal.countByState()
        XCTAssertEqual(retained.keys.sorted(), ["succeeded"])
        XCTAssertLessThanOrEqual(retained["succeeded"] ?? 0, 1000, "only results within the TTL are kept")
        let plateau = sizes[3...6].max() ?? 0
        let late = sizes[14...].max() ?? 0
        XCTAssertLessThanOrEqual(late, plateau + plateau / 4, "the file must not keep growing: \(sizes)")
        XCTAssertLessThan(late, 4 << 20, "about two cycles of 1 KiB results, not the 30 MiB written: \(sizes)")

        // Load stops: once everything expired the file shrinks back.
        try h.advance(sec(11))
        try journal.compact(olderThan: h.now - sec(10))
        XCTAssertEqual(try journal.countByState(), [:])
        XCTAssertLessThan(journal.diskBytes, 256 << 10, "incremental vacuum returns the space")
    }

    /// Compaction deletes expired finished rows only: never unfinished tasks,
    /// however old, nor results still within the TTL.
    func testCompactionDeletesOnlyExpiredResults() throws {
        let h = try JournalHarness { $0.resultTTLSeconds = 100 }
        guard let journal = h.journal else { return XCTFail("no journal") }
        let old = try h.submit(TaskSpec(type: "old"))
        let oldDelayed = try h.submit(TaskSpec(type: "old", delayMs: 10_000_000))
        h.scheduler.register(worker: w, name: "w", types: nil, capacity: 1, now: h.now)
        try h.dispatch()
        try h.succeed(old)
        let stillQueued = try h.submit(TaskSpec(type: "queued"))
        h.now += sec(200)
        let recent = try h.submit(TaskSpec(type: "recent"))
        try h.dispatch()
        try h.succeed(stillQueued)
        _ = recent
        try journal.compact(olderThan: h.now - sec(100))
        XCTAssertNil(try h.lookup(old), "expired result deleted")
        XCTAssertNotNil(try h.lookup(oldDelayed), "an unfinished task is never compacted")
        XCTAssertNotNil(try h.lookup(stillQueued), "a result within the TTL is kept")
        XCTAssertNotNil(try h.lookup(recent))
    }
}
