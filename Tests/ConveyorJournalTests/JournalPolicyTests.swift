import ConveyorCore
import ConveyorJournal
import Foundation
import XCTest

/// Operator and API decisions about task types survive a restart: a paused
/// type stays paused, a held type stays held until its hold runs out.
final class JournalPolicyTests: XCTestCase {
    private let w1 = PeerID(Array("w1".utf8))

    func testPausedAndHeldTypesSurviveARestart() throws {
        let h = try JournalHarness { $0.policy.defaultHoldMs = 30_000 }
        let pdf = try h.submit(TaskSpec(type: "pdf"))
        let yt = try h.submit(TaskSpec(type: "youtube"))
        _ = try h.submit(TaskSpec(type: "doc"))
        h.scheduler.pause(type: "pdf")
        h.scheduler.register(worker: w1, name: "w1", types: ["youtube"], capacity: 1, now: h.now)
        XCTAssertEqual(try h.dispatch().map(\.id), [yt])
        h.scheduler.retryLater(yt, attempt: 1, afterMs: 20_000, from: w1, now: h.now)
        _ = try h.flush()
        XCTAssertEqual(h.scheduler.waitingFor(yt, now: h.now), .held)

        try h.restart()
        XCTAssertEqual(h.scheduler.policy.paused, ["pdf"])
        XCTAssertEqual(h.scheduler.waitingFor(pdf, now: h.now), .paused)
        XCTAssertEqual(h.scheduler.waitingFor(yt, now: h.now), .held, "the hold outlives the restart")
        XCTAssertEqual(h.scheduler.task(yt)?.failures, 0, "a rate-limit answer is not a failed attempt")

        // Resume and release are journaled too.
        h.scheduler.resume(type: "pdf")
        try h.advance(sec(21))
        try h.restart()
        XCTAssertEqual(h.scheduler.policy.paused, [])
        XCTAssertTrue(h.scheduler.policy.holds.isEmpty)
        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 3, now: h.now)
        XCTAssertEqual(Set(try h.dispatch().map(\.id)).count, 3)
    }

    func testAHoldThatRanOutWhileTheBrokerWasDownIsDropped() throws {
        let h = try JournalHarness()
        let t = try h.submit(TaskSpec(type: "youtube"))
        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 1, now: h.now)
        _ = try h.dispatch()
        h.scheduler.retryLater(t, attempt: 1, afterMs: 5_000, from: w1, now: h.now)
        _ = try h.flush()
        h.now += sec(60) // the broker was down for a minute
        try h.restart()
        XCTAssertNil(h.scheduler.policy.blocked("youtube", now: h.now))
    }
}
