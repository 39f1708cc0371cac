import DequeModule

/// The tasks waiting for a worker, as storage only: one FIFO lane per task
/// type and priority level, with live counts. *Which* task goes next — and so
/// the listing and queue positions — is `DispatchPolicy`'s business; this type
/// only keeps lanes sorted and counts what is in them.
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
/// only ever count live entries. Every operation is O(1) amortised.
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

    private(set) var lanes: [String: Lane] = [:]
    /// Types in first-seen order: the order the policy scans in.
    public private(set) var types: [String] = []
    private var live: [Int] = Array(repeating: 0, count: ReadyQueue.levels)
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
        if lanes[type] == nil {
            lanes[type] = Lane()
            types.append(type)
        }
        if atHead { lanes[type]!.entries[level].prepend(e) } else { lanes[type]!.entries[level].append(e) }
        lanes[type]!.live[level] += 1
        lanes[type]!.total += 1
        live[level] += 1
    }

    /// Called when a queued task leaves the queue other than through `removeHead`.
    public mutating func forget(type: String, priority: Priority) {
        let level = Int(priority.rawValue)
        guard lanes[type] != nil else { return }
        lanes[type]!.live[level] -= 1
        lanes[type]!.total -= 1
        live[level] -= 1
    }

    /// The first live entry of a lane; dead heads (`isLive` false) are dropped on the way.
    public mutating func liveHead(type: String, level: Int, isLive: (TaskID) -> Bool) -> Entry? {
        guard lanes[type]?.live[level] ?? 0 > 0 else { return nil }
        while let head = lanes[type]?.entries[level].first {
            if isLive(head.id) { return head }
            lanes[type]!.entries[level].removeFirst()
        }
        return nil
    }

    /// Removes the head returned by `liveHead`.
    public mutating func removeHead(type: String, priority: Priority) {
        let level = Int(priority.rawValue)
        guard lanes[type]?.entries[level].isEmpty == false else { return }
        lanes[type]!.entries[level].removeFirst()
        lanes[type]!.live[level] -= 1
        lanes[type]!.total -= 1
        live[level] -= 1
    }

    /// A lane's entries, dead ones included, in order.
    public func lane(type: String, level: Int) -> Deque<Entry>? { lanes[type]?.entries[level] }
}
