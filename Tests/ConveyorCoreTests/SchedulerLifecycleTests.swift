import XCTest
@testable import ConveyorCore

/// Retries, dead letters, idempotency, delayed tasks, eviction and recovery.
final class SchedulerLifecycleTests: XCTestCase {
    private func retryAt(_ out: [SchedulerOutput], _ id: TaskID) -> Timestamp? {
        for e in out.compactMap(\.event) {
            if case .retrying(let t, let at, _) = e, t == id { return at }
        }
        return nil
    }

    /// Fails the task's current attempt on `w` and returns the retry time.
    private func failOnce(_ h: inout Harness, _ id: TaskID, _ w: PeerID, file: StaticString = #filePath, line: UInt = #line) -> Timestamp? {
        let a = h.dispatch()
        XCTAssertEqual(a.map(\.task), [id], file: file, line: line)
        _ = h.take()
        h.s.failed(id, attempt: a.first?.attempt ?? 0, error: "boom", from: w, now: h.now)
        return retryAt(h.take(), id)
    }

    func testRetriesBackOffWithCappedEqualJitterThenDeadLetter() {
        var h = Harness()
        let w = h.register("w")
        let id = h.submit(maxAttempts: 4, backoffMs: 1000, backoffMaxMs: 3000)
        // k-th failure: min(3000, 1000·2^(k−1)) ms, equal jitter → [exp/2, exp).
        for (k, expMs) in [(1, Int64(1000)), (2, 2000), (3, 3000)] {
            guard let at = failOnce(&h, id, w) else { return XCTFail("no retry after failure \(k)") }
            let delay = at - h.now
            XCTAssertGreaterThanOrEqual(delay, ms(expMs) / 2, "failure \(k)")
            XCTAssertLessThan(delay, ms(expMs), "failure \(k)")
            XCTAssertEqual(h.state(id), .delayed)
            XCTAssertEqual(h.s.task(id)?.failures, UInt16(k))
            XCTAssertEqual(h.s.task(id)?.details?.runAt, at)
            XCTAssertEqual(h.s.delayed, 1)
            XCTAssertEqual(h.s.nextDeadline.map { $0 <= at }, true)
            // Not due a microsecond early; due exactly at run_at.
            h.advance(at - 1 - h.now)
            XCTAssertEqual(h.state(id), .delayed)
            h.advance(1)
            XCTAssertEqual(h.state(id), .queued)
            XCTAssertEqual(h.take().compactMap(\.event).map(\.name), ["due"])
        }
        let a = h.dispatch()
        XCTAssertEqual(a.first?.attempt, 4)
        _ = h.take()
        h.s.failed(id, attempt: 4, error: "boom 4", from: w, now: h.now)
        let out = h.take()
        XCTAssertNil(retryAt(out, id))
        XCTAssertEqual(h.state(id), .failed)
        XCTAssertEqual(h.s.task(id)?.details?.error, "boom 4")
        XCTAssertEqual(h.s.deadLetters.map(\.id), [id])
        XCTAssertEqual(out.compactMap(\.finished), [Finished(client: h.client, task: id, state: .failed, body: Array("boom 4".utf8))])
        XCTAssertEqual(h.s.counters.retried, 3)
        XCTAssertEqual(h.s.counters.failed, 1)
    }

    func testNoFinishedNotificationForAnAttemptThatWillBeRetried() {
        var h = Harness()
        let w = h.register("w")
        let id = h.submit(maxAttempts: 2)
        _ = h.dispatch()
        _ = h.take()
        h.s.failed(id, attempt: 1, error: "x", from: w, now: h.now)
        XCTAssertEqual(h.take().compactMap(\.finished), [])
    }

    func testJitterIsSpreadCappedForHugeAttemptCountsAndSeeded() {
        func delays(seed: UInt64) -> [Timestamp] {
            var h = Harness(seed: seed)
            let w = h.register("w", capacity: 50)
            let ids = (0..<40).map { _ in h.submit(maxAttempts: 100, backoffMs: 1000, backoffMaxMs: 60_000) }
            h.dispatch()
            _ = h.take()
            for id in ids { h.s.failed(id, attempt: 1, error: "x", from: w, now: h.now) }
            let out = h.take()
            return ids.map { retryAt(out, $0)! - h.now }
        }
        let a = delays(seed: 1)
        XCTAssertEqual(a, delays(seed: 1), "same seed, same jitter")
        XCTAssertNotEqual(a, delays(seed: 2))
        XCTAssertTrue(a.allSatisfy { $0 >= ms(500) && $0 < ms(1000) })
        XCTAssertGreaterThan(Set(a).count, 30, "jitter is spread, not constant")
        XCTAssertLessThan(a.min()!, ms(650))
        XCTAssertGreaterThan(a.max()!, ms(850))

        // 2^(k−1) with a large k must neither overflow nor exceed the cap.
        var h = Harness()
        let w = h.register("w")
        let id = h.submit(maxAttempts: 100, backoffMs: 1000, backoffMaxMs: 5000)
        for k in 1...70 {
            guard let at = failOnce(&h, id, w) else { return XCTFail("no retry") }
            let exp = ms(min(5000, 1000 << Int64(min(k - 1, 20))))
            XCTAssertGreaterThanOrEqual(at - h.now, exp / 2, "failure \(k)")
            XCTAssertLessThan(at - h.now, exp, "failure \(k)")
            h.advance(at - h.now)
        }
    }

    func testTimeoutCountsAsAFailedAttemptForRetries() {
        var h = Harness()
        let w = h.register("w")
        let id = h.submit(timeoutMs: 100, maxAttempts: 2, backoffMs: 10)
        h.dispatch()
        _ = h.take()
        h.advance(ms(100))
        let out = h.take()
        XCTAssertEqual(out.compactMap(\.workerCancel), [WorkerCancel(worker: w, task: id, attempt: 1, reason: .timedOut)])
        XCTAssertNotNil(retryAt(out, id))
        XCTAssertEqual(h.state(id), .delayed)
        XCTAssertEqual(h.s.task(id)?.details?.error, "timed out after 100 ms")
        h.advance(ms(10))
        h.dispatch()
        h.advance(ms(100))
        XCTAssertEqual(h.state(id), .timedOut)
        XCTAssertEqual(h.s.counters.timedOut, 1)
        XCTAssertEqual(h.s.counters.retried, 1)
    }

    /// Regression: a delayed or retried task that comes due joins the *tail* of
    /// its level (§9.1), behind tasks of other types queued before it came due.
    /// Keyed on submission order it used to jump ahead of them.
    func testTaskThatComesDueJoinsTheTailOfItsLevelAcrossTypes() {
        var h = Harness()
        let early = h.submit("a", .normal, delayMs: 1000)
        let b1 = h.submit("b", .normal)
        let retried = h.submit("c", .normal, maxAttempts: 2, backoffMs: 100, backoffMaxMs: 100)
        let w = h.register("c-only", types: ["c"])
        XCTAssertEqual(h.dispatch().map(\.task), [retried])
        h.s.failed(retried, attempt: 1, error: "x", from: w, now: h.now)
        h.advance(ms(100))
        XCTAssertEqual(h.state(retried), .queued)
        let b2 = h.submit("b", .normal)
        h.advance(ms(900))
        XCTAssertEqual(h.state(early), .queued)
        let b3 = h.submit("b", .normal)
        let want = [b1, retried, b2, early, b3]
        XCTAssertEqual(h.queuedIDs(), want)
        for (i, id) in want.enumerated() { XCTAssertEqual(h.s.queuePosition(of: id, now: h.now), i) }
        let any = h.register("any", capacity: 10)
        h.s.drain(worker: w)
        XCTAssertEqual(h.dispatch().map(\.task), want)
        XCTAssertTrue(h.dispatch().isEmpty)
        _ = any
    }

    func testDelayedTasksComeDueInRunAtOrder() {
        var h = Harness()
        let late = h.submit(delayMs: 3000)
        let soon = h.submit(runAt: h.now + ms(1000))
        let mid = h.submit(delayMs: 2000)
        let past = h.submit(runAt: h.now - ms(5000))
        XCTAssertEqual(h.state(past), .queued, "a time in the past means now")
        XCTAssertEqual(h.s.delayed, 3)
        XCTAssertEqual(h.s.queueSize, 1)
        XCTAssertNil(h.s.queuePosition(of: late, now: h.now))
        var due: [TaskID] = []
        for _ in 0..<30 {
            h.advance(ms(100))
            for e in h.take().compactMap(\.event) { if case .due(let id) = e { due.append(id) } }
        }
        XCTAssertEqual(due, [soon, mid, late])
        XCTAssertEqual(h.queuedIDs(), [past, soon, mid, late])
        XCTAssertEqual(h.s.delayed, 0)
        XCTAssertEqual(h.s.task(late)?.readyAt, t0 + ms(3000), "dispatch latency counts from when it came due")
    }

    func testDelayedSubmissionReportsNoPosition() {
        var h = Harness()
        let r = h.submitResult(TaskSpec(type: "a", delayMs: 10))
        guard case .success(let a) = r else { return XCTFail() }
        XCTAssertEqual(a.position, -1)
        XCTAssertEqual(h.take().compactMap(\.event).map(\.name), ["delayed"])
        XCTAssertEqual(h.s.nextDeadline, h.now + ms(10))
    }

    func testRetryDeadRequeuesWithPayloadAndFreshAttempts() {
        var h = Harness()
        let w = h.register("w")
        let id = h.submit(payload: "the payload", maxAttempts: 2, backoffMs: 1, backoffMaxMs: 1)
        _ = failOnce(&h, id, w)
        h.advance(ms(1))
        _ = failOnce(&h, id, w)
        XCTAssertEqual(h.state(id), .failed)
        XCTAssertEqual(h.s.deadLetters.map(\.id), [id])
        let queuedFirst = h.submit()
        _ = h.take()
        XCTAssertNoThrow(try h.s.retryDead(id, now: h.now).get())
        XCTAssertEqual(h.take().compactMap(\.event).map(\.name), ["deadRetried"])
        let t = h.s.task(id)!
        XCTAssertEqual(t.state, .queued)
        XCTAssertEqual(t.failures, 0)
        XCTAssertEqual(t.details?.dead, false)
        XCTAssertNil(t.details?.error)
        XCTAssertNil(t.details?.finishedAt)
        XCTAssertEqual(h.s.deadLetters.count, 0)
        XCTAssertEqual(h.s.deadLetterCount, 0)
        XCTAssertEqual(h.queuedIDs(), [queuedFirst, id], "joins the tail")
        XCTAssertEqual(h.s.counters.deadRetried, 1)
        // Regression: the payload was dropped when the task first failed, so the
        // retried attempt ran with an empty payload.
        XCTAssertEqual(t.payload, Array("the payload".utf8))
        _ = h.s.cancel(queuedFirst, now: h.now)
        let a = h.dispatch()
        XCTAssertEqual(a, [Assignment(worker: w, task: id, attempt: 3)])
        XCTAssertEqual(h.s.task(id)?.payload, Array("the payload".utf8))
        // It has max_attempts again: one failure is retried.
        _ = h.take()
        h.s.failed(id, attempt: 3, error: "x", from: w, now: h.now)
        XCTAssertEqual(h.state(id), .delayed)
    }

    /// Regression: lost deliveries were not reset, so a task dead-lettered
    /// `worker_lost` failed again on the first lost worker after a retry.
    func testRetryDeadResetsLostDeliveries() {
        var h = Harness { $0.maxDeliveries = 2 }
        let id = h.submit()
        for round in 1...2 {
            let w = h.register("w\(round)")
            h.dispatch()
            h.s.workerGone(w, reason: "x", now: h.now)
        }
        XCTAssertEqual(h.s.task(id)?.details?.error, "worker_lost")
        XCTAssertNoThrow(try h.s.retryDead(id, now: h.now).get())
        let w3 = h.register("w3")
        h.dispatch()
        h.s.workerGone(w3, reason: "x", now: h.now)
        XCTAssertEqual(h.state(id), .queued, "one lost delivery of a fresh set of \(h.s.config.maxDeliveries)")
    }

    func testRetryDeadRefusals() {
        var h = Harness { $0.maxQueue = 1 }
        let w = h.register("w")
        let id = h.submit()
        XCTAssertEqual(h.s.retryDead(id, now: h.now).errorCode, "not_found", "queued, not dead")
        h.dispatch()
        h.s.failed(id, attempt: 1, error: "x", from: w, now: h.now)
        h.submit()
        XCTAssertEqual(h.s.retryDead(id, now: h.now).errorCode, "queue_full")
        XCTAssertEqual(h.s.retryDead(TaskID(raw: 7), now: h.now).errorCode, "not_found")
        XCTAssertEqual(h.state(id), .failed)
    }

    func testPurgeDead() {
        var h = Harness()
        let w = h.register("w", capacity: 3)
        let ids = (0..<3).map { _ in h.submit() }
        h.dispatch()
        for id in ids { h.s.failed(id, attempt: 1, error: "x", from: w, now: h.now) }
        let ok = h.submit()
        h.dispatch()
        h.s.succeeded(ok, attempt: 1, result: [], from: w, now: h.now)
        XCTAssertEqual(h.s.deadLetters.map(\.id), ids)
        XCTAssertEqual(h.s.deadLetterCount, 3)
        _ = h.take()
        XCTAssertEqual(h.s.purgeDead(ok), 0, "not a dead letter")
        XCTAssertEqual(h.s.purgeDead(ids[1]), 1)
        XCTAssertEqual(h.s.deadLetterCount, 2)
        XCTAssertNil(h.s.task(ids[1]))
        XCTAssertEqual(h.s.purgeDead(ids[1]), 0)
        XCTAssertEqual(h.s.purgeDead(nil), 2)
        XCTAssertEqual(h.s.deadLetterCount, 0)
        XCTAssertEqual(h.s.deadLetters.count, 0)
        XCTAssertNil(h.s.task(ids[0]))
        XCTAssertNotNil(h.s.task(ok))
        XCTAssertEqual(h.take().compactMap(\.event).compactMap(\.taskID), [ids[1], ids[0], ids[2]])
    }

    func testIdempotencyKeyReturnsTheOriginalTask() {
        var h = Harness { $0.resultTTLSeconds = 60 }
        h.submit()
        let id = h.submit(key: "order-42")
        let dup = h.submitResult(TaskSpec(type: "other", priority: .urgent, idempotencyKey: "order-42"))
        guard case .success(let a) = dup else { return XCTFail("\(dup)") }
        XCTAssertEqual(a.id, id)
        XCTAssertTrue(a.duplicate)
        XCTAssertEqual(a.position, 1)
        XCTAssertEqual(h.s.counters.submitted, 2)
        XCTAssertEqual(h.s.queueSize, 2)
        XCTAssertEqual(h.take().compactMap(\.event).filter { $0.name == "queued" }.count, 2, "no event for the duplicate")
        XCTAssertNotEqual(h.submit(key: "order-43"), id)
        // Still a duplicate once finished, while retained…
        let w = h.register("w", capacity: 5)
        h.dispatch()
        h.s.succeeded(id, attempt: 1, result: [], from: w, now: h.now)
        let afterDone = h.submitResult(TaskSpec(type: "a", idempotencyKey: "order-42"))
        XCTAssertEqual(afterDone.successID, id)
        if case .success(let a) = afterDone { XCTAssertEqual(a.position, -1) }
        // …and a new task once the result has expired.
        h.advance(sec(61))
        XCTAssertNil(h.s.task(id))
        let fresh = h.submitResult(TaskSpec(type: "a", idempotencyKey: "order-42"))
        XCTAssertNotEqual(fresh.successID, id)
        XCTAssertNotNil(fresh.successID)
    }

    func testFinishedTasksExpireAfterTheTTL() {
        var h = Harness { $0.resultTTLSeconds = 10 }
        let w = h.register("w")
        let id = h.submit()
        h.dispatch()
        h.s.succeeded(id, attempt: 1, result: [], from: w, now: h.now)
        h.heartbeatAll()
        _ = h.take()
        h.advance(sec(10))
        h.heartbeatAll()
        XCTAssertNotNil(h.s.task(id), "kept for exactly the TTL")
        h.advance(1)
        XCTAssertNil(h.s.task(id))
        let expired = h.take().compactMap(\.event).filter { $0.name == "expired" }.compactMap(\.taskID)
        XCTAssertEqual(expired, [id])
    }

    func testMemoryCapEvictsOldestFinishedWithoutExpiring() {
        var h = Harness { $0.maxFinishedInMemory = 2 }
        let ids = (0..<3).map { _ in h.submit() }
        for id in ids {
            h.now += 1
            _ = h.s.cancel(id, now: h.now)
        }
        let live = h.submit()
        _ = h.take()
        h.advance(1)
        XCTAssertNil(h.s.task(ids[0]))
        XCTAssertNotNil(h.s.task(ids[1]))
        XCTAssertNotNil(h.s.task(ids[2]))
        XCTAssertNotNil(h.s.task(live))
        XCTAssertFalse(h.take().compactMap(\.event).contains { $0.name == "expired" },
                       "past the memory cap a task leaves memory only, it has not expired")
    }

    func testRestoreFromJournal() {
        // A journal whose last id is ahead of the clock-derived start.
        let last = TaskID(raw: (UInt64(t0 / 1000) << 16) + 1_000_000)
        var h = Harness(lastID: last)
        func rec(_ raw: UInt64, seq: UInt64, _ state: TaskState, _ p: Priority = .normal, type: String = "a", runAt: Timestamp? = nil, attempt: UInt16 = 0) -> TaskRecord {
            var d: TaskDetails?
            if let runAt {
                d = TaskDetails()
                d?.runAt = runAt
            }
            if state.isFinal {
                d = d ?? TaskDetails()
                d?.finishedAt = h.now - sec(1)
            }
            return TaskRecord(id: TaskID(raw: raw), seq: seq, createdAt: h.now - sec(60), type: type, priority: p, payload: [1],
                              timeoutMs: 1000, maxAttempts: 1, state: state, attempt: attempt, details: d)
        }
        // Queued tasks in (priority, seq) order, as the journal replays them.
        h.s.restore(rec(10, seq: 3, .queued, .high), idempotencyKey: nil, now: h.now)
        h.s.restore(rec(11, seq: 1, .running, .normal, attempt: 1), idempotencyKey: "k", now: h.now)
        h.s.restore(rec(12, seq: 2, .queued, .normal, type: "b"), idempotencyKey: nil, now: h.now)
        h.s.restore(rec(13, seq: 4, .delayed, runAt: h.now + ms(500)), idempotencyKey: nil, now: h.now)
        // Regression: a delayed record without a run_at never came due.
        h.s.restore(rec(14, seq: 5, .delayed), idempotencyKey: nil, now: h.now)
        h.s.restore(rec(15, seq: 6, .succeeded), idempotencyKey: nil, now: h.now)
        XCTAssertEqual(h.queuedIDs().map(\.raw), [10, 11, 12])
        XCTAssertEqual(h.state(TaskID(raw: 11)), .queued, "running tasks come back queued")
        XCTAssertEqual(h.s.task(TaskID(raw: 11))?.attempt, 1)
        XCTAssertEqual(h.s.delayed, 2)
        h.advance(0)
        XCTAssertEqual(h.state(TaskID(raw: 14)), .queued)
        h.advance(ms(500))
        XCTAssertEqual(h.state(TaskID(raw: 13)), .queued)
        XCTAssertEqual(h.s.delayed, 0)
        XCTAssertEqual(h.queuedIDs().map(\.raw), [10, 11, 12, 14, 13])
        XCTAssertEqual(h.state(TaskID(raw: 15)), .succeeded)
        XCTAssertEqual(h.submitResult(TaskSpec(type: "a", idempotencyKey: "k")).successID, TaskID(raw: 11))
        let fresh = h.submit()
        XCTAssertEqual(fresh.raw, last.raw + 1)
        XCTAssertGreaterThan(h.s.task(fresh)!.seq, 6)
        let w = h.register("w")
        XCTAssertEqual(h.dispatch(), [Assignment(worker: w, task: TaskID(raw: 10), attempt: 1)])
    }
}

extension Result where Success == Void, Failure == Rejection {
    var errorCode: String? {
        if case .failure(let r) = self { return r.code }
        return nil
    }
}
