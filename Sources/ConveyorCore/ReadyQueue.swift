import DequeModule

/// The tasks waiting for a worker: four strict-priority levels, strictly FIFO
/// within a level, split by task type so that a worker that accepts only some
/// types finds its next task without scanning the others.
///
/// FIFO across types within a level is kept by comparing the submission
/// sequence numbers of each type's head. Every operation is O(1) amortised
/// apart from `best(…)`, which is O(levels × types).
///
/// Removal of a task from the middle (cancel) is lazy: the caller marks the
/// task not-queued and entries are skipped when they reach the head. `count`
/// only ever counts live entries.
public struct ReadyQueue: Sendable {
    public struct Entry: Sendable, Equatable {
        public let seq: UInt64
        public let id: TaskID
    }

    private struct Lanes: Sendable {
        var levels: [Deque<Entry>] = Array(repeating: Deque(), count: 4)
    }

    private var lanes: [String: Lanes] = [:]
    /// Types in first-seen order: the order `best` scans in.
    private var types: [String] = []
    private var live: [Int] = [0, 0, 0, 0]

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

    public mutating func append(_ id: TaskID, seq: UInt64, type: String, priority: Priority) {
        insert(Entry(seq: seq, id: id), type: type, priority: priority, atHead: false)
    }

    /// Puts a task back in front of its level (a lost worker's task).
    public mutating func prepend(_ id: TaskID, seq: UInt64, type: String, priority: Priority) {
        insert(Entry(seq: seq, id: id), type: type, priority: priority, atHead: true)
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
    /// highest level first, then the lowest sequence number across types.
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
                if let f = found, f.entry.seq <= head.seq { continue }
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

    /// Live task ids in dispatch order (for listings; O(n)).
    public func inDispatchOrder(isLive: (TaskID) -> Bool, limit: Int) -> [TaskID] {
        var out: [TaskID] = []
        for p in Priority.dispatchOrder {
            var merged: [Entry] = []
            for t in types {
                if let d = lanes[t]?.levels[Int(p.rawValue)] { merged.append(contentsOf: d.filter { isLive($0.id) }) }
            }
            if types.count > 1 { merged.sort { $0.seq < $1.seq } }
            for e in merged {
                if out.count >= limit { return out }
                out.append(e.id)
            }
        }
        return out
    }
}
