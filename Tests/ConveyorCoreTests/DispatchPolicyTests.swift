import XCTest
@testable import ConveyorCore

/// Each dispatch policy on its own, through the scheduler: type concurrency,
/// sliding-window rate limits, cost budgets, RETRY_LATER holds, pauses, aging,
/// what STATUS says a task waits for, and time that a wall-clock step must not move.
final class DispatchPolicyTests: XCTestCase {
    private func harness(_ policy: (inout PolicyConfig) -> Void) -> Harness {
        Harness { c in
            c.maxRunning = 1000
            policy(&c.policy)
        }
    }

    /// Finishes every running task at once (as fast workers would).
    private func finishAll(_ h: inout Harness) {
        for t in h.s.runningTasks {
            guard let p = t.details?.workerPeer else { continue }
            h.s.succeeded(t.id, attempt: t.attempt, result: [], from: p, now: h.now)
        }
        _ = h.take()
    }

    // MARK: Type concurrency

    func testTypeConcurrencyHoldsWithMoreCapacityThanTheLimit() {
        var h = harness { $0.typeConcurrency = ["youtube": 2] }
        for _ in 0..<6 { h.submit("youtube") }
        let pdf = h.submit("pdf")
        _ = h.register("w", capacity: 10)
        let first = h.dispatch()
        XCTAssertEqual(first.count, 3, "two youtube and the pdf")
        XCTAssertTrue(first.contains { $0.task == pdf }, "a type at its limit does not hold up other types")
        XCTAssertEqual(h.s.policy.running(type: "youtube"), 2)
        let waiting = h.s.queuedInOrder(limit: 10, now: h.now).map(\.id)
        XCTAssertEqual(waiting.count, 4)
        XCTAssertEqual(h.s.waitingFor(waiting[0], now: h.now), .typeConcurrency)
        // One finishes: exactly one more starts.
        let yt = first.first { $0.task != pdf }!
        h.s.succeeded(yt.task, attempt: yt.attempt, result: [], from: yt.worker, now: h.now)
        XCTAssertEqual(h.dispatch().count, 1)
        XCTAssertEqual(h.s.policy.running(type: "youtube"), 2)
        // A lost worker gives its slots back too.
        h.s.workerGone(yt.worker, reason: "gone", now: h.now)
        XCTAssertEqual(h.s.policy.running(type: "youtube"), 0)
    }

    // MARK: Rate limits

    /// Randomised arrivals and completions over many windows: no window of
    /// length W ever holds more than N dispatches, and the limit is not
    /// wasted either (a dispatch happens as soon as the window allows).
    func testSlidingWindowNeverHoldsMoreThanNDispatches() {
        for seed in UInt64(1)...5 {
            var rng = TestRNG(seed: seed)
            let n = Int64.random(in: 1...5, using: &rng)
            let window = ms(Int64.random(in: 100...1000, using: &rng))
            var h = harness { $0.rateLimits = ["llm": WindowLimit(limit: n, windowUs: window)] }
            _ = h.register("w", capacity: 50)
            var times: [Timestamp] = []
            for _ in 0..<600 {
                for _ in 0..<Int.random(in: 0...3, using: &rng) { h.submit("llm") }
                let before = h.s.queueSize
                let got = h.dispatch()
                times += got.map { _ in h.now }
                finishAll(&h)
                if before > 0 && got.isEmpty {
                    XCTAssertEqual(h.s.waitingFor(h.s.queuedInOrder(limit: 1, now: h.now)[0].id, now: h.now), .rateLimit)
                    // The scheduler says when to look again, and it is in the future.
                    XCTAssertGreaterThan(h.s.nextDeadline(now: h.now) ?? 0, h.now)
                }
                // Jump to the next wakeup half the time, else a random step.
                if Bool.random(using: &rng), let next = h.s.nextDeadline(now: h.now) {
                    h.advance(next - h.now)
                } else {
                    h.advance(ms(Int64.random(in: 1...300, using: &rng)))
                }
                h.heartbeatAll()
            }
            XCTAssertGreaterThan(times.count, Int(n) * 10, "seed \(seed): the test exercised the limit")
            for i in 0..<times.count where i + Int(n) < times.count {
                XCTAssertGreaterThanOrEqual(times[i + Int(n)] - times[i], window,
                                            "seed \(seed): \(n + 1) dispatches within \(window) µs at \(i)")
            }
        }
    }

    func testRateLimitReleasesAtTheWindowEdge() {
        var h = harness { $0.rateLimits = ["b": WindowLimit(limit: 2, windowUs: sec(1))] }
        for _ in 0..<5 { h.submit("b") }
        _ = h.register("w", capacity: 10)
        XCTAssertEqual(h.dispatch().count, 2)
        XCTAssertEqual(h.s.policy.nextWakeup(now: h.now), h.now + sec(1))
        h.advance(sec(1) - 1)
        XCTAssertEqual(h.dispatch().count, 0)
        h.advance(1)
        XCTAssertEqual(h.dispatch().count, 2)
    }

    // MARK: Cost budgets

    func testCostBudgetHoldsBackWhileTheWindowIsSpent() {
        var h = harness { $0.costLimits = ["yt": WindowLimit(limit: 1000, windowUs: sec(60))] }
        for _ in 0..<3 { h.submit("yt") }
        _ = h.register("w", capacity: 1)
        let a = h.dispatch()[0]
        h.s.succeeded(a.task, attempt: a.attempt, result: [], cost: 600, from: a.worker, now: h.now)
        let b = h.dispatch()[0]
        h.advance(sec(10))
        h.s.succeeded(b.task, attempt: b.attempt, result: [], cost: 500, from: b.worker, now: h.now)
        XCTAssertEqual(h.dispatch().count, 0, "1100 units used of 1000")
        XCTAssertEqual(h.s.waitingFor(h.s.queuedInOrder(limit: 1, now: h.now)[0].id, now: h.now), .costLimit)
        // The first report leaves the window 60 s after it was made.
        XCTAssertEqual(h.s.policy.nextWakeup(now: h.now), t0 + sec(60))
        h.advance(sec(50))
        h.heartbeatAll()
        XCTAssertEqual(h.dispatch().count, 1)
    }

    // MARK: RETRY_LATER

    func testRetryLaterHoldsTheTypeAndUsesNoAttempt() {
        var h = harness { $0.defaultHoldMs = 30_000 }
        let a = h.submit("yt", .high, maxAttempts: 1)
        let b = h.submit("yt", .high)
        let other = h.submit("pdf", .low)
        let w = h.register("w", capacity: 1)
        XCTAssertEqual(h.dispatch().map(\.task), [a])
        _ = h.take()
        h.s.retryLater(a, attempt: 1, afterMs: 10_000, from: w, now: h.now)
        let events = h.take().compactMap(\.event)
        XCTAssertEqual(events.map(\.name), ["rateLimited", "typeHeld"])
        XCTAssertEqual(h.s.task(a)?.state, .queued)
        XCTAssertEqual(h.s.task(a)?.failures, 0)
        XCTAssertEqual(h.s.task(a)?.details?.lostDeliveries, 0)
        XCTAssertEqual(h.s.queuedInOrder(limit: 10, now: h.now).map(\.id), [other, a, b], "head of its level; a held type lists last")
        XCTAssertEqual(h.s.queuePosition(of: a, now: h.now), 1, "behind the task that can run")
        XCTAssertEqual(h.s.waitingFor(a, now: h.now), .held)
        XCTAssertEqual(h.dispatch().map(\.task), [other], "other types go on")
        XCTAssertEqual(h.s.policy.nextWakeup(now: h.now), h.now + sec(10))
        // A second signal extends the hold; a shorter one does not shorten it.
        let p = h.s.task(other)!
        h.s.retryLater(other, attempt: p.attempt, afterMs: 1, from: w, now: h.now)
        h.advance(sec(5))
        h.s.retryLater(h.s.task(a)!.id, attempt: 1, afterMs: 20_000, from: w, now: h.now) // stale: a is queued
        XCTAssertEqual(h.s.counters.staleResults, 1)
        h.advance(sec(5))
        XCTAssertEqual(h.take().compactMap(\.event).map(\.name).filter { $0.hasPrefix("type") }, ["typeHeld", "typeReleased", "typeReleased"])
        h.heartbeatAll()
        // The task that was rate limited runs again and succeeds on its only attempt.
        let again = h.dispatch()
        XCTAssertEqual(again.map(\.task), [a])
        h.s.succeeded(a, attempt: again[0].attempt, result: Array("ok".utf8), from: w, now: h.now)
        XCTAssertEqual(h.s.task(a)?.state, .succeeded)
    }

    func testRetryLaterWithoutADelayUsesTheDefaultAndIsCapped() {
        var h = harness { $0.defaultHoldMs = 30_000; $0.maxHoldMs = 60_000 }
        let a = h.submit("yt")
        let w = h.register("w")
        _ = h.dispatch()
        h.s.retryLater(a, attempt: 1, afterMs: nil, from: w, now: h.now)
        XCTAssertEqual(h.s.policy.holds["yt"], h.now + sec(30))
        _ = h.dispatch()
        XCTAssertEqual(h.s.task(a)?.state, .queued)
        h.advance(sec(30))
        let b = h.dispatch()[0]
        h.s.retryLater(a, attempt: b.attempt, afterMs: 86_400_000, from: w, now: h.now)
        XCTAssertEqual(h.s.policy.holds["yt"], h.now + sec(60), "a worker cannot park a type for a day")
    }

    // MARK: Pause

    func testPausedTypeAcceptsAndRunsNothingUntilResumed() {
        var h = harness { _ in }
        let running = h.submit("pdf")
        let w = h.register("w", capacity: 4)
        XCTAssertEqual(h.dispatch().map(\.task), [running])
        XCTAssertTrue(h.s.pause(type: "pdf"))
        XCTAssertFalse(h.s.pause(type: "pdf"), "pausing twice changes nothing")
        let queued = h.submit("pdf", .urgent)
        let doc = h.submit("doc", .low)
        XCTAssertEqual(h.s.queuePosition(of: doc, now: h.now), 0, "a paused type's tasks do not count ahead")
        XCTAssertEqual(h.s.queuePosition(of: queued, now: h.now), 1, "every task that can run is ahead of a paused one")
        XCTAssertEqual(h.dispatch().map(\.task), [doc])
        XCTAssertEqual(h.s.waitingFor(queued, now: h.now), .paused)
        h.s.succeeded(running, attempt: 1, result: [], from: w, now: h.now)
        XCTAssertEqual(h.s.task(running)?.state, .succeeded, "running tasks finish")
        XCTAssertEqual(h.dispatch().count, 0)
        XCTAssertTrue(h.s.resume(type: "pdf"))
        XCTAssertEqual(h.dispatch().map(\.task), [queued])
        let names = h.take().compactMap(\.event).map(\.name)
        XCTAssertTrue(names.contains("typePaused") && names.contains("typeResumed"))
    }

    func testWaitingForNamesCapacityAndMissingWorkers() {
        var h = Harness { $0.maxRunning = 1 }
        let a = h.submit("gpu")
        XCTAssertEqual(h.s.waitingFor(a, now: h.now), .noWorkerForType)
        _ = h.register("w", types: ["cpu", "gpu"], capacity: 2)
        let b = h.submit("cpu")
        XCTAssertEqual(h.dispatch().map(\.task), [a])
        XCTAssertEqual(h.s.waitingFor(b, now: h.now), .capacity)
        XCTAssertNil(h.s.waitingFor(a, now: h.now), "not queued")
    }

    // MARK: Aging

    func testAgingLiftsAWaitingTaskOneLevelPerPeriodKeepingArrivalOrder() {
        var h = harness { $0.agingUs = sec(10) }
        let low = h.submit("t", .low)
        h.advance(sec(25)) // LOW + 2 = HIGH
        let normal = h.submit("t", .normal)
        let high = h.submit("t", .high)
        let urgent = h.submit("t", .urgent)
        XCTAssertEqual(h.s.queuedInOrder(limit: 10, now: h.now).map(\.id), [urgent, low, high, normal],
                       "the aged LOW task counts as HIGH and arrived before the HIGH one")
        XCTAssertEqual(h.s.queuePosition(of: low, now: h.now), 1)
        XCTAssertEqual(h.s.queuePosition(of: normal, now: h.now), 3)
        h.advance(sec(5)) // LOW + 3 = URGENT (capped), and it arrived first
        XCTAssertEqual(h.s.queuedInOrder(limit: 10, now: h.now).map(\.id), [low, urgent, high, normal])
        _ = h.register("w")
        XCTAssertEqual(h.dispatch().map(\.task), [low])
    }

    func testWithoutAgingALowTaskWaitsBehindEveryHigherOne() {
        var h = harness { _ in }
        let low = h.submit("t", .low)
        h.advance(sec(3600))
        let normal = h.submit("t", .normal)
        XCTAssertEqual(h.s.queuedInOrder(limit: 10, now: h.now).map(\.id), [normal, low])
    }

    // MARK: Time

    /// A step of the wall clock by an hour either way (NTP, an operator, a VM
    /// resume) times nothing out and loses no worker; stored times follow it.
    func testAWallClockStepOfAnHourChangesNothing() {
        for step in [sec(3600), -sec(3600)] {
            var h = Harness { $0.heartbeatLiveness = 3; $0.heartbeatIntervalMs = 1000 }
            h.s.setWallClock(t0, at: h.now)
            let a = h.submit("t", timeoutMs: 5000)
            let delayed = h.submit("t", delayMs: 3000)
            let w = h.register("w")
            XCTAssertEqual(h.dispatch().map(\.task), [a])
            _ = h.take()
            // The wall clock jumps; monotonic time moves 1 s.
            h.now += sec(1)
            h.s.setWallClock(t0 + sec(1) + step, at: h.now)
            _ = h.s.heard(from: w, now: h.now)
            h.s.tick(now: h.now)
            let events = h.take().compactMap(\.event).map(\.name)
            XCTAssertFalse(events.contains("timedOut"), "step \(step): \(events)")
            XCTAssertFalse(events.contains("workerLost"), "step \(step): \(events)")
            XCTAssertFalse(events.contains("due"), "step \(step): the delay is measured monotonic")
            XCTAssertEqual(h.s.task(a)?.state, .running)
            XCTAssertEqual(h.s.task(delayed)?.state, .delayed)
            h.s.succeeded(a, attempt: 1, result: [], from: w, now: h.now)
            XCTAssertEqual(h.s.task(a)?.details?.finishedAt, t0 + sec(1) + step, "shown times follow the wall clock")
            h.now += sec(2)
            _ = h.s.heard(from: w, now: h.now)
            h.s.tick(now: h.now)
            XCTAssertEqual(h.s.task(delayed)?.state, .queued, "due after its 3 s, whatever the wall clock did")
        }
    }

    // MARK: Parsing

    func testPolicyFlagSyntax() throws {
        XCTAssertEqual(try PolicyConfig.parseConcurrency("youtube=2, pdf=3"), ["youtube": 2, "pdf": 3])
        XCTAssertEqual(try PolicyConfig.parseWindows("youtube=15/min,pdf=2/s,x=100/h", what: "rate"), [
            "youtube": WindowLimit(limit: 15, windowUs: sec(60)), "pdf": WindowLimit(limit: 2, windowUs: sec(1)),
            "x": WindowLimit(limit: 100, windowUs: sec(3600)),
        ])
        XCTAssertEqual(WindowLimit(limit: 15, windowUs: sec(60)).description, "15/min")
        for bad in ["youtube", "youtube=0", "youtube=-1", "=2", "bad type=1", "a=1,a=2", "a=x"] {
            XCTAssertThrowsError(try PolicyConfig.parseConcurrency(bad), bad)
        }
        for bad in ["a=15", "a=15/day", "a=0/s", "a=/s", "a=1/s/s", "a=1.5/s"] {
            XCTAssertThrowsError(try PolicyConfig.parseWindows(bad, what: "rate"), bad) { e in
                XCTAssertTrue("\(e)".contains("rate"), "the error names the setting: \(e)")
            }
        }
    }
}
