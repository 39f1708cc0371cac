import DequeModule
import HeapModule

/// The broker's brain, with no I/O: it owns every task and worker, decides
/// what runs where, and reports what happened as `SchedulerOutput`s that an
/// adapter turns into ZeroMQ messages, journal writes and published events.
///
/// Every method takes `now`, so tests drive time by hand. `now` is monotonic
/// time: deadlines, heartbeats, rate windows, holds and backoff are measured
/// on it. Timestamps that are stored or shown are wall time, `now` plus the
/// offset the adapter last gave `setWallClock` (0 unless told). Which queued
/// task goes next is `DispatchPolicy`'s decision. Not thread-safe: one thread
/// (the broker loop) owns it.
public struct Scheduler: Sendable {
    public private(set) var config: SchedulerConfig
    public private(set) var counters = SchedulerCounters()
    public private(set) var isAcceptingTasks = true

    private var tasks: [TaskID: TaskRecord] = [:]
    private var queue = ReadyQueue()
    public private(set) var policy: DispatchPolicy
    /// Wall clock minus monotonic clock, as of the adapter's last reading.
    public private(set) var wallOffset: Int64 = 0
    private var workers: [PeerID: WorkerRecord] = [:]
    private var workerByName: [String: PeerID] = [:]
    private var running = 0
    private var delayedCount = 0
    private var deadlines = Heap<Deadline>()
    private var delayedHeap = Heap<Deadline>()
    private var finished = Deque<(id: TaskID, at: Timestamp)>()
    private var idempotency: [String: TaskID] = [:]
    private var ids: TaskIDGenerator
    private var nextSeq: UInt64 = 1
    private var useCounter: UInt64 = 0
    private var nextLivenessCheck: Timestamp = 0
    private var rng: SplitMix64
    private var outbox: [SchedulerOutput] = []

    struct Deadline: Comparable, Sendable {
        let at: Timestamp
        let id: TaskID
        let attempt: UInt16
        /// For delayed tasks: the wall-clock `run_at` this entry is for
        /// (a newer retry or restore supersedes the entry).
        var runAt: Timestamp = 0
        static func < (a: Deadline, b: Deadline) -> Bool { a.at < b.at || (a.at == b.at && a.id < b.id) }
    }

    /// - Parameters:
    ///   - now: monotonic time.
    ///   - wallNow: the wall clock at `now` (default: the same number); task
    ///     ids carry its milliseconds, stored timestamps follow it.
    public init(config: SchedulerConfig, now: Timestamp, wallNow: Timestamp? = nil, lastID: TaskID? = nil, seed: UInt64 = 0x9E37_79B9) {
        self.config = config
        policy = DispatchPolicy(config: config.policy)
        wallOffset = (wallNow ?? now) - now
        ids = TaskIDGenerator(now: wallNow ?? now, after: lastID)
        rng = SplitMix64(seed: seed)
    }

    // MARK: Time

    /// Tells the scheduler the wall clock that goes with monotonic `now`.
    /// Only stored and shown timestamps move when the wall clock steps.
    public mutating func setWallClock(_ wall: Timestamp, at now: Timestamp) { wallOffset = wall - now }

    /// The wall-clock time of monotonic `now`.
    public func wall(_ now: Timestamp) -> Timestamp { now.adding(saturating: wallOffset) }

    // MARK: Reading

    /// The task table as the policy sees it.
    struct Table: QueuedTasks {
        let tasks: [TaskID: TaskRecord]
        func isQueued(_ id: TaskID) -> Bool { tasks[id]?.state == .queued }
        /// A task put back at the head keeps the waiting time it had before its dispatch.
        func waitingSince(_ id: TaskID) -> Timestamp {
            guard let t = tasks[id] else { return 0 }
            return t.details?.queuedSince ?? t.readyAt
        }
    }

    var table: Table { Table(tasks: tasks) }

    public func task(_ id: TaskID) -> TaskRecord? { tasks[id] }
    public func worker(_ peer: PeerID) -> WorkerRecord? { workers[peer] }
    public var allWorkers: Dictionary<PeerID, WorkerRecord>.Values { workers.values }
    public var queueSize: Int { queue.count }
    /// Task types with queued tasks (each has a lane; bounded by `maxTypes`).
    public var queuedTypeCount: Int { queue.typeCount }
    /// The ready queue's storage, for tests that check what it keeps.
    var readyQueue: ReadyQueue { queue }
    public func queueSize(_ p: Priority) -> Int { queue.count(p) }
    public var runningCount: Int { running }
    public var delayed: Int { delayedCount }
    public var workersBusy: Int { workers.values.reduce(0) { $0 + ($1.running.isEmpty ? 0 : 1) } }

    /// Queued tasks in the policy's dispatch order, at most `limit`.
    public func queuedInOrder(limit: Int, now: Timestamp) -> [TaskRecord] {
        policy.listing(queue, now: now, tasks: table, limit: limit).compactMap { tasks[$0] }
    }

    public var runningTasks: [TaskRecord] {
        workers.values.flatMap { $0.running }.compactMap { tasks[$0] }.sorted { $0.seq < $1.seq }
    }

    /// Position in the policy's dispatch order (0 = next), or nil when not
    /// queued; the same order as `queuedInOrder`, without building a listing.
    public func queuePosition(of id: TaskID, now: Timestamp) -> Int? {
        guard let t = tasks[id], t.state == .queued else { return nil }
        let level = Int(t.priority.rawValue)
        guard let entry = queue.lane(type: t.type, level: level)?.first(where: { $0.id == id }) else { return nil }
        return policy.position(type: t.type, own: policy.rank(entry, level: level, now: now, tasks: table), ownID: id, in: queue, now: now,
                               tasks: table)
    }

    /// Why a queued task is not running yet, or nil if it is not queued.
    public func waitingFor(_ id: TaskID, now: Timestamp) -> WaitReason? {
        guard let t = tasks[id], t.state == .queued else { return nil }
        if let r = policy.blocked(t.type, now: now) { return r }
        if !workers.values.contains(where: { $0.accepts(t.type) }) { return .noWorkerForType }
        return .capacity
    }

    /// Per-type figures for stats: every type with queued or running tasks,
    /// a configured limit, a hold or a pause.
    public func typeStats(now: Timestamp) -> [TypeStats] {
        var names = Set(queue.types)
        names.formUnion(policy.config.typeConcurrency.keys)
        names.formUnion(policy.config.rateLimits.keys)
        names.formUnion(policy.config.costLimits.keys)
        names.formUnion(policy.paused)
        names.formUnion(policy.holds.keys)
        for w in workers.values { for id in w.running { if let t = tasks[id] { names.insert(t.type) } } }
        return names.sorted().map { type in
            TypeStats(
                type: type, queued: queue.count(type: type), running: policy.running(type: type),
                concurrencyLimit: policy.config.typeConcurrency[type],
                rateLimit: policy.config.rateLimits[type], dispatchesInWindow: policy.dispatchesInWindow(type: type, now: now),
                costLimit: policy.config.costLimits[type], costInWindow: policy.costUsed(type: type, now: now),
                heldUntil: policy.holds[type].flatMap { $0 > now ? wall($0) : nil }, paused: policy.paused.contains(type),
                blocked: policy.blocked(type, now: now)
            )
        }
    }

    /// Tasks in the dead-letter set, kept as a count so stats stay O(1).
    public private(set) var deadLetterCount = 0

    public var deadLetters: [TaskRecord] {
        tasks.values.filter { $0.details?.dead == true }.sorted { $0.seq < $1.seq }
    }

    /// The earliest moment `tick` has work to do.
    public var nextDeadline: Timestamp? {
        [deadlines.min?.at, delayedHeap.min?.at, workers.isEmpty ? nil : nextLivenessCheck].compactMap { $0 }.min()
    }

    /// The earliest moment after which `tick` or `dispatch` may have work:
    /// timers, plus holds and rate or cost windows running out. The broker
    /// sleeps until then instead of polling.
    public func nextDeadline(now: Timestamp) -> Timestamp? {
        [nextDeadline, queue.isEmpty && policy.holds.isEmpty ? nil : policy.nextWakeup(now: now)].compactMap { $0 }.min()
    }

    /// Takes what the adapter must act on. The buffer's storage is reused.
    public mutating func drainOutput(into buffer: inout [SchedulerOutput]) {
        buffer.removeAll(keepingCapacity: true)
        swap(&buffer, &outbox)
    }

    // MARK: Clients

    public mutating func submit(_ spec: TaskSpec, from client: PeerID?, now: Timestamp) -> Result<Accepted, Rejection> {
        guard isAcceptingTasks else { return .failure(.shuttingDown) }
        if let key = spec.idempotencyKey, let existing = idempotency[Self.scoped(key, spec.owner)], let t = tasks[existing] {
            return .success(Accepted(id: t.id, position: queuePosition(of: t.id, now: now) ?? -1, duplicate: true, state: t.state))
        }
        if let allowed = config.allowedTypes, !allowed.contains(spec.type) {
            counters.rejected += 1
            return .failure(Rejection("unknown_type", "unknown task type '\(spec.type)'; this broker accepts: \(allowed.sorted().joined(separator: ", "))"))
        }
        if spec.payload.count > config.maxPayloadBytes {
            counters.rejected += 1
            return .failure(Rejection("payload_too_large", "payload is \(spec.payload.count) bytes; the limit is \(config.maxPayloadBytes)"))
        }
        // A new type beyond the bound would add a lane; the lanes of types
        // with queued tasks are what dispatch and listings walk.
        if queue.count(type: spec.type) == 0 && queue.typeCount >= config.maxTypes {
            counters.rejected += 1
            return .failure(Rejection("too_many_types", "\(queue.typeCount) task types have queued tasks, the broker's limit (--max-types \(config.maxTypes)); '\(spec.type)' is not one of them"))
        }
        // `run_at` is wall time (stored and shown); the delay is measured monotonic.
        let wallNow = wall(now)
        let runAt = spec.runAt ?? spec.delayMs.map { wallNow.adding(saturating: $0.multiplied(saturating: 1000)) }
        let isDelayed = (runAt ?? wallNow) > wallNow
        if !isDelayed && queue.count >= config.maxQueue {
            counters.rejected += 1
            return .failure(.queueFull(config.maxQueue))
        }
        let id = ids.make()
        var record = TaskRecord(
            id: id, seq: nextSeq, createdAt: wallNow, type: spec.type, priority: spec.priority, payload: spec.payload,
            timeoutMs: spec.timeoutMs ?? config.defaultTimeoutMs, maxAttempts: max(1, spec.maxAttempts),
            state: isDelayed ? .delayed : .queued, submitter: spec.notify == Notify.none ? nil : client
        )
        record.mutesProgress = spec.notify == .final
        record.ownerIndex = OwnerNames.shared.index(spec.owner)
        nextSeq += 1
        if spec.idempotencyKey != nil || spec.backoffMs != TaskSpec.defaultBackoffMs || spec.backoffMaxMs != TaskSpec.defaultBackoffMaxMs || isDelayed {
            let d = record.detailsForWriting()
            d.idempotencyKey = spec.idempotencyKey
            d.backoffMs = spec.backoffMs
            d.backoffMaxMs = spec.backoffMaxMs
            d.runAt = isDelayed ? runAt : nil
        }
        if let key = spec.idempotencyKey { idempotency[Self.scoped(key, spec.owner)] = id }
        record.readyAt = now
        counters.submitted += 1
        tasks[id] = record
        if isDelayed, let at = runAt {
            delayedCount += 1
            delayedHeap.insert(Deadline(at: now.adding(saturating: at.subtracting(saturating: wallNow)), id: id, attempt: 0, runAt: at))
            outbox.append(.event(.delayed(id, runAt: at)))
            return .success(Accepted(id: id, position: -1, duplicate: false, state: .delayed))
        }
        let position = positionOfNewTail(type: record.type, priority: record.priority, now: now)
        queue.append(id, type: record.type, priority: record.priority)
        outbox.append(.event(.queued(id, position: position)))
        return .success(Accepted(id: id, position: position, duplicate: false, state: .queued))
    }

    /// Where a task appended now at `priority` would stand.
    private func positionOfNewTail(type: String, priority: Priority, now: Timestamp) -> Int {
        let own = DispatchPolicy.Rank(level: Int(priority.rawValue), order: queue.nextTailOrder)
        return policy.position(type: type, own: own, ownID: nil, in: queue, now: now, tasks: table)
    }

    public enum CancelError: Error, Equatable, Sendable {
        case notFound
        case alreadyFinished(TaskState)
    }

    /// Cancels a delayed, queued or running task; a running one's worker is told to stop.
    public mutating func cancel(_ id: TaskID, now: Timestamp) -> Result<TaskState, CancelError> {
        guard let t = tasks[id] else { return .failure(.notFound) }
        let previous = t.state
        switch previous {
        case .queued:
            queue.forget(type: t.type, priority: t.priority)
        case .delayed:
            delayedCount -= 1
        case .running:
            releaseSlot(of: t, now: now, reason: .cancelled)
        case .succeeded, .failed, .timedOut, .cancelled:
            return .failure(.alreadyFinished(previous))
        }
        counters.cancelled += 1
        finish(id, state: .cancelled, body: Array("cancelled".utf8), error: "cancelled", now: now, dead: false)
        outbox.append(.event(.cancelled(id, previous: previous)))
        return .success(previous)
    }

    /// Stops intake: later submissions are rejected `shutting_down`.
    public mutating func stopAccepting() { isAcceptingTasks = false }

    // MARK: Workers

    /// What `register` made of a READY: the name the worker is known by (its
    /// own, or suffixed `#2`, `#3`… when another live connection holds it) and
    /// the capacity it got (capped at `maxWorkerCapacity`).
    public struct Registration: Sendable, Equatable {
        public let name: String
        public let capacity: Int
        /// The capacity the worker asked for, when the cap cut it.
        public let askedCapacity: Int?
    }

    /// A worker said READY. Identity is the connection, never the name: a name
    /// already registered under another live connection gets a suffixed label
    /// of its own and leaves that connection and its tasks alone (a stale
    /// connection is the heartbeat's business). A second READY on the same
    /// connection starts that connection over.
    @discardableResult
    public mutating func register(worker peer: PeerID, name asked: String, types: Set<String>?, capacity: Int, now: Timestamp) -> Registration {
        if workers[peer] != nil { removeWorker(peer, reason: "registered again", now: now) }
        var name = asked
        if let holder = workerByName[name], holder != peer {
            var n = 2
            while workerByName["\(asked)#\(n)"] != nil { n += 1 }
            name = "\(asked)#\(n)"
        }
        let cap = max(1, config.maxWorkerCapacity)
        let granted = min(max(1, capacity), cap)
        workers[peer] = WorkerRecord(peer: peer, name: name, types: types, capacity: granted, lastHeard: now)
        workerByName[name] = peer
        if nextLivenessCheck == 0 || nextLivenessCheck > now + config.heartbeatIntervalMs * 1000 {
            nextLivenessCheck = now + config.heartbeatIntervalMs * 1000
        }
        outbox.append(.event(.workerJoined(name: name, types: types.map { $0.sorted() } ?? [], capacity: granted)))
        return Registration(name: name, capacity: granted, askedCapacity: capacity > cap ? capacity : nil)
    }

    /// Any message from a worker. Returns false for an unknown worker (tell it to register).
    public mutating func heard(from peer: PeerID, now: Timestamp) -> Bool {
        guard workers[peer] != nil else { return false }
        workers[peer]?.lastHeard = now
        return true
    }

    /// The worker left (DISCONNECT) or went silent: its tasks go back to the queue.
    public mutating func workerGone(_ peer: PeerID, reason: String, now: Timestamp) {
        removeWorker(peer, reason: reason, now: now)
    }

    /// The worker takes no new tasks (graceful shutdown).
    public mutating func drain(worker peer: PeerID) {
        workers[peer]?.draining = true
    }

    /// Checks that a worker report is about the attempt it holds now.
    private mutating func current(_ id: TaskID, attempt: UInt16, from peer: PeerID) -> TaskRecord? {
        guard let t = tasks[id], t.state == .running, t.attempt == attempt, t.details?.workerPeer == peer else {
            counters.staleResults += 1
            return nil
        }
        return t
    }

    public mutating func progress(_ id: TaskID, attempt: UInt16, percent: UInt8?, message: String, from peer: PeerID, now: Timestamp) {
        guard let t = current(id, attempt: attempt, from: peer) else { return }
        let d = t.details
        d?.progressPercent = percent
        d?.progressMessage = message
        if let c = t.submitter, !t.mutesProgress { outbox.append(.notifyProgress(client: c, task: id, percent: percent, message: message)) }
        outbox.append(.event(.progress(id, attempt: attempt, percent: percent, message: message)))
    }

    /// - Parameter cost: units the task consumed (e.g. LLM tokens), for cost budgets.
    public mutating func succeeded(_ id: TaskID, attempt: UInt16, result: [UInt8], cost: Int64? = nil, from peer: PeerID, now: Timestamp) {
        guard let t = current(id, attempt: attempt, from: peer) else { return }
        releaseSlot(of: t, now: now, reason: nil)
        if let cost { policy.didReport(cost: cost, type: t.type, now: now) }
        counters.succeeded += 1
        let duration = now - (t.details?.startedMono ?? now)
        finish(id, state: .succeeded, body: result, error: nil, now: now, dead: false)
        outbox.append(.event(.succeeded(id, durationUs: duration)))
    }

    public mutating func failed(_ id: TaskID, attempt: UInt16, error: String, from peer: PeerID, now: Timestamp) {
        guard let t = current(id, attempt: attempt, from: peer) else { return }
        releaseSlot(of: t, now: now, reason: nil)
        attemptFailed(t, state: .failed, error: error, now: now)
    }

    /// What became of a RETURN.
    public enum ReturnOutcome: Sendable, Equatable {
        /// Back at the head of its level.
        case requeued
        /// Returned more than `maxReturns` times: ended `failed`, `returned_too_often`.
        case deadLettered
        /// Not the running attempt of that connection: ignored (`stale_results`).
        case stale
    }

    /// The worker gave an unfinished task back; it is not held against the
    /// task — up to `maxReturns` times: a worker that hands the same task back
    /// forever would otherwise spin it through the queue at full speed.
    @discardableResult
    public mutating func returned(_ id: TaskID, attempt: UInt16, from peer: PeerID, now: Timestamp) -> ReturnOutcome {
        guard let t = current(id, attempt: attempt, from: peer) else { return .stale }
        releaseSlot(of: t, now: now, reason: nil)
        let d = t.detailsForWritingShared()
        d.returns = d.returns.incrementedSaturating
        if Int(d.returns) > config.maxReturns {
            counters.failed += 1
            counters.returnedTooOften += 1
            finish(id, state: .failed, body: Array(Self.returnedTooOften.utf8), error: Self.returnedTooOften, now: now, dead: true)
            outbox.append(.event(.failed(id, error: Self.returnedTooOften, durationUs: now - (d.startedMono ?? now))))
            return .deadLettered
        }
        requeueAtHead(id, now: now)
        outbox.append(.event(.returned(id, fromWorker: workers[peer]?.name ?? "?")))
        return .requeued
    }

    /// The error of a task dead-lettered for coming back too often (§9.2).
    public static let returnedTooOften = "returned_too_often"
    /// The error of a task whose attempt counter is spent (65,535 dispatches).
    public static let attemptsExhausted = "attempts_exhausted"

    /// The worker's API answered "rate limited, retry after": the task goes
    /// back to the head of its level without using an attempt or a delivery,
    /// and its whole type is held for `afterMs` (the policy's default when
    /// nil); a repeated signal extends the hold.
    public mutating func retryLater(_ id: TaskID, attempt: UInt16, afterMs: Int64?, from peer: PeerID, now: Timestamp) {
        guard let t = current(id, attempt: attempt, from: peer) else { return }
        releaseSlot(of: t, now: now, reason: nil)
        requeueAtHead(id, now: now)
        counters.rateLimited += 1
        let ms = min(max(0, afterMs ?? policy.config.defaultHoldMs), policy.config.maxHoldMs)
        outbox.append(.event(.rateLimited(id, fromWorker: workers[peer]?.name ?? "?", retryAfterMs: ms)))
        let until = now.adding(saturating: ms.multiplied(saturating: 1000))
        if ms > 0, policy.hold(t.type, until: until) {
            outbox.append(.event(.typeHeld(type: t.type, until: wall(until))))
        }
    }

    // MARK: Types

    /// Stops dispatching `type` (submissions are still accepted; running tasks
    /// finish). False if it was paused already.
    @discardableResult
    public mutating func pause(type: String) -> Bool {
        guard policy.pause(type) else { return false }
        outbox.append(.event(.typePaused(type: type)))
        return true
    }

    @discardableResult
    public mutating func resume(type: String) -> Bool {
        guard policy.resume(type) else { return false }
        outbox.append(.event(.typeResumed(type: type)))
        return true
    }

    /// Re-applies a pause read back from the journal (no event: it is journaled already).
    public mutating func restorePaused(_ type: String) { _ = policy.pause(type) }

    /// Re-applies a hold read back from the journal; `until` and `now` are wall
    /// time, like every journaled time. A hold that ran out meanwhile is dropped.
    public mutating func restoreHold(_ type: String, until: Timestamp, now wallNow: Timestamp) {
        guard until > wallNow else { return }
        _ = policy.hold(type, until: until.subtracting(saturating: wallOffset))
    }

    // MARK: Dead letters

    /// Puts a dead-lettered task back in the queue with a fresh set of attempts.
    public mutating func retryDead(_ id: TaskID, now: Timestamp) -> Result<Void, Rejection> {
        guard let t = tasks[id], t.details?.dead == true else { return .failure(Rejection("not_found", "no dead-lettered task \(id)")) }
        guard queue.count < config.maxQueue else { return .failure(.queueFull(config.maxQueue)) }
        t.details?.dead = false
        deadLetterCount -= 1
        t.details?.error = nil
        t.details?.finishedAt = nil
        // A fresh set of attempts includes deliveries: a task dead-lettered
        // `worker_lost` must not fail again on its very next lost worker.
        t.details?.lostDeliveries = 0
        t.details?.returns = 0
        tasks[id]?.failures = 0
        tasks[id]?.state = .queued
        tasks[id]?.readyAt = now
        counters.deadRetried += 1
        t.details?.queuedSince = nil
        queue.append(id, type: t.type, priority: t.priority)
        outbox.append(.event(.deadRetried(id)))
        return .success(())
    }

    /// Forgets dead-lettered tasks: one, or all when `id` is nil. Returns how many.
    public mutating func purgeDead(_ id: TaskID?) -> Int {
        let victims = id.map { [$0] } ?? deadLetters.map(\.id)
        var n = 0
        for v in victims where tasks[v]?.details?.dead == true {
            forgetTask(v)
            outbox.append(.event(.purged(v)))
            n += 1
        }
        return n
    }

    // MARK: The loop's two steps

    /// Hands queued tasks to free workers: the task the policy ranks first
    /// among the types it allows now and some free worker accepts goes to the
    /// least recently used such worker.
    public mutating func dispatch(now: Timestamp) {
        while running < config.maxRunning && !queue.isEmpty {
            let free = workers.values.filter { $0.freeSlots > 0 }
            if free.isEmpty { return }
            // A temporary view: it must not outlive this statement, or the
            // mutation of `tasks` in `start` would copy the whole table.
            guard let pick = policy.next(
                from: &queue, now: now,
                tasks: Table(tasks: tasks),
                accepts: { type in free.contains { $0.accepts(type) } }
            ) else { return }
            guard let w = free.filter({ $0.accepts(pick.type) }).min(by: { $0.lastUsed < $1.lastUsed }) else { return }
            queue.removeHead(type: pick.type, priority: pick.priority)
            // Each dispatch needs a new attempt number (§9.5); after 65,535
            // of them (RETRY_LATER answered forever) the task cannot have one.
            if tasks[pick.entry.id]?.attempt == .max {
                counters.failed += 1
                finish(pick.entry.id, state: .failed, body: Array(Self.attemptsExhausted.utf8), error: Self.attemptsExhausted, now: now, dead: true)
                outbox.append(.event(.failed(pick.entry.id, error: Self.attemptsExhausted, durationUs: 0)))
                continue
            }
            start(pick.entry.id, on: w.peer, now: now)
        }
    }

    private mutating func start(_ id: TaskID, on peer: PeerID, now: Timestamp) {
        let since = table.waitingSince(id)
        guard var t = tasks[id], var w = workers[peer] else { return }
        // `dispatch` never starts a task whose counter is spent; saturating anyway.
        t.attempt = t.attempt.incrementedSaturating
        t.state = .running
        let d = t.detailsForWriting()
        d.worker = w.name
        d.workerPeer = peer
        d.startedAt = wall(now)
        d.startedMono = now
        d.queuedSince = since
        d.progressPercent = nil
        d.progressMessage = nil
        tasks[id] = t
        useCounter += 1
        d.dispatchSeq = useCounter
        w.lastUsed = useCounter
        w.running.insert(id)
        workers[peer] = w
        running += 1
        policy.didDispatch(t.type, now: now)
        deadlines.insert(Deadline(at: now.adding(saturating: Int64(t.timeoutMs) * 1000), id: id, attempt: t.attempt))
        let latency = now - t.readyAt
        counters.dispatched += 1
        outbox.append(.assign(worker: peer, task: id, attempt: t.attempt))
        outbox.append(.event(.started(id, attempt: t.attempt, worker: w.name, latencyUs: latency)))
    }

    /// Timers: task deadlines, delayed tasks coming due, silent workers, result expiry.
    public mutating func tick(now: Timestamp) {
        while let top = deadlines.min, top.at <= now {
            deadlines.removeMin()
            guard let t = tasks[top.id], t.state == .running, t.attempt == top.attempt else { continue }
            releaseSlot(of: t, now: now, reason: .timedOut)
            attemptFailed(t, state: .timedOut, error: "timed out after \(t.timeoutMs) ms", now: now)
        }
        while let top = delayedHeap.min, top.at <= now {
            delayedHeap.removeMin()
            guard let t = tasks[top.id], t.state == .delayed, t.details?.runAt == top.runAt else { continue }
            delayedCount -= 1
            tasks[top.id]?.state = .queued
            tasks[top.id]?.readyAt = now
            t.details?.runAt = nil
            t.details?.queuedSince = nil
            queue.append(t.id, type: t.type, priority: t.priority)
            outbox.append(.event(.due(t.id)))
        }
        for type in policy.expireHolds(now: now) { outbox.append(.event(.typeReleased(type: type))) }
        if !workers.isEmpty && now >= nextLivenessCheck {
            let expiry = config.workerExpiryUs
            for w in workers.values where now - w.lastHeard > expiry {
                removeWorker(w.peer, reason: "silent for \(expiry / 1000) ms", now: now)
            }
            nextLivenessCheck = now + config.heartbeatIntervalMs * 1000 / 2
        }
        let ttl = config.resultTTLSeconds.multiplied(saturating: 1_000_000)
        while let first = finished.first, now.subtracting(saturating: first.at) > ttl || finished.count > config.maxFinishedInMemory {
            finished.removeFirst()
            guard let t = tasks[first.id], t.state.isFinal, t.details?.finishedMono == first.at else { continue }
            // Past the TTL a task is gone everywhere; past the memory cap only from memory.
            if now.subtracting(saturating: first.at) > ttl { outbox.append(.event(.expired(first.id))) }
            forgetTask(first.id)
        }
    }

    // MARK: Recovery

    /// Makes room for `count` more tasks before a recovery restores them one
    /// by one: a million `restore` calls into an empty table would rehash it
    /// some twenty times, a third of the recovery time of a large journal.
    public mutating func reserveCapacity(forTasks count: Int) {
        tasks.reserveCapacity(tasks.count + max(0, count))
    }

    /// Whether an idempotency key (as `owner` used it) names a task in memory;
    /// when not, the broker asks the journal, which keeps keys longer.
    public func knowsIdempotencyKey(_ key: String, owner: String?) -> Bool {
        idempotency[Self.scoped(key, owner)].map { tasks[$0] != nil } ?? false
    }

    /// Re-inserts a task read back from the journal. Call in (priority, seq)
    /// order for queued tasks; running tasks come back queued, their attempt
    /// already counted. `now` is the journal's clock: *wall* time, like the
    /// record's timestamps; the scheduler's monotonic time is `now − wallOffset`.
    public mutating func restore(_ record: TaskRecord, idempotencyKey: String?, now wallNow: Timestamp) {
        var r = record
        let now = wallNow.subtracting(saturating: wallOffset)
        r.readyAt = now
        nextSeq = max(nextSeq, r.seq.incrementedSaturating)
        if let key = idempotencyKey { idempotency[Self.scoped(key, r.owner)] = r.id }
        switch r.state {
        case .running, .queued:
            r.state = .queued
            tasks[r.id] = r
            r.details?.queuedSince = nil
            queue.append(r.id, type: r.type, priority: r.priority)
        case .delayed:
            // `tick` only releases a delayed task whose `runAt` matches its heap
            // entry, so a record without one must get it, or it never comes due.
            let at = r.details?.runAt ?? wallNow
            r.detailsForWriting().runAt = at
            tasks[r.id] = r
            delayedCount += 1
            delayedHeap.insert(Deadline(at: now.adding(saturating: at.subtracting(saturating: wallNow)), id: r.id, attempt: 0, runAt: at))
        case .succeeded, .failed, .timedOut, .cancelled:
            if tasks[r.id]?.details?.dead != true && r.details?.dead == true { deadLetterCount += 1 }
            let d = r.detailsForWriting()
            // A finished_at in the future counts as now (it is not kept longer than its TTL).
            d.finishedMono = now.subtracting(saturating: max(0, wallNow.subtracting(saturating: d.finishedAt ?? wallNow)))
            tasks[r.id] = r
            finished.append((r.id, d.finishedMono))
        }
    }

    // MARK: Internals

    private mutating func removeWorker(_ peer: PeerID, reason: String, now: Timestamp) {
        guard let w = workers.removeValue(forKey: peer) else { return }
        if workerByName[w.name] == peer { workerByName[w.name] = nil }
        // Prepended latest-dispatched first, so they end up in dispatch order (§9.2).
        // Not by `seq`: a task that came due after newer ones is dispatched after them.
        for id in w.running.sorted(by: { (tasks[$0]?.details?.dispatchSeq ?? 0) > (tasks[$1]?.details?.dispatchSeq ?? 0) }) {
            guard let t = tasks[id], t.state == .running else { continue }
            running -= 1
            policy.didRelease(t.type)
            let d = t.detailsForWritingShared()
            d.lostDeliveries = d.lostDeliveries.incrementedSaturating
            d.workerPeer = nil
            if d.lostDeliveries >= config.maxDeliveries {
                counters.failed += 1
                finish(id, state: .failed, body: Array("worker_lost".utf8), error: "worker_lost", now: now, dead: true)
                outbox.append(.event(.failed(id, error: "worker_lost", durationUs: now - (d.startedMono ?? now))))
            } else {
                counters.reassigned += 1
                requeueAtHead(id, now: now)
                outbox.append(.event(.reassigned(id, fromWorker: w.name)))
            }
        }
        outbox.append(.event(.workerLost(name: w.name, reason: reason)))
    }

    private mutating func requeueAtHead(_ id: TaskID, now: Timestamp) {
        guard let t = tasks[id] else { return }
        tasks[id]?.state = .queued
        tasks[id]?.readyAt = now
        t.details?.worker = nil
        // It keeps the waiting time it had before its dispatch (details.queuedSince),
        // for aging — but no less than the task it goes in front of, so a lane
        // stays ordered by waiting time and its head is its best-ranked task.
        let level = Int(t.priority.rawValue)
        if let d = t.details, let head = queue.liveHead(type: t.type, level: level, isLive: { tasks[$0]?.state == .queued && $0 != id }) {
            d.queuedSince = min(d.queuedSince ?? now, Table(tasks: tasks).waitingSince(head.id))
        }
        queue.prepend(id, type: t.type, priority: t.priority)
    }

    /// Frees the running slot a task held; tells its worker to stop if `reason` is set.
    private mutating func releaseSlot(of t: TaskRecord, now: Timestamp, reason: CancelReason?) {
        running -= 1
        policy.didRelease(t.type)
        if let peer = t.details?.workerPeer {
            workers[peer]?.running.remove(t.id)
            if let reason, workers[peer] != nil {
                outbox.append(.cancelOnWorker(worker: peer, task: t.id, attempt: t.attempt, reason: reason))
            }
        }
        t.details?.workerPeer = nil
    }

    /// A failed or timed-out attempt: retry after backoff while attempts remain, else final and dead-lettered.
    private mutating func attemptFailed(_ t: TaskRecord, state: TaskState, error: String, now: Timestamp) {
        let failures = t.failures.incrementedSaturating
        tasks[t.id]?.failures = failures
        let duration = now - (t.details?.startedMono ?? now)
        if failures < t.maxAttempts {
            let d = t.detailsForWritingShared()
            let exp = min(Double(d.backoffMaxMs), Double(d.backoffMs) * pow2(Int(failures) - 1))
            let delayMs = exp / 2 + rng.nextUnit() * exp / 2 // "equal jitter"
            let at = now.adding(saturating: Int64(delayMs * 1000))
            d.runAt = wall(at)
            d.error = error
            tasks[t.id]?.state = .delayed
            delayedCount += 1
            delayedHeap.insert(Deadline(at: at, id: t.id, attempt: 0, runAt: wall(at)))
            counters.retried += 1
            outbox.append(.event(.retrying(t.id, runAt: wall(at), error: error)))
            return
        }
        if state == .timedOut { counters.timedOut += 1 } else { counters.failed += 1 }
        finish(t.id, state: state, body: Array(error.utf8), error: error, now: now, dead: true)
        outbox.append(.event(state == .timedOut ? .timedOut(t.id, durationUs: duration) : .failed(t.id, error: error, durationUs: duration)))
    }

    private mutating func finish(_ id: TaskID, state: TaskState, body: [UInt8], error: String?, now: Timestamp, dead: Bool) {
        guard var t = tasks[id] else { return }
        t.state = state
        let d = t.detailsForWriting()
        d.finishedAt = wall(now)
        d.finishedMono = now
        d.dead = dead
        if dead { deadLetterCount += 1 }
        if state == .succeeded { d.result = body } else { d.error = error }
        // The handler has run; keep memory for results. A dead-lettered task
        // keeps its payload: `retryDead` runs it again and the TASK needs it
        // (clearing it here made retried tasks run with an empty payload).
        if !dead { t.payload = [] }
        tasks[id] = t
        finished.append((id, now))
        if let c = t.submitter { outbox.append(.notifyFinished(client: c, task: id, state: state, body: body)) }
    }

    private mutating func forgetTask(_ id: TaskID) {
        guard let t = tasks.removeValue(forKey: id) else { return }
        if t.details?.dead == true { deadLetterCount -= 1 }
        if let key = t.details?.idempotencyKey, idempotency[Self.scoped(key, t.owner)] == id { idempotency[Self.scoped(key, t.owner)] = nil }
    }

    /// Idempotency keys are per owner: one client's key never finds another's task.
    static func scoped(_ key: String, _ owner: String?) -> String {
        guard let owner else { return key }
        return owner + "\u{1F}" + key
    }

    private func pow2(_ n: Int) -> Double { n <= 0 ? 1 : Double(1 << min(n, 30)) }
}

extension TaskRecord {
    /// `details` is a class, so a copy of the record shares it; this variant is
    /// for call sites that hold a copy and only need the shared object.
    fileprivate func detailsForWritingShared() -> TaskDetails { details ?? TaskDetails() }
}

/// Totals since the broker started (or since the journal began, once restored).
public struct SchedulerCounters: Sendable, Equatable {
    public var submitted = 0
    public var dispatched = 0
    public var succeeded = 0
    public var failed = 0
    public var timedOut = 0
    public var cancelled = 0
    public var reassigned = 0
    public var retried = 0
    public var rejected = 0
    public var staleResults = 0
    public var deadRetried = 0
    /// RETRY_LATER answers: the API's 429 reached the broker.
    public var rateLimited = 0
    /// Tasks dead-lettered `returned_too_often` (also counted in `failed`).
    public var returnedTooOften = 0
    public init() {}
}

/// Small, fast, seedable: enough for retry jitter, and deterministic in tests
/// (which use it too, for seeded workloads and crash moments).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    mutating func nextUnit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
