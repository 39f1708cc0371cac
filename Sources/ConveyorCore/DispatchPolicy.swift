import DequeModule

/// What the policy needs to know about the tasks in the queue's entries:
/// whether an entry is still live (cancel is lazy) and, for aging, since when
/// the task has been waiting. The scheduler's task table answers it.
public protocol QueuedTasks {
    func isQueued(_ id: TaskID) -> Bool
    func waitingSince(_ id: TaskID) -> Timestamp
}

/// The one place that decides what a queued task's turn is: dispatch, the
/// TASKS listing and `queue_position` all ask this type, so they cannot
/// disagree. It owns *ordering* (priority, and aging when enabled: a task
/// counts one level higher for every `agingUs` it has waited; FIFO by arrival
/// within the effective level) and *eligibility* per task type (paused, held
/// after a 429, type concurrency, sliding-window rate limits, cost budgets).
///
/// With no policy configured, the order is exactly strict priority with FIFO
/// within a level, and the scans stop at the first level that has a candidate.
///
/// Time is the scheduler's monotonic `now`. Not thread-safe: owned by the
/// scheduler, on the broker's loop thread.
public struct DispatchPolicy: Sendable {
    public private(set) var config: PolicyConfig
    public private(set) var paused: Set<String> = []
    /// Monotonic time until which a type is held (RETRY_LATER).
    public private(set) var holds: [String: Timestamp] = [:]
    private var runningByType: [String: Int] = [:]
    /// Dispatch times of rate-limited types, at most `limit` of them.
    private var dispatches: [String: Deque<Timestamp>] = [:]
    /// Cost reports of budgeted types, oldest first, and their sum.
    private var costs: [String: (reports: Deque<(at: Timestamp, units: Int64)>, sum: Int64)] = [:]

    public init(config: PolicyConfig = PolicyConfig()) { self.config = config }

    // MARK: Ordering

    /// Where an entry stands: a higher `level` goes first, then the smaller `order`.
    public struct Rank: Sendable, Equatable {
        public let level: Int
        public let order: UInt64
        /// True when `self` is dispatched before `other`.
        public func precedes(_ other: Rank) -> Bool { level > other.level || (level == other.level && order < other.order) }
    }

    public var isStrict: Bool { config.agingUs == nil }

    /// The level a task queued at `level` since `since` counts as at `now`.
    public func effectiveLevel(_ level: Int, since: Timestamp, now: Timestamp) -> Int {
        guard let aging = config.agingUs, aging > 0, now > since else { return level }
        let steps = (now - since) / aging
        return steps >= Int64(ReadyQueue.levels - 1 - level) ? ReadyQueue.levels - 1 : level + Int(steps)
    }

    /// Where an entry stands now; the waiting time is looked up only when aging is on.
    public func rank(_ e: ReadyQueue.Entry, level: Int, now: Timestamp, tasks: some QueuedTasks) -> Rank {
        guard !isStrict else { return Rank(level: level, order: e.order) }
        return Rank(level: effectiveLevel(level, since: tasks.waitingSince(e.id), now: now), order: e.order)
    }

    /// The task to dispatch next: the best-ranked live lane head among the
    /// types that are eligible now and that `accepts` (some free worker takes
    /// the type). Eligibility is asked only of heads that would win.
    ///
    /// Strict priority walks the queue's head index, best head first, and
    /// stops at the first eligible one: O(log n) per lane looked at, whatever
    /// junk types came and went (only lanes skipped as ineligible add to the
    /// cost). With aging a lower lane's head can outrank a higher one's, so
    /// every non-empty lane's head is ranked: O(lanes with queued tasks),
    /// which `--max-types` bounds — never every type ever seen.
    public mutating func next(
        from queue: inout ReadyQueue, now: Timestamp, tasks: some QueuedTasks, accepts: (String) -> Bool
    ) -> (type: String, priority: Priority, entry: ReadyQueue.Entry)? {
        var best: (type: String, level: Int, entry: ReadyQueue.Entry, rank: Rank)?
        var verdict: [String: Bool] = [:]
        func eligible(_ t: String) -> Bool {
            if let v = verdict[t] { return v }
            let ok = blocked(t, now: now) == nil && accepts(t)
            verdict[t] = ok
            return ok
        }
        for level in stride(from: ReadyQueue.levels - 1, through: 0, by: -1) {
            if queue.count(Priority(rawValue: UInt8(level)) ?? .low) == 0 { continue }
            if isStrict {
                // Heads come best first: the first eligible one wins, and
                // nothing below a level with a candidate can.
                queue.visitHeads(level: level, isLive: tasks.isQueued) { t, head in
                    guard eligible(t) else { return false }
                    best = (t, level, head, Rank(level: level, order: head.order))
                    return true
                }
                if best != nil { break }
                continue
            }
            for t in queue.lanes.keys where queue.count(type: t, level: level) > 0 {
                guard let head = queue.liveHead(type: t, level: level, isLive: tasks.isQueued) else { continue }
                let r = rank(head, level: level, now: now, tasks: tasks)
                if let b = best, !r.precedes(b.rank) { continue }
                if eligible(t) { best = (t, level, head, r) }
            }
        }
        guard let b = best else { return nil }
        return (b.type, Priority(rawValue: UInt8(b.level)) ?? .low, b.entry)
    }

    /// Queued task ids in the order the policy would dispatch them, at most
    /// `limit`: the first `limit` of each lane, ranked. Tasks of a paused or
    /// held type come after every task that can run.
    public func listing(_ queue: ReadyQueue, now: Timestamp, tasks: some QueuedTasks, limit: Int) -> [TaskID] {
        guard limit > 0 else { return [] }
        var candidates: [(parked: Bool, rank: Rank, id: TaskID)] = []
        for t in queue.lanes.keys {
            let parked = isParked(t, now: now)
            for level in 0..<ReadyQueue.levels {
                guard queue.count(type: t, level: level) > 0, let lane = queue.lane(type: t, level: level) else { continue }
                var taken = 0
                for e in lane where tasks.isQueued(e.id) {
                    if taken == limit { break }
                    candidates.append((parked, rank(e, level: level, now: now, tasks: tasks), e.id))
                    taken += 1
                }
            }
        }
        candidates.sort { a, b in a.parked != b.parked ? !a.parked : a.rank.precedes(b.rank) }
        return candidates.prefix(limit).map(\.id)
    }

    /// How many queued tasks the policy will dispatch before a task of `type`
    /// ranked `own` — the same order as `listing`. Pass the rank of a task not
    /// in the queue yet (a new tail) to ask where it would stand.
    ///
    /// A lane whose last entry ranks ahead counts whole and one whose first
    /// does not counts nothing, so the cost is O(types × levels) plus the
    /// entries scanned in the one or two lanes that straddle the task.
    public func position(type: String, own: Rank, ownID: TaskID?, in queue: ReadyQueue, now: Timestamp, tasks: some QueuedTasks) -> Int {
        let ownParked = isParked(type, now: now)
        if ownID == nil, isStrict { return positionOfNewTail(type: type, level: own.level, parked: ownParked, in: queue, now: now) }
        var n = 0
        for t in queue.lanes.keys {
            let parked = t == type ? ownParked : isParked(t, now: now)
            for level in 0..<ReadyQueue.levels {
                let live = queue.count(type: t, level: level)
                guard live > 0, let lane = queue.lane(type: t, level: level) else { continue }
                // Parked types' tasks stand behind every task that can run.
                if parked != ownParked {
                    if ownParked { n += live }
                    continue
                }
                // Every entry of a lane above the task's effective level ranks ahead.
                if level > own.level { n += live; continue }
                if let last = lane.last, last.id != ownID, rank(last, level: level, now: now, tasks: tasks).precedes(own) { n += live; continue }
                guard let first = lane.first, rank(first, level: level, now: now, tasks: tasks).precedes(own) else { continue }
                for e in lane {
                    if e.id == ownID || !rank(e, level: level, now: now, tasks: tasks).precedes(own) { break }
                    if tasks.isQueued(e.id) { n += 1 }
                }
            }
        }
        return n
    }

    /// `position` for a task not queued yet that would join the tail of
    /// `level`, under strict priority: every live entry of its level and the
    /// levels above goes first, minus (or, for a parked type, plus) what the
    /// parked types hold — O(levels + parked types), not a walk of the lanes.
    /// This runs for every SUBMIT.
    private func positionOfNewTail(type: String, level: Int, parked ownParked: Bool, in queue: ReadyQueue, now: Timestamp) -> Int {
        func atOrAbove(_ count: (Int) -> Int) -> Int { (level..<ReadyQueue.levels).reduce(0) { $0 + count($1) } }
        var parkedAhead = 0, parkedTotal = 0
        for t in parkedTypes(now: now) where queue.count(type: t) > 0 {
            parkedAhead += atOrAbove { queue.count(type: t, level: $0) }
            parkedTotal += queue.count(type: t)
        }
        let ahead = atOrAbove { queue.count(Priority(rawValue: UInt8($0)) ?? .low) }
        // Runnable types' tasks stand ahead of a parked task whatever their level.
        return ownParked ? queue.count - parkedTotal + parkedAhead : ahead - parkedAhead
    }

    /// Types paused or held now.
    private func parkedTypes(now: Timestamp) -> Set<String> {
        var s = paused
        for (t, until) in holds where until > now { s.insert(t) }
        return s
    }

    // MARK: Eligibility

    /// Paused or held: a state that lasts, unlike a full rate window.
    public func isParked(_ type: String, now: Timestamp) -> Bool {
        paused.contains(type) || (holds[type].map { $0 > now } ?? false)
    }

    /// Why no task of `type` may start now, or nil if one may. Checked in the
    /// order an operator would want to be told.
    public func blocked(_ type: String, now: Timestamp) -> WaitReason? {
        if paused.contains(type) { return .paused }
        if let until = holds[type], until > now { return .held }
        if let cap = config.typeConcurrency[type], runningByType[type, default: 0] >= cap { return .typeConcurrency }
        if let rate = config.rateLimits[type], let d = dispatches[type], d.count >= rate.limit,
           d[d.index(d.endIndex, offsetBy: -Int(rate.limit))] > now - rate.windowUs { return .rateLimit }
        if let budget = config.costLimits[type], costInWindow(type, budget, now: now) >= budget.limit { return .costLimit }
        return nil
    }

    private func costInWindow(_ type: String, _ budget: WindowLimit, now: Timestamp) -> Int64 {
        guard let c = costs[type] else { return 0 }
        var sum = c.sum
        for r in c.reports {
            if r.at > now - budget.windowUs { break }
            sum = sum.subtracting(saturating: r.units)
        }
        return sum
    }

    public func running(type: String) -> Int { runningByType[type, default: 0] }

    /// Dispatches of `type` within the rate window ending at `now`.
    public func dispatchesInWindow(type: String, now: Timestamp) -> Int {
        guard let rate = config.rateLimits[type], let d = dispatches[type] else { return 0 }
        return d.reduce(0) { $0 + ($1 > now - rate.windowUs ? 1 : 0) }
    }

    public func costUsed(type: String, now: Timestamp) -> Int64 {
        guard let budget = config.costLimits[type] else { return 0 }
        return costInWindow(type, budget, now: now)
    }

    // MARK: Accounting

    mutating func didDispatch(_ type: String, now: Timestamp) {
        runningByType[type, default: 0] += 1
        if let rate = config.rateLimits[type] {
            var d = dispatches[type, default: Deque()]
            d.append(now)
            while d.count > Int(rate.limit) { d.removeFirst() }
            dispatches[type] = d
        }
    }

    mutating func didRelease(_ type: String) {
        guard let n = runningByType[type] else { return }
        if n <= 1 { runningByType[type] = nil } else { runningByType[type] = n - 1 }
    }

    /// Units a finished task consumed (DONE `cost`); only budgeted types keep them.
    /// A report counts at most the whole budget (a worker may claim 2^63−1
    /// units; that spends the window, it must not overflow the sum).
    mutating func didReport(cost reported: Int64, type: String, now: Timestamp) {
        guard let budget = config.costLimits[type], reported > 0 else { return }
        let units = min(reported, max(1, budget.limit))
        var c = costs[type] ?? (Deque(), 0)
        while let first = c.reports.first, first.at <= now - budget.windowUs {
            c.reports.removeFirst()
            c.sum = max(0, c.sum.subtracting(saturating: first.units))
        }
        c.reports.append((now, units))
        c.sum = c.sum.adding(saturating: units)
        costs[type] = c
    }

    /// Holds `type` until `until` (extending, never shortening, a hold). True if the hold changed.
    mutating func hold(_ type: String, until: Timestamp) -> Bool {
        if let h = holds[type], h >= until { return false }
        holds[type] = until
        return true
    }

    mutating func pause(_ type: String) -> Bool { paused.insert(type).inserted }
    mutating func resume(_ type: String) -> Bool { paused.remove(type) != nil }

    /// Holds that ran out by `now`, removed.
    mutating func expireHolds(now: Timestamp) -> [String] {
        guard !holds.isEmpty else { return [] }
        let done = holds.filter { $0.value <= now }.map(\.key).sorted()
        for t in done { holds[t] = nil }
        return done
    }

    /// The earliest moment after `now` at which a type blocked now by a hold,
    /// a full rate window or a spent budget may run again: the broker's poll
    /// wakes up then instead of polling.
    public func nextWakeup(now: Timestamp) -> Timestamp? {
        var next: Timestamp?
        func consider(_ t: Timestamp) { if t > now, next.map({ t < $0 }) ?? true { next = t } }
        for (_, until) in holds { consider(until) }
        for (type, rate) in config.rateLimits {
            guard let d = dispatches[type], d.count >= rate.limit else { continue }
            let idx = d.startIndex + d.count - Int(rate.limit)
            consider(d[idx] + rate.windowUs)
        }
        for (type, budget) in config.costLimits {
            guard let c = costs[type] else { continue }
            var sum = costInWindow(type, budget, now: now)
            guard sum >= budget.limit else { continue }
            for r in c.reports where r.at > now - budget.windowUs {
                sum = sum.subtracting(saturating: r.units)
                if sum < budget.limit { consider(r.at + budget.windowUs); break }
            }
        }
        return next
    }
}
