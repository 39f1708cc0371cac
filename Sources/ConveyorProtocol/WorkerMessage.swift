import ConveyorCore

/// What a worker sends the broker (proto/conveyor-protocol.md, "Worker protocol").
public enum WorkerMessage: Equatable, Sendable {
    case ready(name: String, types: [String], capacity: Int)
    case heartbeat
    case progress(id: TaskID, attempt: UInt16, percent: UInt8?, message: String)
    /// `cost`: units the task consumed (LLM tokens…), the DONE option `cost=N`.
    case done(id: TaskID, attempt: UInt16, result: [UInt8], cost: Int64? = nil)
    case fail(id: TaskID, attempt: UInt16, error: String)
    case drain
    case returned(id: TaskID, attempt: UInt16)
    /// The API said 429: requeue without using an attempt, hold the type for
    /// `afterMs` (nil: the broker's default).
    case retryLater(id: TaskID, attempt: UInt16, afterMs: Int64?)
    case disconnect

    public static let maxCapacity: UInt64 = 1024
    /// RETRY_LATER `retry_after_ms`: at most a day.
    public static let maxRetryAfterMs: UInt64 = 86_400_000

    public func encode() -> [[UInt8]] {
        let h = Frames.workerHeader
        switch self {
        case .ready(let n, let t, let c): return [h, Array("READY".utf8), Array(n.utf8), Array(t.joined(separator: ",").utf8), Frames.ascii(c)]
        case .heartbeat: return [h, Array("HEARTBEAT".utf8)]
        case .progress(let id, let a, let p, let m):
            return [h, Array("PROGRESS".utf8), id.bytes, Frames.ascii(a), p.map { Frames.ascii($0) } ?? [], Array(m.utf8)]
        case .done(let id, let a, let r, let cost):
            var f = [h, Array("DONE".utf8), id.bytes, Frames.ascii(a), r]
            if let cost { f.append(Array("cost=\(cost)".utf8)) }
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
            try Frames.expect(frames, count: 5...5, "READY", nil)
            guard (1...128).contains(frames[2].count) else { throw .bad("worker name must be 1-128 bytes") }
            // A name is UTF-8 (§3.1), not free text: replacing bad bytes would change it.
            guard let name = String(validating: frames[2], as: UTF8.self) else { throw .bad("worker name must be UTF-8") }
            var types: [String] = []
            if !frames[3].isEmpty {
                for t in frames[3].split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                    types.append(try Frames.taskType(Array(t), nil))
                }
            }
            let capacity = Int(try Frames.decimal(frames[4], in: 1...maxCapacity, "capacity", nil))
            return .ready(name: name, types: types, capacity: capacity)
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
    case task(id: TaskID, attempt: UInt16, type: String, priority: Priority, timeoutMs: UInt32, payload: [UInt8])
    case heartbeat
    case cancel(id: TaskID, attempt: UInt16, reason: String)
    case disconnect

    public func encode() -> [[UInt8]] {
        let h = Frames.workerHeader
        switch self {
        case .task(let id, let a, let t, let p, let to, let pl):
            return [h, Array("TASK".utf8), id.bytes, Frames.ascii(a), Array(t.utf8), [48 + p.rawValue], Frames.ascii(to), pl]
        case .heartbeat: return [h, Array("HEARTBEAT".utf8)]
        case .cancel(let id, let a, let r): return [h, Array("CANCEL".utf8), id.bytes, Frames.ascii(a), Array(r.utf8)]
        case .disconnect: return [h, Array("DISCONNECT".utf8)]
        }
    }

    public static func decode(_ frames: [[UInt8]]) throws(ProtocolError) -> BrokerToWorker {
        try Frames.checkHeader(frames, Frames.workerHeader)
        switch Frames.string(frames[1]) {
        case "TASK":
            try Frames.expect(frames, count: 8...8, "TASK", nil)
            return .task(id: try Frames.taskID(frames[2], nil), attempt: try Frames.attempt(frames[3]),
                         type: try Frames.taskType(frames[4], nil), priority: try Frames.priority(frames[5], nil),
                         timeoutMs: UInt32(try Frames.decimal(frames[6], in: 1...ClientRequest.maxTimeoutMs, "timeout_ms", nil)),
                         payload: frames[7])
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
