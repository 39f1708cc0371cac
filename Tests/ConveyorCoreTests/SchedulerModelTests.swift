import XCTest
@testable import ConveyorCore

/// Drives the scheduler with long seeded random sequences of everything the
/// broker can do, and after every step checks it against a reference model:
/// the queue order (rebuilt from the emitted events alone), the dispatch
/// choices (the best-ranked task of an eligible type some free worker accepts,
/// to the least recently used such worker), the counts, the running slots and
/// every state transition (`TaskState.canMove`).
///
/// The policy runs add every dispatch policy: type concurrency, a sliding
/// rate window, a cost budget, aging, pauses and RETRY_LATER holds; the model
/// computes each of them on its own, from the operations and events.
final class SchedulerModelTests: XCTestCase {
    /// Steps per seed; `CONVEYOR_MODEL_STEPS` runs longer.
    static let steps = Int(ProcessInfo.processInfo.environment["CONVEYOR_MODEL_STEPS"] ?? "") ?? 2500

    func testRandomOperationsAgreeWithTheReferenceModel() {
        runSeeds(UInt64(1)...6, policies: false)
    }

    func testRandomOperationsUnderEveryPolicyAgreeWithTheReferenceModel() {
        runSeeds(UInt64(101)...106, policies: true)
    }

    /// Each seed must agree with the model; together they must exercise every
    /// path (one seed alone may, with Swift's per-process hash seeding, lose no worker).
    private func runSeeds(_ seeds: ClosedRange<UInt64>, policies: Bool) {
        var total = SchedulerCounters()
        for seed in seeds {
            let sim = Simulation(seed: seed, policies: policies)
            sim.run(steps: Self.steps)
            if sim.failed { return }
            let c = sim.h.s.counters
            total.succeeded += c.succeeded
            total.reassigned += c.reassigned
            total.retried += c.retried
            total.rateLimited += c.rateLimited
        }
        XCTAssertTrue(total.succeeded > 0 && total.reassigned > 0 && total.retried > 0 && (!policies || total.rateLimited > 0),
                      "the runs exercised too little: \(total)")
    }
}

private final class Simulation {
    var h: Harness
    var rng: TestRNG
    let seed: UInt64
    var failed = false

    // The model.
    var known: [TaskID: TaskState] = [:]
    var info: [TaskID: (type: String, priority: Priority)] = [:]
    /// Queued tasks: their order key (appends count up, prepends down) and
    /// since when they wait (for aging).
    var modelKey: [TaskID: UInt64] = [:]
    var modelSince: [TaskID: Timestamp] = [:]
    var sinceAtDispatch: [TaskID: Timestamp] = [:]
    var nextTail: UInt64 = 1 << 40
    var nextHead: UInt64 = (1 << 40) - 1
    // The policy, as the model sees it.
    let policies: Bool
    let concurrency: [String: Int]
    let rate: [String: WindowLimit]
    let budget: [String: WindowLimit]
    let aging: Int64?
    var paused: Set<String> = []
    var holds: [String: Timestamp] = [:]
    var dispatchTimes: [String: [Timestamp]] = [:]
    var costReports: [String: [(at: Timestamp, units: Int64)]] = [:]
    var lastUsed: [PeerID: Int] = [:]
    var useCounter = 0
    var dispatchOrder: [TaskID: Int] = [:]
    var holding: [TaskID: Assignment] = [:]
    var history: [Assignment] = []
    var finishedNotes: [TaskID: Int] = [:]
    var becameFinal: [TaskID: Int] = [:]
    var connection = 0
    let names = ["w0", "w1", "w2", "w3", "w4"]
    let typeNames = ["a", "b", "c"]

    init(seed: UInt64, policies: Bool) {
        self.seed = seed
        self.policies = policies
        rng = TestRNG(seed: seed)
        var p = PolicyConfig()
        if policies {
            p.typeConcurrency = ["a": 1]
            p.rateLimits = ["b": WindowLimit(limit: 2, windowUs: ms(400))]
            p.costLimits = ["c": WindowLimit(limit: 4, windowUs: ms(500))]
            p.agingUs = ms(700)
            p.defaultHoldMs = 150
            p.maxHoldMs = 400
        }
        concurrency = p.typeConcurrency
        rate = p.rateLimits
        budget = p.costLimits
        aging = p.agingUs
        let policy = p
        h = Harness({
            $0.maxRunning = 4
            $0.maxQueue = 25
            $0.maxDeliveries = 2
            $0.resultTTLSeconds = 2
            $0.maxFinishedInMemory = 40
            $0.heartbeatIntervalMs = 100
            $0.heartbeatLiveness = 3
            $0.policy = policy
        }, seed: seed)
    }

    /// What happened, for the failure message.
    var trace: [String] = []

    func check(_ ok: @autoclosure () -> Bool, _ what: @autoclosure () -> String, step: Int) {
        if failed || ok() { return }
        failed = true
        XCTFail("seed \(seed) step \(step): \(what())\nlast operations:\n" + trace.suffix(40).joined(separator: "\n"))
    }

    func run(steps: Int) {
        for step in 0..<steps {
            let roll = Int.random(in: 0..<100, using: &rng)
            switch roll {
            case 0..<28: submit(step)
            case 28..<33: register()
            case 33..<36: workerGone()
            case 36..<38: drain()
            case 38..<58: dispatch(step)
            case 58..<72: advance()
            case 72..<88: report(step)
            case 88..<93: staleReport(step)
            case 93..<96: cancel()
            case 96..<98: retryDead()
            case 98: if policies { pauseOrResume() } else { purge() }
            default: purge()
            }
            if roll < 38 || roll >= 58 {
                let out = h.take()
                trace.append("\(step): roll \(roll) → " + out.map(describe).joined(separator: "; "))
                process(out, step: step, dispatching: false)
            }
            verify(step)
            if failed { return }
        }
        check(!history.isEmpty, "the run did nothing", step: steps)
    }

    // MARK: Operations

    func submit(_ step: Int) {
        let p = Priority.allCases.randomElement(using: &rng)!
        let type = typeNames.randomElement(using: &rng)!
        let delayed = Int.random(in: 0..<100, using: &rng) < 15
        let key = Int.random(in: 0..<100, using: &rng) < 10 ? "k\(Int.random(in: 0..<8, using: &rng))" : nil
        let spec = TaskSpec(
            type: type, priority: p, payload: [UInt8(step & 0xff)], timeoutMs: UInt32.random(in: 50...600, using: &rng),
            maxAttempts: UInt16.random(in: 1...3, using: &rng), idempotencyKey: key,
            delayMs: delayed ? Int64.random(in: 1...1500, using: &rng) : nil,
            backoffMs: UInt32.random(in: 0...40, using: &rng), backoffMaxMs: 60
        )
        let queuedBefore = h.s.queueSize
        let r = h.submitResult(spec)
        switch r {
        case .success(let a):
            if a.duplicate {
                check(known[a.id] != nil || h.s.task(a.id) != nil, "duplicate of an unknown task", step: step)
                return
            }
            check(known[a.id] == nil, "id reused", step: step)
            known[a.id] = delayed ? .delayed : .queued
            info[a.id] = (type, p)
            check(h.state(a.id) == known[a.id], "new task in the wrong state", step: step)
        case .failure(let rej):
            check(rej.code == "queue_full" && !delayed && queuedBefore >= 25, "unexpected rejection \(rej)", step: step)
        }
    }

    func register() {
        let name = names.randomElement(using: &rng)!
        connection += 1
        let p = peer("\(name)#\(connection)")
        let types: Set<String>? = Bool.random(using: &rng) ? nil : Set(typeNames.filter { _ in Bool.random(using: &rng) })
        h.s.register(worker: p, name: name, types: types, capacity: Int.random(in: 1...3, using: &rng), now: h.now)
        lastUsed[p] = 0
    }

    func randomWorker() -> PeerID? {
        h.s.allWorkers.map(\.peer).sorted { $0.bytes.lexicographicallyPrecedes($1.bytes) }.randomElement(using: &rng)
    }

    func workerGone() {
        guard let w = randomWorker() else { return }
        h.s.workerGone(w, reason: "gone", now: h.now)
    }

    func drain() {
        guard let w = randomWorker() else { return }
        h.s.drain(worker: w)
    }

    func dispatch(_ step: Int) {
        var free: [PeerID: (slots: Int, worker: WorkerRecord)] = [:]
        for w in h.s.allWorkers { free[w.peer] = (w.freeSlots, w) }
        var running = h.s.runningCount
        let out = h.take()
        process(out, step: step, dispatching: false)
        runningNow = Dictionary(grouping: holding.keys, by: { self.info[$0]!.type }).mapValues(\.count)
        h.s.dispatch(now: h.now)
        let produced = h.take()
        for a in produced.compactMap(\.assignment) {
            check(running < 4, "dispatched beyond max_running", step: step)
            // The expected task: the first in model order of an eligible type some free worker accepts.
            let expected = modelListing().first { id in
                self.eligible(self.info[id]!.type) && free.values.contains { $0.slots > 0 && $0.worker.accepts(self.info[id]!.type) }
            }
            check(a.task == expected, "dispatched \(a.task) but the model expected \(String(describing: expected))", step: step)
            guard let f = free[a.worker] else {
                check(false, "dispatched to an unknown worker", step: step)
                return
            }
            check(f.slots > 0 && f.worker.accepts(info[a.task]!.type), "dispatched to a full or unsuitable worker", step: step)
            let eligible = free.filter { $0.value.slots > 0 && $0.value.worker.accepts(info[a.task]!.type) }
            let lru = eligible.keys.map { lastUsed[$0] ?? 0 }.min()
            check(lastUsed[a.worker] == lru, "\(a.task) went to \(a.worker), not the least recently used of "
                  + eligible.keys.map { "\($0): model \(self.lastUsed[$0] ?? -1), scheduler \(self.h.s.worker($0)?.lastUsed ?? 0)" }
                  .joined(separator: ", ") + "; produced " + produced.map(describe).joined(separator: "; "), step: step)
            free[a.worker]!.slots -= 1
            running += 1
            sinceAtDispatch[a.task] = modelSince[a.task]
            check(remove(a.task), "assigned \(a.task), which the model has not queued", step: step)
            useCounter += 1
            lastUsed[a.worker] = useCounter
            dispatchOrder[a.task] = useCounter
            dispatchTimes[info[a.task]!.type, default: []].append(h.now)
            runningNow[info[a.task]!.type, default: 0] += 1
        }
        runningNow = [:]
        trace.append("\(step): dispatch → " + produced.map(describe).joined(separator: "; "))
        process(produced, step: step, dispatching: true)
        // Nothing dispatchable is left behind.
        if running < 4 {
            runningNow = Dictionary(grouping: holding.keys, by: { self.info[$0]!.type }).mapValues(\.count)
            defer { runningNow = [:] }
            let stillPossible = modelListing().contains { id in
                eligible(info[id]!.type) && free.values.contains { $0.slots > 0 && $0.worker.accepts(info[id]!.type) }
            }
            check(!stillPossible, "a dispatchable task was left in the queue", step: step)
        }
    }

    func advance() {
        let dt = ms(Int64.random(in: 1...300, using: &rng))
        h.now += dt
        for w in h.s.allWorkers where Int.random(in: 0..<100, using: &rng) < 92 { _ = h.s.heard(from: w.peer, now: h.now) }
        h.s.tick(now: h.now)
    }

    func report(_ step: Int) {
        guard let a = holding.values.sorted(by: { $0.task < $1.task }).randomElement(using: &rng) else { return }
        let stale = h.s.counters.staleResults
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<50:
            let cost: Int64? = policies ? Int64.random(in: 0...3, using: &rng) : nil
            h.s.succeeded(a.task, attempt: a.attempt, result: [1], cost: cost, from: a.worker, now: h.now)
            if let cost, cost > 0 { costReports[info[a.task]!.type, default: []].append((h.now, cost)) }
        case 50..<72: h.s.failed(a.task, attempt: a.attempt, error: "e", from: a.worker, now: h.now)
        case 72..<82: h.s.returned(a.task, attempt: a.attempt, from: a.worker, now: h.now)
        case 82..<90 where policies:
            let asked: Int64? = [nil, 0, 60, 250, 5000].randomElement(using: &rng)!
            h.s.retryLater(a.task, attempt: a.attempt, afterMs: asked, from: a.worker, now: h.now)
            let ms = min(max(0, asked ?? 150), 400)
            let type = info[a.task]!.type
            if ms > 0 { holds[type] = max(holds[type] ?? 0, h.now + ms * 1000) }
        default: h.s.progress(a.task, attempt: a.attempt, percent: 5, message: "m", from: a.worker, now: h.now)
        }
        check(h.s.counters.staleResults == stale, "a current report was counted stale", step: step)
    }

    func staleReport(_ step: Int) {
        var candidates = history.filter { holding[$0.task] != $0 }
        // The current attempt from another connection is stale too.
        if let cur = holding.values.sorted(by: { $0.task < $1.task }).first, let other = randomWorker(), other != cur.worker {
            candidates.append(Assignment(worker: other, task: cur.task, attempt: cur.attempt))
        }
        guard let a = candidates.randomElement(using: &rng) else { return }
        let stale = h.s.counters.staleResults
        let before = h.s.task(a.task)
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: h.s.succeeded(a.task, attempt: a.attempt, result: [], from: a.worker, now: h.now)
        case 1: h.s.failed(a.task, attempt: a.attempt, error: "late", from: a.worker, now: h.now)
        case 2: h.s.returned(a.task, attempt: a.attempt, from: a.worker, now: h.now)
        default: h.s.progress(a.task, attempt: a.attempt, percent: nil, message: "late", from: a.worker, now: h.now)
        }
        check(h.s.counters.staleResults == stale + 1, "a stale report was not counted", step: step)
        check(h.take().isEmpty, "a stale report produced output", step: step)
        check(h.s.task(a.task)?.state == before?.state && h.s.task(a.task)?.attempt == before?.attempt,
              "a stale report changed the task", step: step)
    }

    func cancel() {
        guard let id = known.keys.sorted().randomElement(using: &rng) else { return }
        _ = h.s.cancel(id, now: h.now)
    }

    func pauseOrResume() {
        let type = typeNames.randomElement(using: &rng)!
        if paused.contains(type) {
            check(h.s.resume(type: type), "resume of a paused type changed nothing", step: -1)
            paused.remove(type)
        } else {
            check(h.s.pause(type: type), "pause of a running type changed nothing", step: -1)
            paused.insert(type)
        }
    }

    func retryDead() {
        guard let id = h.s.deadLetters.map(\.id).randomElement(using: &rng) else { return }
        _ = h.s.retryDead(id, now: h.now)
    }

    func purge() {
        _ = h.s.purgeDead(Bool.random(using: &rng) ? nil : h.s.deadLetters.first?.id)
    }

    func describe(_ o: SchedulerOutput) -> String {
        func t(_ id: TaskID) -> String {
            guard let i = info[id] else { return "\(id.raw & 0xffff)" }
            return "\(id.raw & 0xffff)(\(i.type)/\(i.priority.rawValue))"
        }
        switch o {
        case .assign(let w, let id, let a): return "assign \(t(id))#\(a) → \(w)"
        case .cancelOnWorker(let w, let id, let a, let r): return "cancelOnWorker \(t(id))#\(a) \(w) \(r)"
        case .notifyProgress(_, let id, _, _): return "progress \(t(id))"
        case .notifyFinished(_, let id, let st, _): return "finished \(t(id)) \(st)"
        case .event(let e):
            switch e {
            case .workerJoined(let n, let types, let c): return "joined \(n) \(types) cap \(c)"
            case .workerLost(let n, let r): return "lost \(n) (\(r))"
            default: return "\(e.name) \(e.taskID.map(t) ?? "")"
            }
        }
    }

    // MARK: The model

    /// Running tasks per type during one dispatch check.
    var runningNow: [String: Int] = [:]

    func remove(_ id: TaskID) -> Bool {
        modelSince[id] = nil
        return modelKey.removeValue(forKey: id) != nil
    }

    func append(_ id: TaskID) {
        modelKey[id] = nextTail
        nextTail += 1
        modelSince[id] = h.now
    }

    func prepend(_ id: TaskID) {
        // No less waiting time than the task it goes in front of (its lane's head).
        let laneHead = modelKey.filter { info[$0.key]!.type == info[id]!.type && info[$0.key]!.priority == info[id]!.priority }
            .min { $0.value < $1.value }?.key
        var since = min(sinceAtDispatch[id] ?? h.now, h.now)
        if let laneHead, let s = modelSince[laneHead] { since = min(since, s) }
        modelKey[id] = nextHead
        nextHead -= 1
        modelSince[id] = since
    }

    func level(_ id: TaskID) -> Int {
        let base = Int(info[id]!.priority.rawValue)
        guard let aging, let since = modelSince[id], h.now > since else { return base }
        return min(3, base + Int((h.now - since) / aging))
    }

    func parked(_ type: String) -> Bool { paused.contains(type) || (holds[type] ?? 0) > h.now }

    /// Whether a task of `type` may start now, computed from the model's own records.
    func eligible(_ type: String) -> Bool {
        if parked(type) { return false }
        if let cap = concurrency[type], runningNow[type, default: 0] >= cap { return false }
        if let r = rate[type], (dispatchTimes[type] ?? []).filter({ $0 > h.now - r.windowUs }).count >= r.limit { return false }
        if let b = budget[type], (costReports[type] ?? []).filter({ $0.at > h.now - b.windowUs }).reduce(0, { $0 + $1.units }) >= b.limit {
            return false
        }
        return true
    }

    /// Every queued task in the model's order: types that can run first, then
    /// by effective level, then by order key.
    func modelListing() -> [TaskID] {
        modelKey.keys.sorted { a, b in
            let pa = parked(info[a]!.type), pb = parked(info[b]!.type)
            if pa != pb { return !pa }
            let la = level(a), lb = level(b)
            return la != lb ? la > lb : modelKey[a]! < modelKey[b]!
        }
    }

    func process(_ out: [SchedulerOutput], step: Int, dispatching: Bool) {
        var lostGroup: [TaskID] = []
        for o in out {
            switch o {
            case .assign(let w, let t, let a):
                check(dispatching, "assign outside dispatch", step: step)
                check(h.s.task(t)?.attempt == a, "assign attempt differs from the task's", step: step)
                let asg = Assignment(worker: w, task: t, attempt: a)
                holding[t] = asg
                history.append(asg)
            case .cancelOnWorker(let w, let t, let a, _):
                check(holding[t] == Assignment(worker: w, task: t, attempt: a), "cancel for an attempt the worker does not hold", step: step)
            case .notifyFinished(_, let t, _, _):
                finishedNotes[t, default: 0] += 1
            case .notifyProgress(_, let t, _, _):
                check(holding[t] != nil, "progress for a task not running", step: step)
            case .event(let e):
                switch e {
                case .queued(let id, let position):
                    append(id)
                    let ahead = modelListing().firstIndex(of: id) ?? -1
                    check(position == ahead, "queued position \(position), model says \(ahead)", step: step)
                case .due(let id), .deadRetried(let id):
                    append(id)
                case .reassigned(let id, _), .returned(let id, _), .rateLimited(let id, _, _):
                    prepend(id)
                    if case .reassigned = e { lostGroup.append(id) }
                case .cancelled(let id, let previous):
                    if previous == .queued { check(remove(id), "cancelled a task the model has not queued", step: step) }
                case .workerLost:
                    // Prepended latest first, so that they end in dispatch order.
                    let orders = lostGroup.map { dispatchOrder[$0] ?? 0 }
                    check(orders == orders.sorted(by: >), "lost tasks not requeued in dispatch order", step: step)
                    lostGroup = []
                default: break
                }
            }
        }
    }

    func verify(_ step: Int) {
        var counts: [TaskState: Int] = [:]
        for (id, previous) in known {
            guard let t = h.s.task(id) else {
                check(previous.isFinal, "task \(id) vanished while \(previous)", step: step)
                known[id] = nil
                continue
            }
            if t.state != previous {
                check(previous.canMove(to: t.state), "\(previous) → \(t.state) is not a transition of the state machine", step: step)
                if t.state.isFinal && !previous.isFinal { becameFinal[id, default: 0] += 1 }
                known[id] = t.state
            }
            counts[t.state, default: 0] += 1
            check(t.failures <= t.maxAttempts, "more failures than attempts", step: step)
            check(t.attempt >= t.failures, "failures exceed dispatches", step: step)
            if t.details?.dead == true { check(t.state == .failed || t.state == .timedOut, "dead letter in state \(t.state)", step: step) }
            if t.state == .running {
                let a = holding[id]
                check(a?.attempt == t.attempt, "running attempt \(t.attempt) but the model holds \(String(describing: a))", step: step)
                check(a.map { h.s.worker($0.worker)?.running.contains(id) == true } ?? false, "running task not on its worker", step: step)
            }
        }
        holding = holding.filter { known[$0.key] == .running && h.s.task($0.key)?.attempt == $0.value.attempt }
        let modelOrder = modelListing()
        check(h.queuedIDs() == modelOrder, "queue \(h.queuedIDs()) != model \(modelOrder)", step: step)
        check(h.s.queueSize == modelOrder.count && h.s.queueSize == counts[.queued, default: 0], "queue size", step: step)
        for p in Priority.allCases {
            check(h.s.queueSize(p) == modelKey.keys.filter { self.info[$0]!.priority == p }.count, "queue size of \(p)", step: step)
        }
        // queue_position agrees with the listing for a sample of tasks.
        for (i, id) in modelOrder.enumerated() where i % 7 == 0 {
            check(h.s.queuePosition(of: id, now: h.now) == i, "position of \(id) is \(String(describing: h.s.queuePosition(of: id, now: h.now))), listing says \(i)", step: step)
        }
        if policies {
            for (type, cap) in concurrency {
                let n = holding.keys.filter { self.info[$0]!.type == type }.count
                check(n <= cap, "\(n) tasks of \(type) running, limit \(cap)", step: step)
            }
            for (type, r) in rate {
                let times = dispatchTimes[type] ?? []
                if times.count > r.limit {
                    let i = times.count - Int(r.limit) - 1
                    check(times[times.count - 1] - times[i] >= r.windowUs, "more than \(r.limit) dispatches of \(type) within \(r.windowUs) µs", step: step)
                }
            }
        }
        check(h.s.delayed == counts[.delayed, default: 0], "delayed count \(h.s.delayed) vs \(counts[.delayed, default: 0])", step: step)
        let onWorkers = h.s.allWorkers.reduce(0) { $0 + $1.running.count }
        check(h.s.runningCount == counts[.running, default: 0] && onWorkers == h.s.runningCount && holding.count == h.s.runningCount,
              "running: \(h.s.runningCount) vs tasks \(counts[.running, default: 0]) vs workers \(onWorkers)", step: step)
        check(h.s.runningCount <= 4, "over max_running", step: step)
        for w in h.s.allWorkers { check(w.running.count <= w.capacity, "worker over capacity", step: step) }
        for (id, n) in finishedNotes where known[id] != nil {
            check(n == becameFinal[id, default: 0], "\(n) FINISHED for \(becameFinal[id, default: 0]) final transitions of \(id)", step: step)
        }
    }
}
