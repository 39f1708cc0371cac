import XCTest
@testable import ConveyorCore

/// The queue's storage, asked through the default (strict-priority) policy the
/// way `Scheduler` asks it: these tests pin today's order exactly.
struct Live: QueuedTasks {
    let isLive: (TaskID) -> Bool
    func isQueued(_ id: TaskID) -> Bool { isLive(id) }
    func waitingSince(_ id: TaskID) -> Timestamp { 0 }
}

extension ReadyQueue {
    mutating func best(isLive: (TaskID) -> Bool, accepts: (String) -> Bool) -> (type: String, priority: Priority, entry: Entry)? {
        var policy = DispatchPolicy()
        return withoutActuallyEscaping(isLive) { f in policy.next(from: &self, now: 0, tasks: Live(isLive: f), accepts: accepts) }
    }

    func inDispatchOrder(isLive: (TaskID) -> Bool, limit: Int) -> [TaskID] {
        withoutActuallyEscaping(isLive) { f in DispatchPolicy().listing(self, now: 0, tasks: Live(isLive: f), limit: limit) }
    }

    func position(of id: TaskID, type: String, priority: Priority, isLive: (TaskID) -> Bool) -> Int? {
        let level = Int(priority.rawValue)
        guard let e = lane(type: type, level: level)?.first(where: { $0.id == id }) else { return nil }
        let policy = DispatchPolicy()
        return withoutActuallyEscaping(isLive) { f in
            policy.position(type: type, own: policy.rank(e, level: level, now: 0, tasks: Live(isLive: f)), ownID: id, in: self, now: 0,
                            tasks: Live(isLive: f))
        }
    }

    /// Where a task appended now would stand.
    func ahead(ofNew priority: Priority, type: String = "new") -> Int {
        DispatchPolicy().position(type: type, own: .init(level: Int(priority.rawValue), order: nextTailOrder), ownID: nil,
                                  in: self, now: 0, tasks: Live(isLive: { _ in true }))
    }
}

final class ReadyQueueTests: XCTestCase {
    private func id(_ n: UInt64) -> TaskID { TaskID(raw: n) }

    /// Pops everything the way `Scheduler.dispatch` does and returns the order.
    private func drain(
        _ q: inout ReadyQueue, dead: Set<TaskID> = [], accepts: (String) -> Bool = { _ in true }
    ) -> [TaskID] {
        var out: [TaskID] = []
        while let pick = q.best(isLive: { !dead.contains($0) }, accepts: accepts) {
            q.removeHead(type: pick.type, priority: pick.priority)
            out.append(pick.entry.id)
        }
        return out
    }

    func testAllFourLevelsInterleavedAreStrictPriorityThenFIFO() {
        var rng = TestRNG(seed: 7)
        var q = ReadyQueue()
        var expected: [Priority: [TaskID]] = [:]
        for n in 1...400 {
            let p = Priority.allCases.randomElement(using: &rng)!
            q.append(id(UInt64(n)), type: "t", priority: p)
            expected[p, default: []].append(id(UInt64(n)))
        }
        XCTAssertEqual(q.count, 400)
        for p in Priority.allCases { XCTAssertEqual(q.count(p), expected[p]?.count ?? 0, "\(p)") }
        let want = Priority.dispatchOrder.flatMap { expected[$0] ?? [] }
        XCTAssertEqual(q.inDispatchOrder(isLive: { _ in true }, limit: .max), want)
        XCTAssertEqual(drain(&q), want)
        XCTAssertTrue(q.isEmpty)
    }

    /// A bounded listing is the prefix of the full one, and `position(of:)`
    /// (counted in place) agrees with the index in the full listing, across
    /// types, levels, head insertions and lazily removed entries.
    func testBoundedListingAndPositionAgreeWithTheFullOrder() {
        var rng = TestRNG(seed: 23)
        var q = ReadyQueue()
        var where_: [TaskID: (String, Priority)] = [:]
        var dead: Set<TaskID> = []
        for n in 1...500 {
            let t = ["pdf", "img", "mail"].randomElement(using: &rng)!
            let p = Priority.allCases.randomElement(using: &rng)!
            let i = id(UInt64(n))
            if n % 7 == 0 { q.prepend(i, type: t, priority: p) } else { q.append(i, type: t, priority: p) }
            where_[i] = (t, p)
            if n % 5 == 0 { dead.insert(i); q.forget(type: t, priority: p) }
        }
        let isLive: (TaskID) -> Bool = { !dead.contains($0) }
        let full = q.inDispatchOrder(isLive: isLive, limit: .max)
        XCTAssertEqual(full.count, q.count)
        for k in [0, 1, 2, 17, 100, 399, 400, 1000] {
            XCTAssertEqual(q.inDispatchOrder(isLive: isLive, limit: k), Array(full.prefix(k)), "limit \(k)")
        }
        for (index, i) in full.enumerated() {
            let (t, p) = where_[i]!
            XCTAssertEqual(q.position(of: i, type: t, priority: p, isLive: isLive), index, "\(i)")
        }
        var copy = q
        XCTAssertEqual(drain(&copy, dead: dead), full, "the listing is the dispatch order")
    }

    func testFIFOWithinALevelAcrossTypes() {
        var rng = TestRNG(seed: 11)
        var q = ReadyQueue()
        var want: [TaskID] = []
        for n in 1...300 {
            let t = ["pdf", "img", "mail", "x"].randomElement(using: &rng)!
            q.append(id(UInt64(n)), type: t, priority: .high)
            want.append(id(UInt64(n)))
        }
        XCTAssertEqual(q.inDispatchOrder(isLive: { _ in true }, limit: .max), want)
        XCTAssertEqual(drain(&q), want)
    }

    /// Queue order is the order tasks *joined* the level, not their ids or any
    /// submission number: a task that comes due late joins the tail (spec §9.1).
    func testOrderIsJoinOrderNotIDOrder() {
        var q = ReadyQueue()
        q.append(id(50), type: "b", priority: .normal)
        q.append(id(1), type: "a", priority: .normal) // an old task that just came due
        q.append(id(60), type: "b", priority: .normal)
        XCTAssertEqual(q.inDispatchOrder(isLive: { _ in true }, limit: .max), [id(50), id(1), id(60)])
        XCTAssertEqual(drain(&q), [id(50), id(1), id(60)])
    }

    func testTypesNoWorkerAcceptsDoNotBlockOthers() {
        var q = ReadyQueue()
        q.append(id(1), type: "gpu", priority: .urgent)
        q.append(id(2), type: "gpu", priority: .low)
        q.append(id(3), type: "cpu", priority: .low)
        q.append(id(4), type: "cpu", priority: .normal)
        let order = drain(&q, accepts: { $0 == "cpu" })
        XCTAssertEqual(order, [id(4), id(3)])
        XCTAssertEqual(q.count, 2)
        XCTAssertEqual(drain(&q), [id(1), id(2)])
    }

    func testPrependPutsTaskAtHeadOfItsLevelAcrossTypes() {
        var q = ReadyQueue()
        q.append(id(1), type: "a", priority: .normal)
        q.append(id(2), type: "b", priority: .normal)
        q.append(id(3), type: "a", priority: .high)
        // Reassigned tasks of a worker go back in reverse, so the earliest ends first.
        q.prepend(id(9), type: "b", priority: .normal)
        q.prepend(id(8), type: "c", priority: .normal)
        XCTAssertEqual(q.count, 5)
        XCTAssertEqual(q.count(.normal), 4)
        let want = [id(3), id(8), id(9), id(1), id(2)]
        XCTAssertEqual(q.inDispatchOrder(isLive: { _ in true }, limit: .max), want)
        XCTAssertEqual(drain(&q), want)
    }

    func testLazyRemovalKeepsCountsOfLiveEntriesOnly() {
        var q = ReadyQueue()
        for n in 1...6 { q.append(id(UInt64(n)), type: n % 2 == 0 ? "a" : "b", priority: n <= 3 ? .high : .low) }
        // The caller marks 2 and 5 not queued, then tells the queue.
        let dead: Set<TaskID> = [id(2), id(5)]
        q.forget(type: "a", priority: .high)
        q.forget(type: "b", priority: .low)
        XCTAssertEqual(q.count, 4)
        XCTAssertEqual(q.count(.high), 2)
        XCTAssertEqual(q.count(.low), 2)
        XCTAssertEqual(q.ahead(ofNew: .high), 2)
        XCTAssertEqual(q.ahead(ofNew: .low), 4)
        XCTAssertEqual(q.ahead(ofNew: .urgent), 0)
        XCTAssertEqual(q.inDispatchOrder(isLive: { !dead.contains($0) }, limit: .max), [id(1), id(3), id(4), id(6)])
        XCTAssertEqual(drain(&q, dead: dead), [id(1), id(3), id(4), id(6)])
        XCTAssertEqual(q.count, 0)
        XCTAssertTrue(q.isEmpty)
        XCTAssertNil(q.best(isLive: { _ in true }, accepts: { _ in true }), "dead entries must not resurface")
    }

    func testDeadHeadIsSkippedEvenWhenAnotherTypeIsOlder() {
        var q = ReadyQueue()
        q.append(id(1), type: "a", priority: .normal)
        q.append(id(2), type: "b", priority: .normal)
        q.append(id(3), type: "a", priority: .normal)
        q.forget(type: "a", priority: .normal)
        XCTAssertEqual(drain(&q, dead: [id(1)]), [id(2), id(3)])
    }

    func testListingLimit() {
        var q = ReadyQueue()
        for n in 1...10 { q.append(id(UInt64(n)), type: "t", priority: n % 2 == 0 ? .urgent : .low) }
        XCTAssertEqual(q.inDispatchOrder(isLive: { _ in true }, limit: 3), [id(2), id(4), id(6)])
        XCTAssertEqual(q.inDispatchOrder(isLive: { _ in true }, limit: 0), [])
    }
}

final class PriorityAndStateTests: XCTestCase {
    func testPriorityOrderingNamesAndParsing() {
        XCTAssertEqual(Priority.dispatchOrder, [.urgent, .high, .normal, .low])
        XCTAssertTrue(Priority.low < .normal && Priority.normal < .high && Priority.high < .urgent)
        XCTAssertEqual(Priority.allCases.map(\.rawValue), [0, 1, 2, 3])
        XCTAssertEqual(Priority.allCases.map(\.name), ["LOW", "NORMAL", "HIGH", "URGENT"])
        for p in Priority.allCases {
            XCTAssertEqual(Priority(parsing: String(p.rawValue)), p)
            XCTAssertEqual(Priority(parsing: p.name.lowercased()), p)
            XCTAssertEqual(Priority(parsing: p.name), p)
        }
        for bad in ["", "4", "-1", "02", "hi", " high", "urgent!"] { XCTAssertNil(Priority(parsing: bad), bad) }
    }

    func testStateWireNamesAndFinality() {
        XCTAssertEqual(TaskState.allCases.map(\.rawValue),
                       ["delayed", "queued", "running", "succeeded", "failed", "timed_out", "cancelled"])
        XCTAssertEqual(TaskState.allCases.filter(\.isFinal), [.succeeded, .failed, .timedOut, .cancelled])
        for s in TaskState.allCases { XCTAssertEqual(TaskState(code: s.code), s) }
        XCTAssertEqual(Set(TaskState.allCases.map(\.code)).count, TaskState.allCases.count)
    }

    /// The whole transition table, every pair: spec §5.10 plus the operator's
    /// retry of a dead-lettered task (failed/timed_out → queued).
    func testCanMoveTable() {
        let allowed: Set<String> = [
            "delayed>queued", "delayed>cancelled",
            "queued>running", "queued>cancelled",
            // A task whose attempt counter is spent fails without a dispatch.
            "queued>failed",
            "running>succeeded", "running>failed", "running>timed_out", "running>cancelled",
            "running>queued", "running>delayed",
            "failed>queued", "timed_out>queued",
        ]
        for from in TaskState.allCases {
            for to in TaskState.allCases {
                let key = "\(from.rawValue)>\(to.rawValue)"
                XCTAssertEqual(from.canMove(to: to), allowed.contains(key), key)
            }
        }
        // Nothing leaves succeeded or cancelled, and nothing stays put.
        for to in TaskState.allCases {
            XCTAssertFalse(TaskState.succeeded.canMove(to: to))
            XCTAssertFalse(TaskState.cancelled.canMove(to: to))
            XCTAssertFalse(to.canMove(to: to))
        }
    }
}
