import ConveyorOps
import XCTest

/// The restart policy under a manual clock: 1 s doubling to 30 s, back to 1 s after 60 s of health.
final class RestartBackoffTests: XCTestCase {
    /// Time the test moves by hand; the policy never reads a real clock.
    struct ManualClock {
        var now = 1000.0
        mutating func advance(_ s: Double) { now += s }
    }

    func testDoublesFromOneSecondUpToThirty() {
        var clock = ManualClock()
        var b = RestartBackoff()
        var delays: [Double] = []
        for _ in 0..<8 {
            let started = clock.now
            clock.advance(0.5) // crashes half a second after each start
            let d = b.delay(startedAt: started, exitedAt: clock.now)
            delays.append(d)
            clock.advance(d)
        }
        XCTAssertEqual(delays, [1, 2, 4, 8, 16, 30, 30, 30])
    }

    func testSixtySecondsOfHealthResetsTheDelay() {
        var clock = ManualClock()
        var b = RestartBackoff()
        for _ in 0..<4 { _ = b.delay(startedAt: clock.now, exitedAt: clock.now + 1) }
        XCTAssertEqual(b.next, 16)
        let started = clock.now
        clock.advance(59.9)
        XCTAssertEqual(b.delay(startedAt: started, exitedAt: clock.now), 16, "59.9 s is not yet healthy")
        let again = clock.now
        clock.advance(60)
        XCTAssertEqual(b.delay(startedAt: again, exitedAt: clock.now), 1, "60 s up: back to the initial delay")
        XCTAssertEqual(b.next, 2)
    }

    func testCustomBounds() {
        var b = RestartBackoff(initial: 0.5, maximum: 1.5, healthyAfter: 10)
        XCTAssertEqual((0..<4).map { _ in b.delay(startedAt: 0, exitedAt: 1) }, [0.5, 1, 1.5, 1.5])
    }
}
