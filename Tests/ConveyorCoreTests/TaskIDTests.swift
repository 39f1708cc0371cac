import XCTest
@testable import ConveyorCore

final class TaskIDTests: XCTestCase {
    func testTextAndBytesRoundTrip() {
        for raw: UInt64 in [0, 1, 0xabc, 0x0190_f3c2_a1b2_0001, .max] {
            let id = TaskID(raw: raw)
            XCTAssertEqual(id.description.count, 16)
            XCTAssertEqual(id.description, id.description.lowercased())
            XCTAssertEqual(TaskID(id.description), id)
            XCTAssertEqual(TaskID(bytes: id.bytes), id)
            XCTAssertEqual(id.bytes, Array(id.description.utf8))
        }
        XCTAssertEqual(TaskID("0190f3c2a1b20001")?.raw, 0x0190_f3c2_a1b2_0001)
        XCTAssertEqual(TaskID("0190F3C2A1B20001")?.raw, 0x0190_f3c2_a1b2_0001, "text parsing takes either case")
    }

    func testRejectsAnythingButSixteenHexDigits() {
        for bad in ["", "0190f3c2a1b2000", "0190f3c2a1b200011", "0190f3c2a1b2000g", " 190f3c2a1b20001",
                    "0x90f3c2a1b20001", "0190f3c2a1b2000\u{0}"] {
            XCTAssertNil(TaskID(bad), bad.debugDescription)
            XCTAssertNil(TaskID(bytes: Array(bad.utf8)), bad.debugDescription)
        }
    }

    /// Regression: `UInt64(_:radix:)` accepts a sign, so "+00000000000000f" parsed as 15.
    func testRejectsSigns() {
        XCTAssertNil(TaskID("+00000000000000f"))
        XCTAssertNil(TaskID("-000000000000000"))
    }

    func testOrderIsNumericAndLexicographic() {
        var rng = TestRNG(seed: 3)
        let ids = (0..<500).map { _ in TaskID(raw: rng.next() >> UInt64.random(in: 0...63, using: &rng)) }
        XCTAssertEqual(ids.sorted().map(\.description), ids.map(\.description).sorted())
    }

    func testGeneratorIsMonotonicWithinARun() {
        var g = TaskIDGenerator(now: t0)
        var last = g.make()
        XCTAssertEqual(last.raw, UInt64(t0 / 1000) << 16, "high bits are the start time in ms")
        for _ in 0..<10_000 {
            let next = g.make()
            XCTAssertGreaterThan(next, last)
            last = next
        }
    }

    /// Ids keep increasing across restarts: with the journal's last id even if the
    /// clock went backwards, and from the clock alone when time has passed.
    func testGeneratorIsMonotonicAcrossRestarts() {
        var g1 = TaskIDGenerator(now: t0)
        var last = TaskID(raw: 0)
        for _ in 0..<70_000 { last = g1.make() } // more than one millisecond's worth of ids
        // Restarted with the journal, clock set back an hour.
        var g2 = TaskIDGenerator(now: t0 - sec(3600), after: last)
        let first2 = g2.make()
        XCTAssertEqual(first2.raw, last.raw + 1)
        // Restarted with the journal, a second later: the clock is ahead of the journal.
        var g3 = TaskIDGenerator(now: t0 + sec(1), after: first2)
        XCTAssertGreaterThan(g3.make(), first2)
        // Restarted without a journal, a second later (fewer than 65,536,000 ids were made).
        var g4 = TaskIDGenerator(now: t0 + sec(1))
        XCTAssertGreaterThan(g4.make(), last)
        // The scheduler takes the journal's last id too.
        var h = Harness(now: t0 - sec(10), lastID: last)
        XCTAssertGreaterThan(h.submit(), last)
    }
}
