import DequeModule

/// The tasks waiting for a worker: four strict-priority levels, strictly FIFO
/// within a level, split by task type so that a worker that accepts only some
/// types finds its next task without scanning the others.
///
/// FIFO across types within a level is kept by comparing the queue-order keys
/// of each type's head. The queue assigns those keys itself: appends count up,
/// prepends count down, so every lane stays sorted and the level's order is the
/// order tasks *joined* it. (Keying on the submission sequence instead broke
/// FIFO across types: a delayed or retried task that came due carried its old,
/// small seq and overtook tasks of other types queued before it came due,
/// although it must join the tail (spec §9.1); and the listing, which sorted
/// by that seq, disagreed with the dispatch order.) Every operation is O(1)
/// amortised apart from `best(…)`, which is O(levels × types).
///
/// Removal of a task from the middle (cancel) is lazy: the caller marks the
/// task not-queued and entries are skipped when they reach the head. `count`
/// only ever counts live entries.
public struct ReadyQueue: Sendable {
    public struct Entry: Sendable, Equatable {
        /// Position key within the level: smaller = dispatched earlier.
        public let order: UInt64
        public let id: TaskID
    }

    private struct Lanes: Sendable {
        var levels: [Deque<Entry>] = Array(repeating: Deque(), count: 4)
    }

    private var lanes: [String: Lanes] = [:]
    /// Types in first-seen order: the order `best` scans in.
    private var types: [String] = []
    private var live: [Int] = [0, 0, 0, 0]
    /// Next keys for the tail and the head; they start in the middle of the
    /// range and 2^63 operations in either direction will not happen.
    private var nextTail: UInt64 = 1 << 63
    private var nextHead: UInt64 = (1 << 63) - 1

    public init() {}

    /// Live entries in all levels.
    public var count: Int { live[0] + live[1] + live[2] + live[3] }
    public var isEmpty: Bool { count == 0 }
    public func count(_ p: Priority) -> Int { live[Int(p.rawValue)] }

    /// Tasks that would be dispatched before a task now appended at `priority`.
    public func ahead(ofNew priority: Priority) -> Int {
        var n = 0
        for p in Int(priority.rawValue)...3 { n += live[p] }
        return n
    }

    /// Adds a task at the tail of its level (submitted, or came due).
    public mutating func append(_ id: TaskID, type: String, priority: Priority) {
        insert(Entry(order: nextTail, id: id), type: type, priority: priority, atHead: false)
        nextTail &+= 1
    }

    /// Puts a task back in front of its level, ahead of every type's tasks
    /// (a lost worker's task, or a returned one).
    public mutating func prepend(_ id: TaskID, type: String, priority: Priority) {
        insert(Entry(order: nextHead, id: id), type: type, priority: priority, atHead: true)
        nextHead &-= 1
    }

    private mutating func insert(_ e: Entry, type: String, priority: Priority, atHead: Bool) {
        let p = Int(priority.rawValue)
        if lanes[type] == nil {
            lanes[type] = Lanes()
            types.append(type)
        }
        if atHead { lanes[type]!.levels[p].prepend(e) } else { lanes[type]!.levels[p].append(e) }
        live[p] += 1
    }

    /// Called when a queued task leaves the queue other than through `removeHead`.
    public mutating func forget(priority: Priority) {
        live[Int(priority.rawValue)] -= 1
    }

    /// The next task to dispatch among the types some free worker accepts:
    /// highest level first, then the lowest order key across types.
    /// Dead heads (for which `isLive` is false) are dropped on the way.
    public mutating func best(
        isLive: (TaskID) -> Bool, accepts: (String) -> Bool
    ) -> (type: String, priority: Priority, entry: Entry)? {
        for p in Priority.dispatchOrder {
            let level = Int(p.rawValue)
            if live[level] == 0 { continue }
            var found: (type: String, entry: Entry)?
            for t in types {
                guard let head = liveHead(type: t, level: level, isLive: isLive) else { continue }
                if let f = found, f.entry.order <= head.order { continue }
                if accepts(t) { found = (t, head) }
            }
            if let f = found { return (f.type, p, f.entry) }
        }
        return nil
    }

    private mutating func liveHead(type: String, level: Int, isLive: (TaskID) -> Bool) -> Entry? {
        while let head = lanes[type]?.levels[level].first {
            if isLive(head.id) { return head }
            lanes[type]!.levels[level].removeFirst()
        }
        return nil
    }

    /// Removes the head returned by `best`.
    public mutating func removeHead(type: String, priority: Priority) {
        let level = Int(priority.rawValue)
        lanes[type]?.levels[level].removeFirst()
        live[level] -= 1
    }

    /// Live task ids in dispatch order, at most `limit` of them. Each lane is
    /// sorted, so the first k of a level come from the first k of each lane:
    /// the work is O(levels × types × limit), not O(queue).
    public func inDispatchOrder(isLive: (TaskID) -> Bool, limit: Int) -> [TaskID] {
        var out: [TaskID] = []
        for p in Priority.dispatchOrder {
            let want = limit - out.count
            if want <= 0 { break }
            var merged: [Entry] = []
            for t in types {
                guard let d = lanes[t]?.levels[Int(p.rawValue)] else { continue }
                var taken = 0
                for e in d where isLive(e.id) {
                    if taken == want { break }
                    merged.append(e)
                    taken += 1
                }
            }
            if types.count > 1 { merged.sort { $0.order < $1.order } }
            out.append(contentsOf: merged.prefix(want).map(\.id))
        }
        return out
    }

    /// How many live tasks will be dispatched before `id` (queued at
    /// `priority` with `type`), or nil if it is not in the queue. Counts in
    /// place: no listing is built.
    public func position(of id: TaskID, type: String, priority: Priority, isLive: (TaskID) -> Bool) -> Int? {
        let level = Int(priority.rawValue)
        guard let own = lanes[type]?.levels[level].first(where: { $0.id == id }) else { return nil }
        var n = 0
        for p in 0..<4 where p > level { n += live[p] }
        for t in types {
            guard let d = lanes[t]?.levels[level] else { continue }
            for e in d {
                if e.order >= own.order { break } // lanes are sorted by order
                if isLive(e.id) { n += 1 }
            }
        }
        return n
    }
}
