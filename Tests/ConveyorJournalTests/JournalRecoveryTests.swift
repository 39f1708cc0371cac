import ConveyorCore
import ConveyorJournal
import Foundation
import XCTest

/// What a restarted broker rebuilds from the journal: every event kind,
/// queue order, results, retries, dead letters, idempotency keys, ids.
final class JournalRecoveryTests: XCTestCase {
    private let w1 = PeerID(Array("w1".utf8))
    private let w2 = PeerID(Array("w2".utf8))

    /// One task through every event the scheduler emits; after each step a
    /// copy of the files (as a kill -9 would leave them) recovers to the same tasks.
    func testEveryEventKindRoundTrips() throws {
        let h = try JournalHarness { $0.maxDeliveries = 2; $0.resultTTLSeconds = 60 }
        // queued, delayed
        var spec = TaskSpec(type: "pdf", priority: .high, payload: [0, 1, 2, 255, 0], maxAttempts: 3, idempotencyKey: "order-1")
        spec.backoffMs = 500
        spec.backoffMaxMs = 4000
        let a = try h.submit(spec)
        let d = try h.submit(TaskSpec(type: "img", priority: .low, payload: Array("later".utf8), delayMs: 5000))
        try h.assertRecoversSame("queued+delayed")

        // started (running comes back queued, attempt counted)
        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 4, now: h.now)
        XCTAssertEqual(try h.dispatch().map(\.id), [a])
        try h.assertRecoversSame("started")

        // progress is not journaled but must not disturb anything; then retrying
        h.scheduler.progress(a, attempt: 1, percent: 50, message: "half", from: w1, now: h.now)
        try h.flush()
        try h.fail(a, error: "first failure")
        XCTAssertEqual(h.scheduler.task(a)?.state, .delayed)
        try h.assertRecoversSame("retrying")

        // due (both the retry and the delayed task)
        try h.advance(sec(6))
        XCTAssertEqual(h.scheduler.task(a)?.state, .queued)
        XCTAssertEqual(h.scheduler.task(d)?.state, .queued)
        try h.assertRecoversSame("due")

        // succeeded with a binary result
        XCTAssertEqual(Set(try h.dispatch().map(\.id)), [a, d])
        try h.succeed(a, result: [0xff, 0x00, 0x80, 0x7f])
        try h.assertRecoversSame("succeeded")

        // failed for good: dead letter, payload kept for `dead retry`
        let b = try h.submit(TaskSpec(type: "pdf", payload: Array("bee".utf8)))
        try h.dispatch()
        try h.fail(b, error: "no luck")
        XCTAssertEqual(h.scheduler.task(b)?.details?.dead, true)
        try h.assertRecoversSame("failed")

        // timed out for good
        let c = try h.submit(TaskSpec(type: "pdf", payload: Array("sea".utf8), timeoutMs: 1000))
        try h.dispatch()
        try h.advance(sec(2))
        XCTAssertEqual(h.scheduler.task(c)?.state, .timedOut)
        try h.assertRecoversSame("timed_out")

        // reassigned: the worker is lost with d and e (lost deliveries counted)
        let e = try h.submit(TaskSpec(type: "pdf", priority: .urgent, payload: Array("e".utf8)))
        try h.dispatch()
        h.scheduler.workerGone(w1, reason: "test", now: h.now)
        try h.flush()
        XCTAssertEqual(h.scheduler.task(e)?.details?.lostDeliveries, 1)
        try h.assertRecoversSame("reassigned")

        // returned
        h.scheduler.register(worker: w2, name: "w2", types: nil, capacity: 1, now: h.now)
        XCTAssertEqual(try h.dispatch().map(\.id), [e])
        h.scheduler.returned(e, attempt: 2, from: w2, now: h.now)
        try h.flush()
        try h.assertRecoversSame("returned")

        // cancelled (d is queued behind e)
        _ = h.scheduler.cancel(d, now: h.now)
        try h.flush()
        try h.assertRecoversSame("cancelled")

        // dead letter retried, then one purged
        guard case .success = h.scheduler.retryDead(b, now: h.now) else { return XCTFail("retryDead") }
        try h.flush()
        try h.assertRecoversSame("dead retried")
        XCTAssertEqual(h.scheduler.purgeDead(c), 1)
        try h.flush()
        try h.assertRecoversSame("purged")

        // expired: past the TTL the finished ones are gone everywhere
        try h.advance(sec(61))
        XCTAssertNil(h.scheduler.task(a))
        try h.assertRecoversSame("expired")
        let copy = try h.crashCopy()
        XCTAssertNil(try copy.lookup(a))
        XCTAssertNil(try copy.lookup(c))
    }

    /// Submitted with no worker, restarted, then one worker: tasks complete in
    /// priority order, FIFO within a level, whatever their types.
    func testRestartPreservesPriorityThenFIFOOrder() throws {
        let h = try JournalHarness()
        var rng = TestRNG(seed: 42)
        var submitted: [(id: TaskID, priority: Priority)] = []
        for i in 0..<60 {
            let p = Priority.allCases.randomElement(using: &rng) ?? .normal
            let id = try h.submit(TaskSpec(type: ["a", "b", "c"][i % 3], priority: p, payload: Array("\(i)".utf8)))
            submitted.append((id, p))
        }
        // Two are running when the broker goes down: they come back queued, in their place.
        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 2, now: h.now)
        let running = try h.dispatch().map(\.id)
        XCTAssertEqual(running.count, 2)
        let copy = try h.crashCopy()
        XCTAssertEqual(copy.recovery.queued, 58)
        XCTAssertEqual(copy.recovery.requeuedRunning, 2)
        copy.scheduler.register(worker: w2, name: "w2", types: nil, capacity: 1, now: copy.now)
        var order: [TaskID] = []
        for _ in 0..<100 {
            guard let next = try copy.dispatch().first else { break }
            order.append(next.id)
            if running.contains(next.id) { XCTAssertEqual(next.attempt, 2, "a requeued task's next attempt") }
            try copy.succeed(next.id)
        }
        let expected = submitted.enumerated()
            .sorted { ($0.element.priority, -$0.offset) > ($1.element.priority, -$1.offset) }
            .map(\.element.id)
        XCTAssertEqual(order, expected)
    }

    /// Results (binary too) answer after a restart: recent ones from memory,
    /// older ones (beyond the in-memory cap) from the journal.
    func testResultsSurviveRestart() throws {
        let h = try JournalHarness { $0.maxFinishedInMemory = 5 }
        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 1, now: h.now)
        var ids: [TaskID] = []
        for i in 0..<20 {
            let id = try h.submit(TaskSpec(type: "t", payload: Array("p\(i)".utf8)))
            try h.dispatch()
            h.now += 1000
            try h.succeed(id, result: Array("result \(i)".utf8) + [0xfe])
            ids.append(id)
        }
        try h.restart()
        XCTAssertEqual(h.recovery.finished, 5)
        for (i, id) in ids.enumerated() {
            let inMemory = h.scheduler.task(id)
            XCTAssertEqual(inMemory != nil, i >= 15, "only the 5 most recent results are held in memory")
            let t = try XCTUnwrap(inMemory ?? h.lookup(id))
            XCTAssertEqual(t.state, .succeeded)
            XCTAssertEqual(t.details?.result, Array("result \(i)".utf8) + [0xfe])
            XCTAssertEqual(t.payload, [], "a finished task's payload is not kept")
        }
    }

    /// A retry keeps its backoff deadline across a restart; the next backoff
    /// follows the formula; the dead letter comes back with its payload and
    /// `dead retry` runs it with that payload.
    func testRetriesAndDeadLettersSurviveRestart() throws {
        let h = try JournalHarness()
        var spec = TaskSpec(type: "t", payload: Array("precious".utf8), maxAttempts: 3)
        spec.backoffMs = 1000
        spec.backoffMaxMs = 60_000
        let id = try h.submit(spec)
        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 1, now: h.now)
        try h.dispatch()
        try h.fail(id)
        let runAt = try XCTUnwrap(h.scheduler.task(id)?.details?.runAt)
        XCTAssert((h.now + 500_000...h.now + 1_000_000).contains(runAt), "first backoff in [base/2, base]")

        try h.restart()
        XCTAssertEqual(h.recovery.delayed, 1)
        XCTAssertEqual(h.scheduler.task(id)?.details?.runAt, runAt)
        XCTAssertEqual(h.scheduler.task(id)?.failures, 1)
        h.now = runAt - 1
        h.scheduler.tick(now: h.now)
        XCTAssertEqual(h.scheduler.task(id)?.state, .delayed, "not due before its run_at")
        h.now = runAt
        h.scheduler.tick(now: h.now)
        try h.flush()
        XCTAssertEqual(h.scheduler.task(id)?.state, .queued)

        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 1, now: h.now)
        XCTAssertEqual(try h.dispatch().first?.attempt, 2)
        try h.fail(id)
        let second = try XCTUnwrap(h.scheduler.task(id)?.details?.runAt) - h.now
        XCTAssert((1_000_000...2_000_000).contains(second), "second backoff in [base, 2 base], got \(second) us")
        try h.advance(second)
        try h.dispatch()
        try h.fail(id, error: "third strike")
        XCTAssertEqual(h.scheduler.task(id)?.state, .failed)

        try h.restart()
        XCTAssertEqual(h.scheduler.deadLetters.map(\.id), [id])
        XCTAssertEqual(h.scheduler.task(id)?.details?.error, "third strike")
        guard case .success = h.scheduler.retryDead(id, now: h.now) else { return XCTFail("retryDead") }
        try h.flush()
        try h.restart()
        XCTAssertEqual(h.scheduler.task(id)?.state, .queued)
        XCTAssertEqual(h.scheduler.task(id)?.failures, 0)
        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 1, now: h.now)
        XCTAssertEqual(try h.dispatch().map(\.id), [id])
        XCTAssertEqual(h.scheduler.task(id)?.payload, Array("precious".utf8), "a retried dead letter runs with its payload")
    }

    /// The same idempotency key returns the same task after a restart, while
    /// queued and once finished.
    func testIdempotencyKeysSurviveRestart() throws {
        let h = try JournalHarness()
        let id = try h.submit(TaskSpec(type: "t", idempotencyKey: "invoice-42"))
        try h.restart()
        guard case .success(let again) = h.scheduler.submit(TaskSpec(type: "t", idempotencyKey: "invoice-42"), from: nil, now: h.now) else {
            return XCTFail("resubmission rejected")
        }
        XCTAssertEqual(again.id, id)
        XCTAssertTrue(again.duplicate)
        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 1, now: h.now)
        try h.dispatch()
        try h.succeed(id)
        try h.restart()
        guard case .success(let third) = h.scheduler.submit(TaskSpec(type: "t", idempotencyKey: "invoice-42"), from: nil, now: h.now) else {
            return XCTFail("resubmission rejected")
        }
        XCTAssertEqual(third.id, id)
        XCTAssertEqual(h.scheduler.queueSize, 0)
    }

    /// Finished tasks beyond what memory keeps (`maxFinishedInMemory`) are still
    /// found by idempotency key and listed as dead letters: from the journal,
    /// with the owner scoping the key, and hidden once past the retention.
    func testKeysAndDeadLettersBeyondMemoryAreLookedUpInTheJournal() throws {
        let h = try JournalHarness { $0.maxFinishedInMemory = 1; $0.resultTTLSeconds = 100 }
        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 10, now: h.now)
        var keyed = TaskSpec(type: "t", idempotencyKey: "invoice-1")
        keyed.owner = "key:alice"
        let old = try h.submit(keyed)
        let dead = try h.submit(TaskSpec(type: "t"))
        try h.dispatch()
        try h.succeed(old)
        try h.fail(dead)
        h.now += sec(1)
        for _ in 0..<3 {
            let id = try h.submit(TaskSpec(type: "t"))
            try h.dispatch()
            try h.succeed(id)
        }
        try h.restart()
        XCTAssertNil(h.scheduler.task(old), "only the most recent finished task came back into memory")
        XCTAssertFalse(h.scheduler.knowsIdempotencyKey("invoice-1", owner: "key:alice"))
        let journal = try XCTUnwrap(h.journal)
        XCTAssertEqual(try journal.lookup(idempotencyKey: "invoice-1", owner: "key:alice", now: h.now)?.id, old)
        XCTAssertNil(try journal.lookup(idempotencyKey: "invoice-1", owner: "key:bob", now: h.now), "keys are scoped by owner")
        XCTAssertNil(try journal.lookup(idempotencyKey: "invoice-1", owner: nil, now: h.now))
        XCTAssertEqual(try journal.deadLetters(limit: 10, now: h.now).map(\.id), [dead])
        XCTAssertNil(try journal.lookup(idempotencyKey: "invoice-1", owner: "key:alice", now: h.now + sec(200)), "past the retention: gone")
    }

    /// Ids are never handed out twice, even when the rows of the largest ids
    /// were deleted and the clock has not moved (or went back).
    func testNewIDsNeverCollideAfterRestart() throws {
        let h = try JournalHarness { $0.resultTTLSeconds = 1 }
        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 10, now: h.now)
        var all: Set<TaskID> = []
        for _ in 0..<5 {
            let id = try h.submit(TaskSpec(type: "t"))
            all.insert(id)
        }
        for a in try h.dispatch() { try h.succeed(a.id) }
        try h.advance(sec(2)) // all expire: their rows are deleted
        XCTAssertEqual(try h.countByState(), [:])
        h.now = t0 // the clock went back
        try h.restart()
        XCTAssertNotNil(h.recovery.lastID)
        for _ in 0..<5 {
            let id = try h.submit(TaskSpec(type: "t"))
            XCTAssertFalse(all.contains(id), "id \(id) reused")
            XCTAssertGreaterThan(id, all.max() ?? id)
        }
    }

    /// `lastTaskID()` is known before anything is loaded, so a broker can
    /// create its scheduler with it and recover in one pass.
    func testLastTaskIDAllowsASinglePassRecovery() throws {
        let h = try JournalHarness()
        var ids: [TaskID] = []
        for _ in 0..<3 { ids.append(try h.submit(TaskSpec(type: "t"))) }
        XCTAssertEqual(try h.journal?.lastTaskID(), ids.last)
        try h.restart()
        guard let journal = h.journal else { return XCTFail("no journal") }
        let last = try journal.lastTaskID()
        XCTAssertEqual(last, ids.last)
        var s = Scheduler(config: h.schedulerConfig, now: t0, lastID: last)
        let info = try journal.recover(into: &s, now: t0)
        XCTAssertEqual(info.queued, 3)
        XCTAssertEqual(info.lastID, last)
        guard case .success(let a) = s.submit(TaskSpec(type: "t"), from: nil, now: t0) else { return XCTFail("rejected") }
        XCTAssertGreaterThan(a.id, ids.last ?? a.id)
    }

    /// `batch` mode journals the same way (only the fsync moment differs).
    func testBatchModeRoundTrips() throws {
        let h = try JournalHarness(durability: .batch)
        h.scheduler.register(worker: w1, name: "w1", types: nil, capacity: 2, now: h.now)
        for i in 0..<10 { try h.submit(TaskSpec(type: "t", priority: Priority(rawValue: UInt8(i % 4)) ?? .low, payload: [UInt8(i)])) }
        for a in try h.dispatch() { try h.succeed(a.id) }
        try h.assertRecoversSame("batch")
        try h.restart()
        XCTAssertEqual(h.recovery.queued, 8)
        XCTAssertEqual(h.recovery.finished, 2)
    }
}
