import XCTest
@testable import ConveyorCore

/// What the core hands a journal backend: one coalesced change per task per
/// loop iteration, and rows validated when they come back — the policy every
/// backend shares.
final class JournalBatchTests: XCTestCase {
    private func scheduler() -> Scheduler {
        var c = SchedulerConfig()
        c.maxRunning = 10
        return Scheduler(config: c, now: t0)
    }

    private func events(_ s: inout Scheduler) -> [TaskEvent] {
        var out: [SchedulerOutput] = []
        s.drainOutput(into: &out)
        return out.compactMap { if case .event(let e) = $0 { e } else { nil } }
    }

    /// Submitted, dispatched and finished in one iteration: one new row, in its final state.
    func testOneIterationCoalescesToOneInsertPerTask() throws {
        var s = scheduler()
        guard case .success(let a) = s.submit(TaskSpec(type: "t", payload: [1, 2]), from: nil, now: t0) else { return XCTFail("rejected") }
        _ = s.register(worker: peer("w"), name: "w", types: nil, capacity: 1, now: t0)
        s.dispatch(now: t0)
        s.succeeded(a.id, attempt: 1, result: [9], from: peer("w"), now: t0 + ms(5))
        var batch = JournalBatch()
        for e in events(&s) { batch.note(e, task: e.taskID.flatMap { s.task($0) }) }
        XCTAssertEqual(batch.order, [a.id])
        guard case .upsert(let t, let isNew)? = batch.changes[a.id] else { return XCTFail("no upsert") }
        XCTAssertTrue(isNew, "never written before: the whole row")
        XCTAssertEqual(t.state, .succeeded)
        XCTAssertEqual(batch.largestID, a.id.raw)
        var rows: [StoredTask] = []
        batch.forEachRow({ row, _ in rows.append(row) }, delete: { _ in XCTFail("no delete") })
        XCTAssertEqual(rows.first?.state, "succeeded")
        XCTAssertEqual(rows.first?.result, [9])
        XCTAssertEqual(rows.first?.payload, [], "finished before it was written: the handler has run, the payload is not kept")
        XCTAssertTrue(rows.first?.clearsPayload ?? false, "done and not dead: the payload may go")
    }

    /// A batch not yet written (its commit failed) goes on staging: a later
    /// change of a task keeps it "new" (the row is still not on disk), a
    /// change of a written one is an update, and a purge is a delete.
    func testStagingAcrossIterationsKeepsNewRowsAndDeletesWin() throws {
        var s = scheduler()
        guard case .success(let a) = s.submit(TaskSpec(type: "t"), from: nil, now: t0) else { return XCTFail("rejected") }
        var unwritten = JournalBatch()
        for e in events(&s) { unwritten.note(e, task: e.taskID.flatMap { s.task($0) }) }
        _ = s.cancel(a.id, now: t0 + ms(1))
        let later = events(&s)
        var written = JournalBatch()
        for e in later { written.note(e, task: e.taskID.flatMap { s.task($0) }) }
        guard case .upsert(_, false)? = written.changes[a.id] else { return XCTFail("an update on its own") }
        for e in later { unwritten.note(e, task: e.taskID.flatMap { s.task($0) }) }
        guard case .upsert(let t, true)? = unwritten.changes[a.id] else { return XCTFail("still new: never written") }
        XCTAssertEqual(t.state, .cancelled)
        unwritten.note(.purged(a.id), task: nil)
        guard case .delete? = unwritten.changes[a.id] else { return XCTFail("purged: deleted") }
        XCTAssertEqual(unwritten.order, [a.id], "one entry per task")
        unwritten.removeAll()
        XCTAssertTrue(unwritten.isEmpty)
    }

    /// Pauses and holds ride along; progress and worker events are not state.
    func testTypeStateIsStagedAndTransientEventsAreNot() {
        var b = JournalBatch()
        b.note(.typePaused(type: "pdf"), task: nil)
        b.note(.typeHeld(type: "llm", until: t0), task: nil)
        b.note(.typeReleased(type: "llm"), task: nil)
        b.note(.workerJoined(name: "w", types: [], capacity: 1), task: nil)
        XCTAssertEqual(b.pauses, ["pdf": true])
        XCTAssertEqual(b.holds, ["llm": 0])
        XCTAssertTrue(b.order.isEmpty)
        XCTAssertEqual(b.count, 2)
    }

    /// A row read back is validated, not trusted: clamped values are named,
    /// impossible rows rejected — for every backend alike.
    func testStoredRowsAreClampedOrRejected() throws {
        let ok = StoredTask(TaskRecord(id: TaskID(raw: 7), seq: 1, createdAt: t0, type: "t", priority: .high, payload: [1],
                                       timeoutMs: 1000, maxAttempts: 2))
        var repairs: [String] = []
        let back = try ok.record(defaultTimeoutMs: 5000, now: t0, repairs: &repairs)
        XCTAssertEqual(back.priority, .high)
        XCTAssertEqual(back.payload, [1])
        XCTAssertTrue(repairs.isEmpty)

        var bad = ok
        bad.attempt = 70_000
        bad.priority = 9
        bad.timeoutMs = 0
        bad.failures = 50
        let fixed = try bad.record(defaultTimeoutMs: 5000, now: t0, repairs: &repairs)
        XCTAssertEqual(fixed.attempt, UInt16.max)
        XCTAssertEqual(fixed.priority, .urgent)
        XCTAssertEqual(fixed.timeoutMs, 5000, "unusable timeout: the broker's default")
        XCTAssertEqual(fixed.failures, 2, "no more failures than attempts allowed")
        XCTAssertEqual(repairs.count, 1)
        XCTAssertTrue(repairs[0].contains(TaskID(raw: 7).description) && repairs[0].contains("attempt 70000"), repairs[0])

        var finishedNoTime = ok
        finishedNoTime.state = "failed"
        repairs = []
        XCTAssertEqual(try finishedNoTime.record(defaultTimeoutMs: 5000, now: t0 + 1, repairs: &repairs).details?.finishedAt, t0 + 1)
        XCTAssertEqual(repairs.count, 1)

        var unknown = ok
        unknown.state = "exploded"
        XCTAssertThrowsError(try unknown.record(defaultTimeoutMs: 5000, now: t0, repairs: &repairs)) {
            XCTAssertTrue("\($0)".contains("exploded"))
        }
        var untyped = ok
        untyped.type = ""
        XCTAssertThrowsError(try untyped.record(defaultTimeoutMs: 5000, now: t0, repairs: &repairs))
    }
}
