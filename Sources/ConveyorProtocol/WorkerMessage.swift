import ConveyorCore

/// What a worker sends the broker (proto/conveyor-protocol.md, "Worker protocol").
public enum WorkerMessage: Equatable, Sendable {
    /// `batch`: the READY option `batch=N` (1.1): the worker takes TASK_BATCH of up to N tasks.
    case ready(name: String, types: [String], capacity: Int, batch: Int? = nil)
    case heartbeat
    case progress(id: TaskID, attempt: UInt16, percent: UInt8?, message: String)
    /// `cost`: units the task consumed (LLM tokens…), the DONE option `cost=N`.
    case done(id: TaskID, attempt: UInt16, result: [UInt8], cost: Int64? = nil)
    /// Several DONEs in one message (1.1, §6.4).
    case doneBatch([Completion])
    case fail(id: TaskID, attempt: UInt16, error: String)
    case drain
    case returned(id: TaskID, attempt: UInt16)
    /// The API said 429: requeue without using an attempt, hold the type for
    /// `afterMs` (nil: the broker's default).
    case retryLater(id: TaskID, attempt: UInt16, afterMs: Int64?)
    case disconnect

    public static let maxCapacity = Limits.maxCapacity
    /// Frame 0 of every worker-endpoint message (§3.3).
    public static let header = Frames.workerHeader
    /// RETRY_LATER `retry_after_ms`: at most a day.
    public static let maxRetryAfterMs = Limits.maxRetryAfterMs
    /// DONE_BATCH results and the READY `batch` option (§11).
    public static let maxDoneBatch = Limits.maxDoneBatch
    public static let maxTaskBatch = Limits.maxTaskBatch

    /// One successful result, as DONE carries it.
    public struct Completion: Equatable, Sendable {
        public let id: TaskID
        public let attempt: UInt16
        public let result: [UInt8]
        public let cost: Int64?
        public init(id: TaskID, attempt: UInt16, result: [UInt8], cost: Int64? = nil) {
            self.id = id
            self.attempt = attempt
            self.result = result
            self.cost = cost
        }
    }

    public func encode() -> [[UInt8]] {
        let h = Frames.workerHeader
        switch self {
        case .ready(let n, let t, let c, let batch):
            var f = [h, Array("READY".utf8), Array(n.utf8), Array(t.joined(separator: ",").utf8), Frames.ascii(c)]
            if let batch { f.append(Array("batch=\(batch)".utf8)) }
            return f
        case .heartbeat: return [h, Array("HEARTBEAT".utf8)]
        case .progress(let id, let a, let p, let m):
            return [h, Array("PROGRESS".utf8), id.bytes, Frames.ascii(a), p.map { Frames.ascii($0) } ?? [], Array(m.utf8)]
        case .done(let id, let a, let r, let cost):
            var f = [h, Array("DONE".utf8), id.bytes, Frames.ascii(a), r]
            if let cost { f.append(Array("cost=\(cost)".utf8)) }
            return f
        case .doneBatch(let items):
            var f = [h, Array("DONE_BATCH".utf8)]
            f.reserveCapacity(2 + 4 * items.count)
            for c in items { f += [c.id.bytes, Frames.ascii(c.attempt), c.result, c.cost.map { Frames.ascii($0) } ?? []] }
            return f
        case .fail(let id, let a, let e): return [h, Array("FAIL".utf8), id.bytes, Frames.ascii(a), Array(e.utf8)]
        case .drain: return [h, Array("DRAIN".utf8)]
        case .returned(let id, let a): return [h, Array("RETURN".utf8), id.bytes, Frames.ascii(a)]
        case .retryLater(let id, let a, let ms): return [h, Array("RETRY_LATER".utf8), id.bytes, Frames.ascii(a), ms.map { Frames.ascii($0) } ?? []]
        case .disconnect: return [h, Array("DISCONNECT".utf8)]
        }
    }

    public static func decode(_ frames: [[UInt8]]) throws(ProtocolError) -> WorkerMessage {
        try Frames.checkHeader(frames, Frames.workerHeader)
        let s = Frames.string
        switch s(frames[1]) {
        case "READY":
            // Option frames may follow the capacity (1.1); unknown keys are ignored.
            guard frames.count >= 5 else { throw .bad("READY takes at least 5 frames, got \(frames.count)") }
            guard (1...Limits.workerNameBytes).contains(frames[2].count) else { throw .bad("worker name must be 1-\(Limits.workerNameBytes) bytes") }
            // A name is UTF-8 (§3.1), not free text: replacing bad bytes would change it.
            guard let name = String(validating: frames[2], as: UTF8.self) else { throw .bad("worker name must be UTF-8") }
            var types: [String] = []
            if !frames[3].isEmpty {
                for t in frames[3].split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                    types.append(try Frames.taskType(Array(t), nil))
                }
            }
            let capacity = Int(try Frames.decimal(frames[4], in: 1...maxCapacity, "capacity", nil))
            var batch: Int?
            for option in frames[5...] {
                guard let eq = option.firstIndex(of: UInt8(ascii: "=")) else {
                    throw .bad("READY option frames are key=value, got '\(Frames.printable(option))'")
                }
                if Frames.string(Array(option[..<eq])) == "batch" {
                    guard batch == nil else { throw .bad("READY option 'batch' given twice") }
                    batch = Int(try Frames.decimal(Array(option[(eq + 1)...]), in: 1...maxTaskBatch, "batch", nil))
                }
            }
            return .ready(name: name, types: types, capacity: capacity, batch: batch)
        case "HEARTBEAT":
            try Frames.expect(frames, count: 2...2, "HEARTBEAT", nil)
            return .heartbeat
        case "PROGRESS":
            try Frames.expect(frames, count: 6...6, "PROGRESS", nil)
            return .progress(id: try Frames.taskID(frames[2], nil), attempt: try Frames.attempt(frames[3]),
                             percent: try Frames.percent(frames[4], nil), message: s(frames[5]))
        case "DONE":
            // Option frames `key=value` may follow the result (§6.4); unknown keys are ignored.
            guard frames.count >= 5 else { throw .bad("DONE takes at least 5 frames, got \(frames.count)") }
            var cost: Int64?
            for option in frames[5...] {
                guard let eq = option.firstIndex(of: UInt8(ascii: "=")) else {
                    throw .bad("DONE option frames are key=value, got '\(Frames.printable(option))'")
                }
                if Frames.string(Array(option[..<eq])) == "cost" {
                    guard cost == nil else { throw .bad("DONE option 'cost' given twice") }
                    cost = Int64(try Frames.decimal(Array(option[(eq + 1)...]), in: 0...UInt64(Int64.max), "cost", nil))
                }
            }
            return .done(id: try Frames.taskID(frames[2], nil), attempt: try Frames.attempt(frames[3]), result: frames[4], cost: cost)
        case "DONE_BATCH":
            guard frames.count >= 6, (frames.count - 2) % 4 == 0 else { throw .bad("DONE_BATCH takes 2 + 4k frames, got \(frames.count)") }
            guard (frames.count - 2) / 4 <= maxDoneBatch else { throw .bad("DONE_BATCH carries at most \(maxDoneBatch) results") }
            var items: [Completion] = []
            items.reserveCapacity((frames.count - 2) / 4)
            for i in stride(from: 2, to: frames.count, by: 4) {
                let cost = frames[i + 3].isEmpty ? nil : Int64(try Frames.decimal(frames[i + 3], in: 0...UInt64(Int64.max), "cost", nil))
                items.append(Completion(id: try Frames.taskID(frames[i], nil), attempt: try Frames.attempt(frames[i + 1]), result: frames[i + 2], cost: cost))
            }
            return .doneBatch(items)
        case "FAIL":
            try Frames.expect(frames, count: 5...5, "FAIL", nil)
            return .fail(id: try Frames.taskID(frames[2], nil), attempt: try Frames.attempt(frames[3]), error: s(frames[4]))
        case "DRAIN":
            try Frames.expect(frames, count: 2...2, "DRAIN", nil)
            return .drain
        case "RETURN":
            try Frames.expect(frames, count: 4...4, "RETURN", nil)
            return .returned(id: try Frames.taskID(frames[2], nil), attempt: try Frames.attempt(frames[3]))
        case "RETRY_LATER":
            try Frames.expect(frames, count: 5...5, "RETRY_LATER", nil)
            return .retryLater(id: try Frames.taskID(frames[2], nil), attempt: try Frames.attempt(frames[3]),
                               afterMs: frames[4].isEmpty ? nil : Int64(try Frames.decimal(frames[4], in: 0...maxRetryAfterMs, "retry_after_ms", nil)))
        case "DISCONNECT":
            try Frames.expect(frames, count: 2...2, "DISCONNECT", nil)
            return .disconnect
        default:
            throw ProtocolError("unknown_command", "unknown worker command '\(Frames.printable(frames[1]))'")
        }
    }
}

/// What the broker sends a worker.
public enum BrokerToWorker: Equatable, Sendable {
    /// The answer to READY (1.1): the broker's heartbeat settings, which the worker adopts.
    case welcome(heartbeatMs: Int, liveness: Int)
    case task(id: TaskID, attempt: UInt16, type: String, priority: Priority, timeoutMs: UInt32, payload: [UInt8])
    /// Two or more tasks in one message (1.1), to a worker whose READY said `batch`.
    case taskBatch([Assignment])
    case heartbeat
    case cancel(id: TaskID, attempt: UInt16, reason: String)
    case disconnect

    /// One task as TASK carries it.
    public struct Assignment: Equatable, Sendable {
        public let id: TaskID
        public let attempt: UInt16
        public let type: String
        public let priority: Priority
        public let timeoutMs: UInt32
        public let payload: [UInt8]
        public init(id: TaskID, attempt: UInt16, type: String, priority: Priority, timeoutMs: UInt32, payload: [UInt8]) {
            self.id = id
            self.attempt = attempt
            self.type = type
            self.priority = priority
            self.timeoutMs = timeoutMs
            self.payload = payload
        }

        var frames: [[UInt8]] { [id.bytes, Frames.ascii(attempt), Array(type.utf8), [48 + priority.rawValue], Frames.ascii(timeoutMs), payload] }

        static func decode(_ f: ArraySlice<[UInt8]>) throws(ProtocolError) -> Assignment {
            let b = f.startIndex
            return Assignment(id: try Frames.taskID(f[b], nil), attempt: try Frames.attempt(f[b + 1]),
                              type: try Frames.taskType(f[b + 2], nil), priority: try Frames.priority(f[b + 3], nil),
                              timeoutMs: UInt32(try Frames.decimal(f[b + 4], in: 1...ClientRequest.maxTimeoutMs, "timeout_ms", nil)),
                              payload: f[b + 5])
        }
    }

    /// WELCOME bounds (§6.2).
    public static let maxHeartbeatMs: UInt64 = 3_600_000
    public static let maxLiveness: UInt64 = 100

    public func encode() -> [[UInt8]] {
        let h = Frames.workerHeader
        switch self {
        case .welcome(let hb, let lv): return [h, Array("WELCOME".utf8), Frames.ascii(hb), Frames.ascii(lv)]
        case .task(let id, let a, let t, let p, let to, let pl):
            return [h, Array("TASK".utf8)] + Assignment(id: id, attempt: a, type: t, priority: p, timeoutMs: to, payload: pl).frames
        case .taskBatch(let items):
            var f = [h, Array("TASK_BATCH".utf8)]
            f.reserveCapacity(2 + 6 * items.count)
            for a in items { f += a.frames }
            return f
        case .heartbeat: return [h, Array("HEARTBEAT".utf8)]
        case .cancel(let id, let a, let r): return [h, Array("CANCEL".utf8), id.bytes, Frames.ascii(a), Array(r.utf8)]
        case .disconnect: return [h, Array("DISCONNECT".utf8)]
        }
    }

    public static func decode(_ frames: [[UInt8]]) throws(ProtocolError) -> BrokerToWorker {
        try Frames.checkHeader(frames, Frames.workerHeader)
        switch Frames.string(frames[1]) {
        case "WELCOME":
            try Frames.expect(frames, count: 4...4, "WELCOME", nil)
            return .welcome(heartbeatMs: Int(try Frames.decimal(frames[2], in: 1...maxHeartbeatMs, "heartbeat_ms", nil)),
                            liveness: Int(try Frames.decimal(frames[3], in: 1...maxLiveness, "liveness", nil)))
        case "TASK":
            try Frames.expect(frames, count: 8...8, "TASK", nil)
            let a = try Assignment.decode(frames[2...])
            return .task(id: a.id, attempt: a.attempt, type: a.type, priority: a.priority, timeoutMs: a.timeoutMs, payload: a.payload)
        case "TASK_BATCH":
            guard frames.count >= 14, (frames.count - 2) % 6 == 0 else { throw .bad("TASK_BATCH takes 2 + 6k frames (k ≥ 2), got \(frames.count)") }
            var items: [Assignment] = []
            items.reserveCapacity((frames.count - 2) / 6)
            for i in stride(from: 2, to: frames.count, by: 6) { items.append(try Assignment.decode(frames[i..<(i + 6)])) }
            return .taskBatch(items)
        case "HEARTBEAT":
            try Frames.expect(frames, count: 2...2, "HEARTBEAT", nil)
            return .heartbeat
        case "CANCEL":
            try Frames.expect(frames, count: 5...5, "CANCEL", nil)
            let reason = Frames.string(frames[4])
            guard reason == "cancelled" || reason == "timed_out" else {
                throw .bad("CANCEL reason must be cancelled or timed_out, got '\(Frames.printable(frames[4]))'")
            }
            return .cancel(id: try Frames.taskID(frames[2], nil), attempt: try Frames.attempt(frames[3]), reason: reason)
        case "DISCONNECT":
            try Frames.expect(frames, count: 2...2, "DISCONNECT", nil)
            return .disconnect
        default:
            throw ProtocolError("unknown_command", "unknown broker command '\(Frames.printable(frames[1]))'")
        }
    }
}
