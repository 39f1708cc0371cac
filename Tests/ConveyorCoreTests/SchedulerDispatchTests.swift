import XCTest
@testable import ConveyorCore

final class SchedulerDispatchTests: XCTestCase {
    func testStrictPriorityThenFIFOThroughTheScheduler() {
        var h = Harness()
        var rng = TestRNG(seed: 99)
        var byLevel: [Priority: [TaskID]] = [:]
        for _ in 0..<40 {
            let p = Priority.allCases.randomElement(using: &rng)!
            byLevel[p, default: []].append(h.submit(["a", "b"].randomElement(using: &rng)!, p))
        }
        let want = Priority.dispatchOrder.flatMap { byLevel[$0] ?? [] }
        XCTAssertEqual(h.queuedIDs(), want)
        for (i, id) in want.enumerated() { XCTAssertEqual(h.s.queuePosition(of: id, now: h.now), i) }
        let w = h.register("w", capacity: 1)
        var order: [TaskID] = []
        while h.s.queueSize > 0 {
            let a = h.dispatch()
            XCTAssertEqual(a.count, 1)
            order.append(a[0].task)
            h.s.succeeded(a[0].task, attempt: 1, result: [], from: w, now: h.now)
        }
        XCTAssertEqual(order, want)
    }

    func testAcceptedPositionCountsTasksAhead() {
        var h = Harness()
        h.submit("a", .low)
        h.submit("a", .normal)
        h.submit("b", .high)
        let r = h.submitResult(TaskSpec(type: "a", priority: .normal))
        guard case .success(let a) = r else { return XCTFail("\(r)") }
        XCTAssertEqual(a.position, 2, "the HIGH and the earlier NORMAL")
        XCTAssertFalse(a.duplicate)
        XCTAssertEqual(h.s.queuePosition(of: a.id, now: h.now), 2)
        let queuedEvents = h.take().compactMap(\.event).compactMap { e -> Int? in
            if case .queued(let id, let pos) = e, id == a.id { return pos }
            return nil
        }
        XCTAssertEqual(queuedEvents, [2])
    }

    func testMaxRunningCapsTheWholePool() {
        var h = Harness { $0.maxRunning = 4 }
        let ws = (1...3).map { h.register("w\($0)", capacity: 5) }
        for _ in 0..<10 { h.submit() }
        XCTAssertEqual(h.dispatch().count, 4)
        XCTAssertEqual(h.s.runningCount, 4)
        XCTAssertEqual(h.s.queueSize, 6)
        XCTAssertEqual(h.dispatch().count, 0, "still at the cap")
        let running = h.s.runningTasks
        XCTAssertEqual(running.count, 4)
        let holder = ws.first { h.s.worker($0)!.running.contains(running[0].id) }!
        h.s.succeeded(running[0].id, attempt: 1, result: [], from: holder, now: h.now)
        XCTAssertEqual(h.s.runningCount, 3)
        XCTAssertEqual(h.dispatch().count, 1)
        XCTAssertEqual(h.s.runningCount, 4)
    }

    func testPerWorkerCapacity() {
        var h = Harness()
        let w = h.register("w", capacity: 2)
        for _ in 0..<5 { h.submit() }
        let a = h.dispatch()
        XCTAssertEqual(a.count, 2)
        XCTAssertEqual(h.s.worker(w)?.running.count, 2)
        XCTAssertEqual(h.s.worker(w)?.freeSlots, 0)
        XCTAssertEqual(h.s.workersBusy, 1)
        h.s.failed(a[1].task, attempt: 1, error: "x", from: w, now: h.now)
        XCTAssertEqual(h.s.worker(w)?.freeSlots, 1)
        XCTAssertEqual(h.dispatch().count, 1)
    }

    func testTypesRouteToWorkersThatAcceptThem() {
        var h = Harness()
        let img = h.submit("img", .urgent)
        let pdf = h.submit("pdf", .low)
        let pdfWorker = h.register("pdf-only", types: ["pdf"], capacity: 4)
        XCTAssertEqual(h.dispatch(), [Assignment(worker: pdfWorker, task: pdf, attempt: 1)],
                       "an URGENT img task no worker accepts must not block a LOW pdf task")
        XCTAssertEqual(h.state(img), .queued)
        let any = h.register("any", capacity: 1)
        XCTAssertEqual(h.dispatch(), [Assignment(worker: any, task: img, attempt: 1)])
    }

    func testLeastRecentlyUsedWorkerGetsTheNextTask() {
        var h = Harness()
        let ws = (1...3).map { h.register("w\($0)", capacity: 2) }
        var got: [PeerID] = []
        for _ in 0..<6 {
            h.submit()
            let a = h.dispatch()
            XCTAssertEqual(a.count, 1)
            got.append(a[0].worker)
        }
        XCTAssertEqual(Set(got[0..<3]), Set(ws), "each worker once before any twice")
        XCTAssertEqual(Array(got[3..<6]), Array(got[0..<3]), "then in least-recently-used order")
    }

    func testLeastRecentlyUsedSkipsWorkersThatDoNotAcceptTheType() {
        var h = Harness()
        let a = h.register("a", types: ["x"], capacity: 9)
        let b = h.register("b", capacity: 9)
        h.submit("y")
        XCTAssertEqual(h.dispatch().map(\.worker), [b])
        h.submit("x")
        XCTAssertEqual(h.dispatch().map(\.worker), [a], "a never used: least recently used")
        h.submit("x")
        XCTAssertEqual(h.dispatch().map(\.worker), [b], "b was used before a")
    }

    func testDrainingWorkerGetsNoNewTasksButFinishesItsOwn() {
        var h = Harness()
        let w = h.register("w", capacity: 2)
        let t1 = h.submit()
        XCTAssertEqual(h.dispatch().count, 1)
        h.s.drain(worker: w)
        h.submit()
        XCTAssertEqual(h.dispatch(), [])
        h.s.succeeded(t1, attempt: 1, result: Array("ok".utf8), from: w, now: h.now)
        XCTAssertEqual(h.state(t1), .succeeded)
        XCTAssertEqual(h.dispatch(), [])
        XCTAssertEqual(h.s.queueSize, 1)
    }

    func testStartedEventCarriesDispatchLatencyAndWorkerName() {
        var h = Harness()
        let id = h.submit()
        h.now += ms(250)
        _ = h.register("w7")
        _ = h.take()
        h.dispatch()
        let started = h.take().compactMap(\.event).compactMap { e -> (UInt16, String, Int64)? in
            if case .started(let t, let a, let w, let l) = e, t == id { return (a, w, l) }
            return nil
        }
        XCTAssertEqual(started.count, 1)
        XCTAssertEqual(started.first?.0, 1)
        XCTAssertEqual(started.first?.1, "w7")
        XCTAssertEqual(started.first?.2, ms(250))
        XCTAssertEqual(h.s.task(id)?.details?.worker, "w7")
        XCTAssertEqual(h.s.task(id)?.details?.startedAt, h.now)
        XCTAssertEqual(h.s.counters.dispatched, 1)
    }

    func testSuccessNotifiesTheSubmitterWithTheResult() {
        var h = Harness()
        let w = h.register("w")
        let id = h.submit(payload: "in")
        h.dispatch()
        h.now += ms(40)
        _ = h.take()
        h.s.progress(id, attempt: 1, percent: 50, message: "half", from: w, now: h.now)
        h.s.succeeded(id, attempt: 1, result: Array("OUT".utf8), from: w, now: h.now)
        let out = h.take()
        XCTAssertEqual(out.compactMap(\.finished), [Finished(client: h.client, task: id, state: .succeeded, body: Array("OUT".utf8))])
        XCTAssertEqual(out.compactMap(\.event).map(\.name), ["progress", "succeeded"])
        let t = h.s.task(id)!
        XCTAssertEqual(t.state, .succeeded)
        XCTAssertEqual(t.details?.result, Array("OUT".utf8))
        XCTAssertEqual(t.details?.progressPercent, 50)
        XCTAssertEqual(t.details?.finishedAt, h.now)
        XCTAssertEqual(t.payload, [], "a finished task's payload is released")
        XCTAssertEqual(h.s.counters.succeeded, 1)
        XCTAssertEqual(h.s.runningCount, 0)
    }
}

final class SchedulerBoundsTests: XCTestCase {
    func testQueueFullIsRejectedAndCountedDelayedTasksAreNot() {
        var h = Harness { $0.maxQueue = 3 }
        for _ in 0..<3 { h.submit() }
        let r = h.submitResult(TaskSpec(type: "a"))
        XCTAssertEqual(r.failureCode, "queue_full")
        XCTAssertEqual(h.s.counters.rejected, 1)
        XCTAssertEqual(h.s.counters.submitted, 3)
        XCTAssertEqual(h.s.queueSize, 3)
        // Delayed tasks do not count against the bound…
        let d1 = h.submit(delayMs: 1000)
        let d2 = h.submit(runAt: h.now + ms(1000))
        XCTAssertEqual(h.s.delayed, 2)
        XCTAssertEqual(h.s.queueSize, 3)
        // …and are admitted when due even though the queue is full (§9.1).
        h.advance(ms(1000))
        XCTAssertEqual(h.state(d1), .queued)
        XCTAssertEqual(h.state(d2), .queued)
        XCTAssertEqual(h.s.queueSize, 5)
        XCTAssertEqual(h.s.delayed, 0)
        XCTAssertEqual(h.submitResult(TaskSpec(type: "a")).failureCode, "queue_full")
        XCTAssertEqual(h.s.counters.rejected, 2)
        // Dispatching frees room.
        _ = h.register("w", capacity: 3)
        h.dispatch()
        XCTAssertEqual(h.s.queueSize, 2)
        XCTAssertNotNil(h.submitResult(TaskSpec(type: "a")).successID)
    }

    func testOtherRejectionsAreCounted() {
        var h = Harness {
            $0.allowedTypes = ["pdf"]
            $0.maxPayloadBytes = 4
        }
        XCTAssertEqual(h.submitResult(TaskSpec(type: "img")).failureCode, "unknown_type")
        XCTAssertEqual(h.submitResult(TaskSpec(type: "pdf", payload: [1, 2, 3, 4, 5])).failureCode, "payload_too_large")
        XCTAssertNotNil(h.submitResult(TaskSpec(type: "pdf", payload: [1, 2, 3, 4])).successID)
        h.s.stopAccepting()
        XCTAssertEqual(h.submitResult(TaskSpec(type: "pdf")).failureCode, "shutting_down")
        XCTAssertFalse(h.s.isAcceptingTasks)
        XCTAssertEqual(h.s.counters.rejected, 2)
        XCTAssertEqual(h.s.counters.submitted, 1)
    }

    func testDefaultsAndSpecFieldsAreKept() {
        var h = Harness { $0.defaultTimeoutMs = 1234 }
        let a = h.submit()
        let b = h.submit("b", .urgent, payload: "xyz", timeoutMs: 99, maxAttempts: 0)
        XCTAssertEqual(h.s.task(a)?.timeoutMs, 1234)
        XCTAssertEqual(h.s.task(a)?.maxAttempts, 1)
        let t = h.s.task(b)!
        XCTAssertEqual(t.timeoutMs, 99)
        XCTAssertEqual(t.maxAttempts, 1, "0 attempts means 1")
        XCTAssertEqual(t.payload, Array("xyz".utf8))
        XCTAssertEqual(t.priority, .urgent)
        XCTAssertEqual(t.type, "b")
        XCTAssertEqual(t.createdAt, h.now)
        XCTAssertEqual(t.attempt, 0)
        XCTAssertEqual(t.submitter, h.client)
        XCTAssertGreaterThan(b, a)
        XCTAssertGreaterThan(h.s.task(b)!.seq, h.s.task(a)!.seq)
    }
}

extension Result where Success == Accepted, Failure == Rejection {
    var failureCode: String? {
        if case .failure(let r) = self { return r.code }
        return nil
    }
    var successID: TaskID? {
        if case .success(let a) = self { return a.id }
        return nil
    }
}
