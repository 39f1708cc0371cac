/// A registered worker, as the scheduler tracks it.
public struct WorkerRecord: Sendable {
    public let peer: PeerID
    public let name: String
    /// nil: accepts any type.
    public let types: Set<String>?
    public let capacity: Int
    public internal(set) var running: Set<TaskID> = []
    public internal(set) var lastHeard: Timestamp
    public internal(set) var draining = false
    /// Dispatch counter value at its last task: least recently used = smallest.
    var lastUsed: UInt64 = 0

    public func accepts(_ type: String) -> Bool { types?.contains(type) ?? true }
    public var freeSlots: Int { draining ? 0 : max(0, capacity - running.count) }
}
