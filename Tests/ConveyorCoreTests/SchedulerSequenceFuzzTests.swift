import XCTest
@testable import ConveyorCore

/// Hostile-but-well-formed peers against the pure scheduler: seeded random
/// *sequences* of everything workers and clients can say — READY (duplicate
/// names, capacity 0 or 1024 or more), dispatch, RETURN, DONE, FAIL, PROGRESS,
/// RETRY_LATER, DRAIN, DISCONNECT, going silent, SUBMIT of thousands of
/// types with extreme times, CANCEL, dead-letter retry and purge, pauses —
/// with hostile values (attempt 0 and 65535, stale attempts, unknown ids,
/// reports from connections that do not hold the task). After every step the
/// state machine's invariants are checked (`Invariants` below). A trap fails
/// the whole run, which is the first thing this guards against.
///
/// `SchedulerModelTests` checks *which* task goes where against a reference
/// model; this checks that no sequence can break the bookkeeping.
/// Steps per seed: `CONVEYOR_FUZZ_STEPS` (default 1200; try 200000).
final class SchedulerSequenceFuzzTests: XCTestCase {
    static let steps = Int(ProcessInfo.processInfo.environment["CONVEYOR_FUZZ_STEPS"] ?? "") ?? 1200

    func testHostileSequencesKeepTheInvariants() {
        for seed in UInt64(1)...4 {
            let f = SequenceFuzzer(seed: seed, policies: false)
            f.run(steps: Self.steps)
            if f.failed { return }
        }
    }

    func testHostileSequencesUnderEveryPolicyKeepTheInvariants() {
        for seed in UInt64(201)...203 {
            let f = SequenceFuzzer(seed: seed, policies: true)
            f.run(steps: Self.steps)
            if f.failed { return }
        }
    }
}

private final class SequenceFuzzer {
    var h: Harness
    var rng: TestRNG
    let seed: UInt64
    var failed = false
    let config: SchedulerConfig

    /// Every task id the scheduler ever accepted (forgotten ones drop out).
    var known: Set<TaskID> = []
    var lastState: [TaskID: TaskState] = [:]
    var lastAttempt: [TaskID: UInt16] = [:]
    /// Attempt of each task's latest TASK message: every dispatch gets a new, larger one.
    var lastAssigned: [TaskID: UInt16] = [:]
    /// What each connection believes it holds (from TASK and CANCEL messages).
    var held: [PeerID: [TaskID: UInt16]] = [:]
    var connections: [PeerID] = []
    var connection = 0
    let names = ["w1", "w2", "w3"]
    let realTypes = ["a", "b", "c"]
    var junk = 0

    init(seed: UInt64, policies: Bool) {
        self.seed = seed
        rng = TestRNG(seed: seed)
        var c = SchedulerConfig()
        c.maxRunning = 6
        c.maxQueue = 400
        c.maxDeliveries = 3
        c.maxReturns = 4
        c.maxWorkerCapacity = 8
        c.maxTypes = 300
        c.heartbeatIntervalMs = 100
        c.heartbeatLiveness = 3
        c.resultTTLSeconds = 5
        c.maxFinishedInMemory = 300
        c.defaultTimeoutMs = 2000
        if policies {
            c.policy.typeConcurrency = ["a": 1]
            c.policy.rateLimits = ["b": WindowLimit(limit: 2, windowUs: ms(300))]
            c.policy.costLimits = ["c": WindowLimit(limit: 5, windowUs: ms(500))]
            c.policy.agingUs = ms(700)
        }
        let cfg = c
        config = cfg
        h = Harness({ $0 = cfg }, seed: seed)
    }

    func run(steps: Int) {
        for step in 0..<steps {
            let what = act()
            check(step, what)
            if failed { return }
        }
    }

    // MARK: Acting

    func pick<T>(_ xs: [T]) -> T? { xs.isEmpty ? nil : xs[Int.random(in: 0..<xs.count, using: &rng)] }
    func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }

    /// A report's (task, attempt): usually what the connection holds, else hostile.
    func target(for p: PeerID) -> (TaskID, UInt16) {
        let mine = held[p].map { Array($0).sorted { $0.key < $1.key } } ?? []
        if let (id, a) = pick(mine), chance(0.75) { return (id, a) }
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: return (pick(Array(known).sorted()) ?? TaskID(raw: 1), 0)
        case 1: return (pick(Array(known).sorted()) ?? TaskID(raw: 1), .max)
        case 2: return (TaskID(raw: UInt64.random(in: 0...UInt64.max, using: &rng)), 1) // unknown id
        case 3:
            // Someone else's task with its real attempt: must be stale from here.
            let id = pick(Array(known).sorted()) ?? TaskID(raw: 1)
            return (id, h.s.task(id)?.attempt ?? 1)
        case 4:
            let id = pick(Array(known).sorted()) ?? TaskID(raw: 1)
            return (id, (h.s.task(id)?.attempt ?? 2) &- 1) // a superseded attempt
        default: return (pick(mine)?.key ?? TaskID(raw: 0), UInt16.random(in: 0...UInt16.max, using: &rng))
        }
    }

    func randomType() -> String {
        if chance(0.6) { return pick(realTypes)! }
        if chance(0.5) { return "junk\(Int.random(in: 0..<3000, using: &rng))" }
        junk += 1
        return "fresh\(junk)"
    }

    func act() -> String {
        let roll = Int.random(in: 0..<100, using: &rng)
        switch roll {
        case 0..<8:
            connection += 1
            let p = peer("conn\(connection)")
            let name = chance(0.8) ? pick(names)! : "solo\(connection)"
            let types: Set<String>? = chance(0.5) ? nil : Set(realTypes.filter { _ in chance(0.5) } + (chance(0.3) ? ["junk1"] : []))
            let cap = pick([0, 1, 1, 2, 3, 1024, Int.max, -5])!
            let before = othersHeld(except: p)
            let reg = h.s.register(worker: p, name: name, types: types, capacity: cap, now: h.now)
            connections.append(p)
            held[p] = [:]
            // Identity is the connection: nobody else's tasks moved.
            expect(othersHeld(except: p) == before, "READY \(name) on another connection changed other workers' tasks")
            expect(reg.capacity >= 1 && reg.capacity <= config.maxWorkerCapacity, "granted capacity \(reg.capacity)")
            h.collect()
            return "READY \(reg.name) cap \(cap)"
        case 8..<10:
            guard let p = pick(liveConnections()) else { return "-" }
            h.s.register(worker: p, name: h.s.worker(p)?.name ?? "again", types: nil, capacity: 2, now: h.now)
            held[p] = [:]
            h.collect()
            return "READY again"
        case 10..<24:
            h.dispatch()
            absorb()
            return "dispatch"
        case 24..<32:
            guard let p = pick(connections) else { return "-" }
            let (id, a) = target(for: p)
            h.s.returned(id, attempt: a, from: p, now: h.now)
            held[p]?[id] = nil
            h.collect()
            return "RETURN \(id) \(a)"
        case 32..<42:
            guard let p = pick(connections) else { return "-" }
            let (id, a) = target(for: p)
            let cost: Int64? = pick([nil, 0, 1, 3, Int64.max])!
            h.s.succeeded(id, attempt: a, result: [1], cost: cost, from: p, now: h.now)
            held[p]?[id] = nil
            h.collect()
            return "DONE \(id) \(a)"
        case 42..<48:
            guard let p = pick(connections) else { return "-" }
            let (id, a) = target(for: p)
            h.s.failed(id, attempt: a, error: "boom", from: p, now: h.now)
            held[p]?[id] = nil
            h.collect()
            return "FAIL \(id) \(a)"
        case 48..<52:
            guard let p = pick(connections) else { return "-" }
            let (id, a) = target(for: p)
            h.s.progress(id, attempt: a, percent: pick([nil, 0, 50, 100, 255])!, message: "m", from: p, now: h.now)
            h.collect()
            return "PROGRESS \(id) \(a)"
        case 52..<56:
            guard let p = pick(connections) else { return "-" }
            let (id, a) = target(for: p)
            let after: Int64? = pick([nil, 0, 0, 50, 86_400_000, -1, Int64.max, Int64.min])!
            h.s.retryLater(id, attempt: a, afterMs: after, from: p, now: h.now)
            held[p]?[id] = nil
            h.collect()
            return "RETRY_LATER \(id) \(a)"
        case 56..<58:
            guard let p = pick(liveConnections()) else { return "-" }
            h.s.drain(worker: p)
            return "DRAIN"
        case 58..<61:
            guard let p = pick(connections) else { return "-" }
            h.s.workerGone(p, reason: "disconnected", now: h.now)
            held[p] = nil
            connections.removeAll { $0 == p }
            h.collect()
            return "DISCONNECT"
        case 61..<80:
            let type = randomType()
            var spec = TaskSpec(type: type, priority: Priority(rawValue: UInt8.random(in: 0...3, using: &rng))!,
                                payload: [1, 2], timeoutMs: pick([nil, 1, 50, 400, UInt32.max])!, maxAttempts: pick([1, 2, 3, 0, .max])!)
            switch Int.random(in: 0..<10, using: &rng) {
            case 0: spec.delayMs = pick([0, 1, 200, Int64.max])!
            case 1: spec.runAt = pick([Int64.max, Int64.min, 0, h.s.wall(h.now) + ms(150)])!
            case 2: spec.backoffMs = 0; spec.backoffMaxMs = 0
            case 3: spec.backoffMs = .max; spec.backoffMaxMs = .max
            case 4: spec.idempotencyKey = "k\(Int.random(in: 0..<20, using: &rng))"
            default: break
            }
            switch h.submitResult(spec) {
            case .success(let a): known.insert(a.id)
            case .failure(let r):
                expect(["queue_full", "too_many_types"].contains(r.code), "unexpected rejection \(r.code)")
                if r.code == "too_many_types" {
                    expect(h.s.queuedTypeCount >= config.maxTypes, "too_many_types with \(h.s.queuedTypeCount) types queued")
                }
            }
            return "SUBMIT \(type)"
        case 80..<85:
            let id = chance(0.9) ? (pick(Array(known).sorted()) ?? TaskID(raw: 3)) : TaskID(raw: 12345)
            _ = h.s.cancel(id, now: h.now)
            for p in held.keys { held[p]?[id] = nil }
            h.collect()
            return "CANCEL \(id)"
        case 85..<87:
            if let d = pick(h.s.deadLetters.map(\.id)) { _ = h.s.retryDead(d, now: h.now) }
            h.collect()
            return "DEAD retry"
        case 87:
            _ = h.s.purgeDead(chance(0.5) ? pick(h.s.deadLetters.map(\.id)) : nil)
            h.collect()
            return "DEAD purge"
        case 88..<90:
            let t = pick(realTypes)!
            if chance(0.5) { h.s.pause(type: t) } else { h.s.resume(type: t) }
            h.collect()
            return "PAUSE/RESUME \(t)"
        default:
            // Time passes; most workers heartbeat, some go silent.
            for p in liveConnections() where chance(0.85) { _ = h.s.heard(from: p, now: h.now) }
            h.advance(pick([ms(1), ms(20), ms(120), ms(350), sec(2)])!)
            absorb()
            return "advance"
        }
    }

    func liveConnections() -> [PeerID] { connections.filter { h.s.worker($0) != nil } }

    func othersHeld(except p: PeerID) -> [PeerID: Set<TaskID>] {
        var out: [PeerID: Set<TaskID>] = [:]
        for w in h.s.allWorkers where w.peer != p { out[w.peer] = w.running }
        return out
    }

    /// Applies what the scheduler said to workers to the connections' beliefs.
    func absorb() {
        for o in h.take() {
            switch o {
            case .assign(let w, let id, let a):
                if let prev = lastAssigned[id] { expect(a > prev, "task \(id) dispatched as attempt \(a) after \(prev)") }
                lastAssigned[id] = a
                held[w, default: [:]][id] = a
            case .cancelOnWorker(let w, let id, _, _):
                held[w]?[id] = nil
            default: break
            }
        }
        for p in held.keys where h.s.worker(p) == nil { held[p] = nil }
    }

    // MARK: Checking

    func expect(_ ok: @autoclosure () -> Bool, _ what: @autoclosure () -> String) {
        guard !failed, !ok() else { return }
        failed = true
        XCTFail("seed \(seed): \(what())")
    }

    func check(_ step: Int, _ what: String) {
        guard !failed else { return }
        let s = h.s
        let ctx = "step \(step) (\(what))"
        var byState: [TaskState: Int] = [:]
        var queuedTypes: [Int: Set<String>] = [:]
        for id in known {
            guard let t = s.task(id) else {
                known.remove(id)
                lastState[id] = nil
                continue
            }
            byState[t.state, default: 0] += 1
            if t.state == .queued { queuedTypes[Int(t.priority.rawValue), default: []].insert(t.type) }
            if let prev = lastState[id], prev != t.state {
                let direct = prev.canMove(to: t.state)
                let viaOne = TaskState.allCases.contains { prev.canMove(to: $0) && $0.canMove(to: t.state) }
                expect(direct || viaOne, "\(ctx): task \(id) moved \(prev.rawValue) -> \(t.state.rawValue)")
            }
            lastState[id] = t.state
            if let a = lastAttempt[id] { expect(t.attempt >= a, "\(ctx): task \(id) attempt went \(a) -> \(t.attempt)") }
            lastAttempt[id] = t.attempt
            expect(t.failures <= t.maxAttempts, "\(ctx): task \(id) has \(t.failures) failures of \(t.maxAttempts)")
            expect((t.details?.returns ?? 0) <= UInt16(config.maxReturns) + 1, "\(ctx): task \(id) returned \(t.details?.returns ?? 0) times")
            expect((t.details?.lostDeliveries ?? 0) <= config.maxDeliveries, "\(ctx): task \(id) lost \(t.details?.lostDeliveries ?? 0) deliveries")
            if t.state == .running {
                let holder = t.details?.workerPeer.flatMap { s.worker($0) }
                expect(holder?.running.contains(id) == true, "\(ctx): running task \(id) is not held by its worker")
            } else {
                expect(t.details?.workerPeer == nil || !s.allWorkers.contains { $0.running.contains(id) },
                       "\(ctx): \(t.state.rawValue) task \(id) is still held by a worker")
            }
        }
        // Running: the count, the workers' sets and the states agree, within every cap.
        let runningSets = s.allWorkers.map(\.running)
        let heldTotal = runningSets.reduce(0) { $0 + $1.count }
        let heldUnion = runningSets.reduce(into: Set<TaskID>()) { $0.formUnion($1) }
        expect(heldTotal == heldUnion.count, "\(ctx): a task is held by two workers")
        expect(s.runningCount == heldTotal, "\(ctx): running count \(s.runningCount) but workers hold \(heldTotal)")
        expect(s.runningCount == (byState[.running] ?? 0), "\(ctx): running count \(s.runningCount) but \(byState[.running] ?? 0) tasks running")
        expect(s.runningCount <= config.maxRunning, "\(ctx): \(s.runningCount) running over the cap \(config.maxRunning)")
        for w in s.allWorkers {
            expect(w.capacity >= 1 && w.capacity <= config.maxWorkerCapacity, "\(ctx): worker \(w.name) capacity \(w.capacity)")
            expect(w.running.count <= w.capacity, "\(ctx): worker \(w.name) runs \(w.running.count) of \(w.capacity)")
            for id in w.running { expect(s.task(id)?.state == .running, "\(ctx): worker \(w.name) holds a \(s.task(id)?.state.rawValue ?? "gone") task") }
        }
        let names = s.allWorkers.map(\.name)
        expect(Set(names).count == names.count, "\(ctx): two workers share a name: \(names.sorted())")
        // Queued: counts, listing and lanes agree; nothing is both queued and running.
        let listing = s.queuedInOrder(limit: .max, now: h.now)
        let listed = Set(listing.map(\.id))
        expect(listed.count == listing.count, "\(ctx): a task is listed twice")
        expect(listing.count == s.queueSize, "\(ctx): listing has \(listing.count), queue size \(s.queueSize)")
        expect(s.queueSize == (byState[.queued] ?? 0), "\(ctx): queue size \(s.queueSize) but \(byState[.queued] ?? 0) tasks queued")
        expect(listed.isDisjoint(with: heldUnion), "\(ctx): a task is both queued and running")
        for p in Priority.allCases {
            expect(s.queueSize(p) == listing.filter { $0.priority == p }.count, "\(ctx): per-priority count of \(p) is off")
        }
        expect(s.delayed == (byState[.delayed] ?? 0), "\(ctx): delayed \(s.delayed) but \(byState[.delayed] ?? 0) tasks delayed")
        expect(s.deadLetterCount == s.deadLetters.count, "\(ctx): dead-letter count \(s.deadLetterCount) vs \(s.deadLetters.count)")
        // Lanes exist for exactly the types with queued tasks; the head index stays bounded.
        let q = s.readyQueue
        let allTypes = queuedTypes.values.reduce(into: Set<String>()) { $0.formUnion($1) }
        expect(s.queuedTypeCount == allTypes.count, "\(ctx): \(s.queuedTypeCount) lanes for \(allTypes.count) queued types")
        for level in 0..<ReadyQueue.levels {
            let n = queuedTypes[level]?.count ?? 0
            expect(q.lanesWithTasks(level: level) == n, "\(ctx): level \(level) has \(q.lanesWithTasks(level: level)) lanes for \(n) types")
            expect(q.headIndexSize(level: level) <= 2 * n + 64, "\(ctx): level \(level) head index holds \(q.headIndexSize(level: level)) keys for \(n) lanes")
        }
        // A queued task's position is its place in the listing (checked on a sample: it is O(n) each).
        if let t = pick(listing), let i = listing.firstIndex(where: { $0.id == t.id }) {
            expect(s.queuePosition(of: t.id, now: h.now) == i, "\(ctx): position of \(t.id) is \(s.queuePosition(of: t.id, now: h.now) ?? -1), listed at \(i)")
        }
    }
}
