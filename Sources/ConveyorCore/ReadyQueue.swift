import DequeModule
import HeapModule

/// The tasks waiting for a worker, as storage only: one FIFO lane per task
/// type and priority level, with live counts. *Which* task goes next — and so
/// the listing and queue positions — is `DispatchPolicy`'s business; this type
/// only keeps lanes sorted, counts what is in them, and indexes the non-empty
/// lanes of each level by their head so the policy never scans every type.
///
/// Each entry carries a queue-order key that the queue assigns itself: appends
/// count up, prepends count down, so every lane stays sorted and, across types,
/// comparing keys gives the order tasks *joined* their level. (Keying on the
/// submission sequence instead broke FIFO across types: a delayed or retried
/// task that came due carried its old, small seq and overtook tasks queued
/// before it came due, although it must join the tail (spec §9.1).)
///
/// Removal of a task from the middle (cancel) is lazy: the caller marks the
/// task not-queued and entries are skipped when they reach the head. Counts
/// only ever count live entries. A level of a lane whose live count reaches 0
/// drops its (dead) entries, and a type whose last queued task leaves loses
/// its lane altogether: memory follows the tasks queued now, not every type
/// ever seen (a client cycling through junk type names used to leave one lane
/// per name behind, and dispatch scanned them all).
///
/// The head index: per level, a min-heap of (head order, type) keys. It may
/// hold stale keys (a lane whose head moved on, or that is gone); a key is
/// valid only while it names its lane's current first entry, and stale keys
/// are dropped when they surface or when the heap is rebuilt (it is, once it
/// holds more than twice the non-empty lanes, so junk cannot grow it).
/// Finding the best-ordered eligible head costs O(log n) per lane looked at.
public struct ReadyQueue: Sendable {
    public struct Entry: Sendable, Equatable {
        /// Position key: smaller = joined earlier (or put back in front).
        public let order: UInt64
        public let id: TaskID
    }

    /// Number of priority levels; index = `Priority.rawValue`.
    public static let levels = Priority.allCases.count

    struct Lane: Sendable {
        var entries: [Deque<Entry>] = Array(repeating: Deque(), count: ReadyQueue.levels)
        var live: [Int] = Array(repeating: 0, count: ReadyQueue.levels)
        var total = 0
    }

    /// One key of the head index: a lane's first entry at the time it was pushed.
    struct HeadKey: Comparable, Sendable {
        let order: UInt64
        let type: String
        static func < (a: HeadKey, b: HeadKey) -> Bool { a.order < b.order }
    }

    private(set) var lanes: [String: Lane] = [:]
    private var heads: [Heap<HeadKey>] = Array(repeating: Heap(), count: ReadyQueue.levels)
    /// Lanes with live entries, per level (what a rebuilt head index holds).
    private var nonEmpty: [Int] = Array(repeating: 0, count: ReadyQueue.levels)
    private var live: [Int] = Array(repeating: 0, count: ReadyQueue.levels)
    /// True inside `visitHeads`: keys popped for the visit are not in the heap,
    /// so a rebuild then would index those lanes twice.
    private var visiting = false
    /// Next keys for the tail and the head; they start in the middle of the
    /// range and 2^63 operations in either direction will not happen.
    private var nextTail: UInt64 = 1 << 63
    private var nextHead: UInt64 = (1 << 63) - 1

    public init() {}

    /// Live entries in all levels.
    public var count: Int { live.reduce(0, +) }
    public var isEmpty: Bool { count == 0 }
    public func count(_ p: Priority) -> Int { live[Int(p.rawValue)] }
    public func count(type: String) -> Int { lanes[type]?.total ?? 0 }
    public func count(type: String, level: Int) -> Int { lanes[type]?.live[level] ?? 0 }
    /// Types with queued tasks, in no particular order (each has a lane).
    public var types: [String] { Array(lanes.keys) }
    /// Number of types with queued tasks (bounded by the broker's `--max-types`).
    public var typeCount: Int { lanes.count }
    /// Non-empty lanes of a level (tests: the index holds nothing else).
    public func lanesWithTasks(level: Int) -> Int { nonEmpty[level] }
    /// Keys held by a level's head index, stale ones included (tests: it stays bounded).
    public func headIndexSize(level: Int) -> Int { heads[level].count }
    /// The key the next `append` will get: what a task submitted now would carry.
    public var nextTailOrder: UInt64 { nextTail }

    /// Adds a task at the tail of its level (submitted, or came due).
    public mutating func append(_ id: TaskID, type: String, priority: Priority) {
        insert(Entry(order: nextTail, id: id), type: type, level: Int(priority.rawValue), atHead: false)
        nextTail &+= 1
    }

    /// Puts a task back in front of its level, ahead of every type's tasks
    /// (a lost worker's task, or a returned one).
    public mutating func prepend(_ id: TaskID, type: String, priority: Priority) {
        insert(Entry(order: nextHead, id: id), type: type, level: Int(priority.rawValue), atHead: true)
        nextHead &-= 1
    }

    private mutating func insert(_ e: Entry, type: String, level: Int, atHead: Bool) {
        let wasEmpty = Self.modify(&lanes, type) { lane -> Bool in
            let wasEmpty = lane.live[level] == 0
            if wasEmpty { lane.entries[level].removeAll() } // only dead entries were left
            if atHead { lane.entries[level].prepend(e) } else { lane.entries[level].append(e) }
            lane.live[level] += 1
            lane.total += 1
            return wasEmpty
        }
        live[level] += 1
        if wasEmpty { nonEmpty[level] += 1 }
        // A new first entry needs a key; appending behind a live head does not.
        if wasEmpty || atHead { pushHead(HeadKey(order: e.order, type: type), level: level) }
    }

    /// Mutates a lane in place (no copy of its deques), creating it if needed.
    private static func modify<R>(_ lanes: inout [String: Lane], _ type: String, _ body: (inout Lane) -> R) -> R {
        body(&lanes[type, default: Lane()])
    }

    /// Called when a queued task leaves the queue other than through `removeHead`.
    public mutating func forget(type: String, priority: Priority) {
        let level = Int(priority.rawValue)
        guard lanes[type]?.live[level] ?? 0 > 0 else { return }
        let release = Self.modify(&lanes, type) { lane -> (level: Bool, lane: Bool) in
            lane.live[level] -= 1
            lane.total -= 1
            return Self.settle(&lane, level: level)
        }
        live[level] -= 1
        released(type, level: level, release)
    }

    /// The first live entry of a lane; dead heads (`isLive` false) are dropped on the way.
    public mutating func liveHead(type: String, level: Int, isLive: (TaskID) -> Bool) -> Entry? {
        guard let first = lanes[type]?.entries[level].first, lanes[type]?.live[level] ?? 0 > 0 else { return nil }
        if isLive(first.id) { return first }
        let found = Self.modify(&lanes, type) { lane -> Entry? in
            while let head = lane.entries[level].first {
                if isLive(head.id) { return head }
                lane.entries[level].removeFirst()
            }
            return nil
        }
        if let found { pushHead(HeadKey(order: found.order, type: type), level: level) }
        return found
    }

    /// Removes the head returned by `liveHead`.
    public mutating func removeHead(type: String, priority: Priority) {
        let level = Int(priority.rawValue)
        guard lanes[type]?.live[level] ?? 0 > 0, lanes[type]?.entries[level].isEmpty == false else { return }
        let (release, next) = Self.modify(&lanes, type) { lane -> ((level: Bool, lane: Bool), Entry?) in
            lane.entries[level].removeFirst()
            lane.live[level] -= 1
            lane.total -= 1
            let next = lane.live[level] > 0 ? lane.entries[level].first : nil
            return (Self.settle(&lane, level: level), next)
        }
        live[level] -= 1
        if let next { pushHead(HeadKey(order: next.order, type: type), level: level) }
        released(type, level: level, release)
    }

    /// After a removal: a level without live entries drops its dead ones.
    /// Returns what became empty.
    private static func settle(_ lane: inout Lane, level: Int) -> (level: Bool, lane: Bool) {
        guard lane.live[level] == 0 else { return (false, false) }
        lane.entries[level] = Deque()
        return (true, lane.total == 0)
    }

    /// A type without any queued task loses its lane; an index that holds
    /// mostly stale keys is rebuilt (emptied with its level).
    private mutating func released(_ type: String, level: Int, _ r: (level: Bool, lane: Bool)) {
        if r.level { nonEmpty[level] -= 1 }
        if r.lane { lanes[type] = nil }
        if nonEmpty[level] == 0 {
            if !heads[level].isEmpty { heads[level] = Heap() }
        } else if !visiting, heads[level].count > 2 * nonEmpty[level] + 64 {
            rebuildHeads(level: level)
        }
    }

    /// A lane's entries, dead ones included, in order.
    public func lane(type: String, level: Int) -> Deque<Entry>? { lanes[type]?.entries[level] }

    // MARK: Head index

    private mutating func pushHead(_ k: HeadKey, level: Int) {
        heads[level].insert(k)
        if !visiting, heads[level].count > 2 * nonEmpty[level] + 64 { rebuildHeads(level: level) }
    }

    private mutating func rebuildHeads(level: Int) {
        var keys: [HeadKey] = []
        keys.reserveCapacity(nonEmpty[level])
        for (type, lane) in lanes where lane.live[level] > 0 {
            if let first = lane.entries[level].first { keys.append(HeadKey(order: first.order, type: type)) }
        }
        heads[level] = Heap(keys)
    }

    private func isCurrent(_ k: HeadKey, level: Int) -> Bool {
        guard let lane = lanes[k.type], lane.live[level] > 0 else { return false }
        return lane.entries[level].first?.order == k.order
    }

    /// Visits the non-empty lanes of `level` in the order of their live heads
    /// (smallest order first) until `body` returns true; each lane once.
    /// Cost: O(log n) per lane visited, n the lanes of the level — never a scan
    /// of every type.
    public mutating func visitHeads(level: Int, isLive: (TaskID) -> Bool, _ body: (String, Entry) -> Bool) {
        guard nonEmpty[level] > 0 else { return }
        var visited: [HeadKey] = []
        // Orders are unique per entry, so duplicate keys (a head that became
        // first again after a prepended task left) pop one after the other.
        var last: UInt64?
        visiting = true
        defer {
            for k in visited { heads[level].insert(k) }
            visiting = false
            if heads[level].count > 2 * nonEmpty[level] + 64 { rebuildHeads(level: level) }
        }
        while let k = heads[level].popMin() {
            guard k.order != last, isCurrent(k, level: level) else { continue }
            last = k.order
            // A dead head (a cancelled task) gives way to the lane's first live entry.
            guard let head = liveHead(type: k.type, level: level, isLive: isLive) else { continue }
            if head.order != k.order { continue } // `liveHead` pushed the key of the new head
            visited.append(k)
            if body(k.type, head) { return }
        }
    }
}
