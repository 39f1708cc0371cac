import XCTest
@testable import ConveyorCore

/// Junk task types must cost nothing once they are gone: a type's lane is
/// released when its last queued task leaves, the head index does not grow
/// with types that came and went, and `--max-types` bounds the types that
/// may have queued tasks at once.
final class LaneReleaseTests: XCTestCase {
    private func id(_ n: Int) -> TaskID { TaskID(raw: UInt64(n)) }

    func testLanesAreReleasedWhenTheirLastTaskLeaves() {
        var q = ReadyQueue()
        var dead: Set<TaskID> = []
        for n in 0..<100_000 {
            let p = Priority(rawValue: UInt8(n % 4))!
            q.append(id(n), type: "junk\(n)", priority: p)
            if n % 3 == 0 {
                // Dispatched: through the head.
                _ = q.liveHead(type: "junk\(n)", level: Int(p.rawValue), isLive: { _ in true })
                q.removeHead(type: "junk\(n)", priority: p)
            } else {
                // Cancelled: lazily.
                dead.insert(id(n))
                q.forget(type: "junk\(n)", priority: p)
            }
            XCTAssertLessThanOrEqual(q.typeCount, 1)
        }
        XCTAssertEqual(q.typeCount, 0)
        XCTAssertTrue(q.isEmpty)
        for level in 0..<ReadyQueue.levels {
            XCTAssertEqual(q.lanesWithTasks(level: level), 0)
            XCTAssertEqual(q.headIndexSize(level: level), 0, "level \(level)")
        }
    }

    /// A lane with a head that cannot run (a paused type, or no worker for
    /// it) keeps the index non-empty; junk churning behind it must not grow
    /// the index without bound.
    func testHeadIndexStaysBoundedBehindABlockedHead() {
        var q = ReadyQueue()
        q.append(id(1), type: "blocked", priority: .normal)
        var live: Set<TaskID> = [id(1)]
        for n in 2..<50_000 {
            q.append(id(n), type: "junk\(n)", priority: .normal)
            live.insert(id(n))
            if n % 100 == 0 {
                // Now and then a dispatch walks past the blocked head.
                var policy = DispatchPolicy()
                let pick = policy.next(from: &q, now: 0, tasks: Live(isLive: { live.contains($0) }), accepts: { $0 != "blocked" })
                XCTAssertEqual(pick?.entry.id, id(n))
            }
            live.remove(id(n))
            q.forget(type: "junk\(n)", priority: .normal)
            let normal = Int(Priority.normal.rawValue)
            XCTAssertLessThanOrEqual(q.headIndexSize(level: normal), 2 * q.lanesWithTasks(level: normal) + 64)
        }
        XCTAssertEqual(q.typeCount, 1)
        XCTAssertEqual(q.lanesWithTasks(level: Int(Priority.normal.rawValue)), 1)
    }

    /// The index visits lanes best head first, skips dead heads and lanes that
    /// are gone, and never visits a lane twice (a head that became first again
    /// after a prepended task left has two keys).
    func testVisitOrderSkipsDeadAndDuplicateHeads() {
        var q = ReadyQueue()
        q.append(id(1), type: "a", priority: .high)
        q.append(id(2), type: "b", priority: .high)
        q.append(id(3), type: "c", priority: .high)
        q.prepend(id(4), type: "b", priority: .high)
        _ = q.liveHead(type: "b", level: 2, isLive: { _ in true })
        q.removeHead(type: "b", priority: .high) // id 2 is b's first again: a second key
        var dead: Set<TaskID> = [id(1)]
        q.forget(type: "a", priority: .high)
        var seen: [String] = []
        q.visitHeads(level: 2, isLive: { !dead.contains($0) }) { t, _ in seen.append(t); return false }
        XCTAssertEqual(seen, ["b", "c"])
        dead.insert(id(3))
        q.forget(type: "c", priority: .high)
        seen = []
        q.visitHeads(level: 2, isLive: { !dead.contains($0) }) { t, e in seen.append("\(t)\(e.id.raw)"); return false }
        XCTAssertEqual(seen, ["b2"])
    }

    func testSchedulerReleasesJunkTypesSubmittedAndCancelled() {
        var h = Harness()
        let w = h.register("w", types: ["real"])
        for n in 0..<20_000 {
            let junk = h.submit("junk\(n)", Priority(rawValue: UInt8(n % 4))!)
            XCTAssertNoThrow(try h.s.cancel(junk, now: h.now).get())
        }
        XCTAssertEqual(h.s.queuedTypeCount, 0)
        for level in 0..<ReadyQueue.levels { XCTAssertEqual(h.s.readyQueue.headIndexSize(level: level), 0) }
        let real = h.submit("real")
        XCTAssertEqual(h.dispatch(), [Assignment(worker: w, task: real, attempt: 1)])
        _ = h.take()
    }

    func testMaxTypesRejectsANewTypeBeyondTheBound() {
        var h = Harness { $0.maxTypes = 3 }
        let a = h.submit("a"), b = h.submit("b")
        _ = h.submit("c")
        guard case .failure(let r) = h.submitResult(TaskSpec(type: "d")) else { return XCTFail("a fourth type was accepted") }
        XCTAssertEqual(r.code, "too_many_types")
        XCTAssertTrue(r.message.contains("--max-types 3"), r.message)
        // Delayed, but a new type: it is checked like any.
        guard case .failure(let r2) = h.submitResult(TaskSpec(type: "d-later", delayMs: 1000)) else { return XCTFail("accepted") }
        XCTAssertEqual(r2.code, "too_many_types")
        XCTAssertEqual(h.s.counters.rejected, 2)
        // Types already queued take more tasks.
        XCTAssertNoThrow(try h.submitResult(TaskSpec(type: "a")).get())
        // A type whose tasks all left frees its place.
        XCTAssertNoThrow(try h.s.cancel(b, now: h.now).get())
        XCTAssertNoThrow(try h.submitResult(TaskSpec(type: "d")).get())
        _ = a
    }

    /// Tasks that come due or come back are admitted even beyond the bound
    /// (they were accepted once), as they are beyond `--max-queue`.
    func testDueAndRequeuedTasksAreAdmittedBeyondTheBound() {
        var h = Harness { $0.maxTypes = 1 }
        let delayed = h.submit("late", delayMs: 1000)
        _ = h.submit("a")
        h.advance(ms(1000))
        XCTAssertEqual(h.state(delayed), .queued)
        XCTAssertEqual(h.s.queuedTypeCount, 2)
    }
}
