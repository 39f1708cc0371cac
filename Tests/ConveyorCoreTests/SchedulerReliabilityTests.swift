import XCTest
@testable import ConveyorCore

/// Lost workers, timeouts and superseded attempts (spec §9.2, §9.3, §9.5).
final class SchedulerReliabilityTests: XCTestCase {
    func testLostWorkersTasksGoBackToTheHeadInDispatchOrderWithNextAttempt() {
        var h = Harness()
        let w1 = h.register("w1", capacity: 2)
        let t1 = h.submit("a")
        let t2 = h.submit("b")
        XCTAssertEqual(h.dispatch().map(\.task), [t1, t2])
        let t3 = h.submit("a")
        let t4 = h.submit("c")
        _ = h.take()
        h.s.workerGone(w1, reason: "disconnected", now: h.now)
        XCTAssertEqual(h.queuedIDs(), [t1, t2, t3, t4], "back at the head, in the order they were dispatched")
        XCTAssertEqual(h.s.queuePosition(of: t1, now: h.now), 0)
        XCTAssertEqual(h.s.runningCount, 0)
        XCTAssertNil(h.s.worker(w1))
        XCTAssertEqual(h.s.counters.reassigned, 2)
        let events = h.take().compactMap(\.event)
        XCTAssertEqual(events.map(\.name), ["reassigned", "reassigned", "workerLost"])
        XCTAssertEqual(Set(events.compactMap(\.taskID)), [t1, t2])
        let w2 = h.register("w2", capacity: 4)
        XCTAssertEqual(h.dispatch(), [
            Assignment(worker: w2, task: t1, attempt: 2), Assignment(worker: w2, task: t2, attempt: 2),
            Assignment(worker: w2, task: t3, attempt: 1), Assignment(worker: w2, task: t4, attempt: 1),
        ])
        XCTAssertEqual(h.s.task(t1)?.failures, 0, "losses do not count against max_attempts")
    }

    /// A reassigned task goes ahead of older tasks of *other* types too: the head
    /// of the level, not of its type's lane.
    func testReassignedTaskOvertakesOlderTaskOfAnotherTypeInItsLevel() {
        var h = Harness()
        let gpuOnly = h.submit("gpu")
        let cpuWorker = h.register("cpu", types: ["cpu"])
        let cpu = h.submit("cpu")
        XCTAssertEqual(h.dispatch().map(\.task), [cpu])
        h.s.workerGone(cpuWorker, reason: "crashed", now: h.now)
        XCTAssertEqual(h.queuedIDs(), [cpu, gpuOnly])
        let any = h.register("any")
        XCTAssertEqual(h.dispatch(), [Assignment(worker: any, task: cpu, attempt: 2)])
    }

    /// Regression: a lost worker's tasks were put back in submission order, not
    /// in the order they were dispatched (§9.2); they differ once a task that
    /// came due late was dispatched after a newer one.
    func testLostTasksKeepDispatchOrderNotSubmissionOrder() {
        var h = Harness()
        let w = h.register("w", capacity: 2)
        let older = h.submit(delayMs: 100)
        let newer = h.submit()
        XCTAssertEqual(h.dispatch().map(\.task), [newer])
        h.advance(ms(100))
        XCTAssertEqual(h.dispatch().map(\.task), [older])
        h.s.workerGone(w, reason: "gone", now: h.now)
        XCTAssertEqual(h.queuedIDs(), [newer, older])
    }

    func testTaskFailsWorkerLostAfterMaxDeliveries() {
        var h = Harness { $0.maxDeliveries = 3 }
        let id = h.submit(maxAttempts: 5)
        for round in 1...3 {
            let w = h.register("w\(round)")
            XCTAssertEqual(h.dispatch(), [Assignment(worker: w, task: id, attempt: UInt16(round))])
            _ = h.take()
            h.s.workerGone(w, reason: "silent", now: h.now)
            if round < 3 { XCTAssertEqual(h.state(id), .queued) }
        }
        let out = h.take()
        XCTAssertEqual(h.state(id), .failed)
        XCTAssertEqual(h.s.task(id)?.details?.error, "worker_lost")
        XCTAssertEqual(h.s.task(id)?.details?.dead, true)
        XCTAssertEqual(h.s.deadLetters.map(\.id), [id])
        XCTAssertEqual(h.s.deadLetterCount, 1, "the O(1) count agrees with the listing")
        XCTAssertEqual(out.compactMap(\.finished), [Finished(client: h.client, task: id, state: .failed, body: Array("worker_lost".utf8))])
        XCTAssertEqual(h.s.counters.failed, 1)
        XCTAssertEqual(h.s.counters.reassigned, 2)
        XCTAssertEqual(h.s.queueSize, 0)
        XCTAssertEqual(h.s.runningCount, 0)
    }

    func testReturnedTaskGoesToHeadWithoutCountingAsFailureOrLoss() {
        var h = Harness { $0.maxDeliveries = 1 }
        let w = h.register("w")
        let id = h.submit("a", .high)
        h.dispatch()
        let other = h.submit("b", .high)
        h.s.returned(id, attempt: 1, from: w, now: h.now)
        XCTAssertEqual(h.queuedIDs(), [id, other])
        XCTAssertEqual(h.s.task(id)?.failures, 0)
        XCTAssertEqual(h.s.task(id)?.details?.lostDeliveries, 0)
        XCTAssertEqual(h.take().compactMap(\.event).last?.name, "returned")
        XCTAssertEqual(h.dispatch(), [Assignment(worker: w, task: id, attempt: 2)])
    }

    func testSilentWorkerIsDeclaredLostAndHeartbeatsKeepItAlive() {
        var h = Harness {
            $0.heartbeatIntervalMs = 1000
            $0.heartbeatLiveness = 3
        }
        let quiet = h.register("quiet")
        let chatty = h.register("chatty")
        let id = h.submit()
        h.dispatch()
        XCTAssertNotNil(h.s.nextDeadline)
        for _ in 0..<3 {
            h.now += ms(1000)
            XCTAssertTrue(h.s.heard(from: chatty, now: h.now))
            h.s.tick(now: h.now)
        }
        XCTAssertNotNil(h.s.worker(quiet), "exactly interval × liveness of silence is not yet dead")
        h.now += ms(1)
        XCTAssertTrue(h.s.heard(from: chatty, now: h.now))
        h.advance(ms(600)) // the next liveness check
        XCTAssertNil(h.s.worker(quiet))
        XCTAssertNotNil(h.s.worker(chatty))
        XCTAssertFalse(h.s.heard(from: quiet, now: h.now), "a forgotten worker must register again")
        XCTAssertTrue([TaskState.queued, .running].contains(h.state(id)!))
        let lost = h.take().compactMap(\.event).filter { $0.name == "workerLost" }
        XCTAssertEqual(lost.count, 1)
    }

    /// Identity is the connection: READYs with a running worker's name get
    /// records of their own, suffixed, and leave its task alone.
    func testReadyWithANameStillRegisteredGetsItsOwnRecord() {
        var h = Harness()
        let old = h.register("w")
        let id = h.submit()
        h.dispatch()
        var names: [String] = []
        for n in 1...3 {
            let reg = h.s.register(worker: peer("w-impostor-\(n)"), name: "w", types: nil, capacity: 1, now: h.now)
            names.append(reg.name)
        }
        XCTAssertEqual(names, ["w#2", "w#3", "w#4"])
        XCTAssertNotNil(h.s.worker(old))
        XCTAssertEqual(h.s.worker(old)?.name, "w")
        XCTAssertEqual(h.state(id), .running)
        XCTAssertFalse(h.take().contains { if case .event(.workerLost) = $0 { true } else { false } })
        h.s.succeeded(id, attempt: 1, result: [], from: old, now: h.now)
        XCTAssertEqual(h.state(id), .succeeded)
        XCTAssertEqual(h.s.allWorkers.count, 4)
        // Once the first holder is gone its name is free again.
        h.s.workerGone(old, reason: "gone", now: h.now)
        XCTAssertEqual(h.s.register(worker: peer("w-back"), name: "w", types: nil, capacity: 1, now: h.now).name, "w")
    }

    func testReadyAskingMoreThanTheCapIsCapped() {
        var h = Harness { $0.maxWorkerCapacity = 64 }
        let reg = h.s.register(worker: peer("greedy"), name: "greedy", types: nil, capacity: 1024, now: h.now)
        XCTAssertEqual(reg, Scheduler.Registration(name: "greedy", capacity: 64, askedCapacity: 1024))
        XCTAssertEqual(h.s.worker(peer("greedy"))?.capacity, 64)
        for _ in 0..<100 { h.submit() }
        XCTAssertEqual(h.dispatch().count, 64)
        XCTAssertNil(h.s.register(worker: peer("modest"), name: "modest", types: nil, capacity: 64, now: h.now).askedCapacity)
    }

    /// RETURN up to the bound requeues; the next one dead-letters the task.
    func testTaskReturnedTooOftenIsDeadLettered() {
        var h = Harness { $0.maxReturns = 5 }
        let w = h.register("returner")
        let id = h.submit()
        for n in 1...5 {
            XCTAssertEqual(h.dispatch(), [Assignment(worker: w, task: id, attempt: UInt16(n))])
            XCTAssertEqual(h.s.returned(id, attempt: UInt16(n), from: w, now: h.now), .requeued)
        }
        h.dispatch()
        XCTAssertEqual(h.s.returned(id, attempt: 6, from: w, now: h.now), .deadLettered)
        XCTAssertEqual(h.state(id), .failed)
        XCTAssertEqual(h.s.task(id)?.details?.error, "returned_too_often")
        XCTAssertEqual(h.s.task(id)?.details?.dead, true)
        XCTAssertEqual(h.s.counters.returnedTooOften, 1)
        XCTAssertEqual(h.s.returned(id, attempt: 6, from: w, now: h.now), .stale)
        XCTAssertEqual(h.s.runningCount, 0)
        // A dead-letter retry starts the count again.
        XCTAssertNoThrow(try h.s.retryDead(id, now: h.now).get())
        h.dispatch()
        XCTAssertEqual(h.s.returned(id, attempt: 7, from: w, now: h.now), .requeued)
    }

    /// A counter restored at its maximum (a poisoned journal) must not trap:
    /// the task ends `attempts_exhausted` instead of being dispatched.
    func testAttemptCounterAtItsMaximumFailsTheTaskInsteadOfTrapping() {
        var h = Harness()
        let rec = TaskRecord(id: TaskID(raw: 77), seq: 1, createdAt: t0, type: "a", priority: .normal, payload: [],
                             timeoutMs: 1000, maxAttempts: 1, state: .queued, attempt: .max, failures: .max)
        h.s.restore(rec, idempotencyKey: nil, now: t0)
        _ = h.register("w")
        XCTAssertEqual(h.dispatch(), [])
        XCTAssertEqual(h.state(TaskID(raw: 77)), .failed)
        XCTAssertEqual(h.s.task(TaskID(raw: 77))?.details?.error, "attempts_exhausted")
    }

    /// Hostile times and durations saturate instead of trapping.
    func testExtremeTimesDoNotTrap() {
        var h = Harness()
        let far = h.submit(runAt: .max)
        XCTAssertEqual(h.state(far), .delayed)
        let near = h.submit(delayMs: .max)
        XCTAssertEqual(h.state(near), .delayed)
        var old = TaskRecord(id: TaskID(raw: 5), seq: 2, createdAt: .min, type: "a", priority: .low, payload: [],
                             timeoutMs: .max, maxAttempts: 1, state: .succeeded)
        old.details = TaskDetails()
        old.details?.finishedAt = .min
        h.s.restore(old, idempotencyKey: nil, now: t0)
        var future = TaskRecord(id: TaskID(raw: 6), seq: 3, createdAt: .max, type: "a", priority: .low, payload: [],
                                timeoutMs: .max, maxAttempts: 1, state: .delayed)
        future.details = TaskDetails()
        future.details?.runAt = .min
        h.s.restore(future, idempotencyKey: nil, now: t0)
        h.advance(sec(1))
        XCTAssertNil(h.state(TaskID(raw: 5)), "long past its TTL")
        XCTAssertEqual(h.state(TaskID(raw: 6)), .queued)
        XCTAssertNotNil(h.s.nextDeadline(now: h.now))
    }

    func testTimeoutCancelsOnWorkerAndEndsTimedOut() {
        var h = Harness()
        let w = h.register("w")
        let id = h.submit(timeoutMs: 1000)
        h.dispatch()
        _ = h.take()
        XCTAssertEqual(h.s.nextDeadline, h.now + ms(1000))
        h.advance(ms(999))
        XCTAssertEqual(h.state(id), .running)
        h.advance(ms(1))
        let out = h.take()
        XCTAssertEqual(out.compactMap(\.workerCancel), [WorkerCancel(worker: w, task: id, attempt: 1, reason: .timedOut)])
        XCTAssertEqual(h.state(id), .timedOut)
        XCTAssertEqual(out.compactMap(\.finished), [Finished(client: h.client, task: id, state: .timedOut, body: Array("timed out after 1000 ms".utf8))])
        XCTAssertEqual(out.compactMap(\.event).map(\.name), ["timedOut"])
        XCTAssertEqual(h.s.counters.timedOut, 1)
        XCTAssertEqual(h.s.deadLetters.map(\.id), [id])
        XCTAssertEqual(h.s.deadLetterCount, 1, "the O(1) count agrees with the listing")
        XCTAssertEqual(h.s.worker(w)?.running, [])
        XCTAssertEqual(h.s.runningCount, 0)
        // The late result is stale.
        h.s.succeeded(id, attempt: 1, result: [], from: w, now: h.now)
        XCTAssertEqual(h.state(id), .timedOut)
        XCTAssertEqual(h.s.counters.staleResults, 1)
    }

    func testDeadlineOfAnEarlierAttemptDoesNotTimeOutALaterOne() {
        var h = Harness()
        let w1 = h.register("w1")
        let id = h.submit(timeoutMs: 1000)
        h.dispatch()
        h.advance(ms(600))
        h.s.workerGone(w1, reason: "gone", now: h.now)
        let w2 = h.register("w2")
        h.dispatch()
        _ = h.take()
        h.advance(ms(400)) // attempt 1's deadline
        XCTAssertEqual(h.state(id), .running)
        XCTAssertEqual(h.take().compactMap(\.workerCancel), [])
        h.advance(ms(600)) // attempt 2's deadline
        XCTAssertEqual(h.state(id), .timedOut)
        XCTAssertEqual(h.take().compactMap(\.workerCancel), [WorkerCancel(worker: w2, task: id, attempt: 2, reason: .timedOut)])
    }

    func testStaleResultsAreIgnoredAndCounted() {
        var h = Harness()
        let w1 = h.register("w1")
        let id = h.submit()
        h.dispatch()
        h.s.workerGone(w1, reason: "gone", now: h.now)
        let w2 = h.register("w2")
        h.dispatch()
        XCTAssertEqual(h.s.task(id)?.attempt, 2)
        _ = h.take()
        // The old attempt, from the old connection.
        h.s.succeeded(id, attempt: 1, result: Array("old".utf8), from: w1, now: h.now)
        // The old attempt number, from the right connection.
        h.s.failed(id, attempt: 1, error: "x", from: w2, now: h.now)
        // The right attempt number, from another connection.
        h.s.succeeded(id, attempt: 2, result: Array("forged".utf8), from: w1, now: h.now)
        h.s.progress(id, attempt: 2, percent: 10, message: "forged", from: w1, now: h.now)
        h.s.returned(id, attempt: 2, from: w1, now: h.now)
        // Unknown task.
        h.s.succeeded(TaskID(raw: 12345), attempt: 1, result: [], from: w2, now: h.now)
        XCTAssertEqual(h.s.counters.staleResults, 6)
        XCTAssertEqual(h.state(id), .running)
        XCTAssertNil(h.s.task(id)?.details?.progressMessage)
        XCTAssertTrue(h.take().isEmpty, "stale reports produce no output")
        h.s.succeeded(id, attempt: 2, result: Array("new".utf8), from: w2, now: h.now)
        XCTAssertEqual(h.s.task(id)?.details?.result, Array("new".utf8))
        // After the end, even the right attempt is stale.
        h.s.succeeded(id, attempt: 2, result: Array("again".utf8), from: w2, now: h.now)
        XCTAssertEqual(h.s.counters.staleResults, 7)
        XCTAssertEqual(h.s.task(id)?.details?.result, Array("new".utf8))
        XCTAssertEqual(h.s.counters.succeeded, 1)
    }

    func testCancelQueued() {
        var h = Harness()
        let id = h.submit()
        let other = h.submit()
        _ = h.take()
        XCTAssertEqual(h.s.cancel(id, now: h.now), .success(.queued))
        XCTAssertEqual(h.state(id), .cancelled)
        XCTAssertEqual(h.s.queueSize, 1)
        XCTAssertEqual(h.queuedIDs(), [other])
        XCTAssertNil(h.s.queuePosition(of: id, now: h.now))
        XCTAssertEqual(h.s.queuePosition(of: other, now: h.now), 0)
        let out = h.take()
        XCTAssertEqual(out.compactMap(\.finished), [Finished(client: h.client, task: id, state: .cancelled, body: Array("cancelled".utf8))])
        XCTAssertEqual(out.compactMap(\.workerCancel), [])
        let w = h.register("w", capacity: 5)
        XCTAssertEqual(h.dispatch(), [Assignment(worker: w, task: other, attempt: 1)], "a cancelled task is never dispatched")
        XCTAssertEqual(h.s.counters.cancelled, 1)
    }

    func testCancelRunningTellsTheWorkerAndFreesTheSlot() {
        var h = Harness()
        let w = h.register("w")
        let id = h.submit()
        let next = h.submit()
        h.dispatch()
        _ = h.take()
        XCTAssertEqual(h.s.cancel(id, now: h.now), .success(.running))
        let out = h.take()
        XCTAssertEqual(out.compactMap(\.workerCancel), [WorkerCancel(worker: w, task: id, attempt: 1, reason: .cancelled)])
        XCTAssertEqual(out.compactMap(\.finished).map(\.state), [.cancelled])
        XCTAssertEqual(h.s.runningCount, 0)
        XCTAssertEqual(h.s.worker(w)?.running, [])
        XCTAssertEqual(h.dispatch(), [Assignment(worker: w, task: next, attempt: 1)])
        h.s.succeeded(id, attempt: 1, result: [], from: w, now: h.now)
        XCTAssertEqual(h.state(id), .cancelled)
        XCTAssertEqual(h.s.counters.staleResults, 1)
        XCTAssertEqual(h.s.deadLetters.count, 0, "cancelled tasks are not dead letters")
        XCTAssertEqual(h.s.deadLetterCount, 0)
    }

    func testCancelDelayedNeverComesDue() {
        var h = Harness()
        let id = h.submit(delayMs: 500)
        XCTAssertEqual(h.s.delayed, 1)
        XCTAssertEqual(h.s.cancel(id, now: h.now), .success(.delayed))
        XCTAssertEqual(h.s.delayed, 0)
        h.advance(ms(1000))
        XCTAssertEqual(h.state(id), .cancelled)
        XCTAssertEqual(h.s.queueSize, 0)
        XCTAssertFalse(h.take().compactMap(\.event).contains { $0.name == "due" })
    }

    func testCancelFinishedOrUnknown() {
        var h = Harness()
        let w = h.register("w")
        let id = h.submit()
        h.dispatch()
        h.s.succeeded(id, attempt: 1, result: [], from: w, now: h.now)
        XCTAssertEqual(h.s.cancel(id, now: h.now), .failure(.alreadyFinished(.succeeded)))
        XCTAssertEqual(h.s.cancel(TaskID(raw: 1), now: h.now), .failure(.notFound))
        let c = h.submit()
        XCTAssertEqual(h.s.cancel(c, now: h.now), .success(.queued))
        XCTAssertEqual(h.s.cancel(c, now: h.now), .failure(.alreadyFinished(.cancelled)))
        XCTAssertEqual(h.s.counters.cancelled, 1)
    }
}
