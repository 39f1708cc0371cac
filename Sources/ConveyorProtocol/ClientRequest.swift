import ConveyorCore

/// What a client sends the broker (proto/conveyor-protocol.md, "Client protocol").
/// Every request carries a client-chosen `requestID`, echoed in its reply.
public enum ClientRequest: Equatable, Sendable {
    case submit(requestID: [UInt8], spec: TaskSpec)
    /// Several submissions in one message (§5.13, 1.1), answered by one SUBMITTED.
    case submitBatch(requestID: [UInt8], specs: [TaskSpec])
    case status(requestID: [UInt8], id: TaskID)
    case cancel(requestID: [UInt8], id: TaskID)
    case stats(requestID: [UInt8])
    case tasks(requestID: [UInt8], limit: Int)
    case ping(requestID: [UInt8])
    case dead(requestID: [UInt8], action: DeadAction)
    /// Pauses or resumes dispatch of a task type (§5.12).
    case type(requestID: [UInt8], action: TypeAction, type: String)

    public enum TypeAction: String, Equatable, Sendable {
        case pause, resume
    }

    public enum DeadAction: Equatable, Sendable {
        case list(limit: Int)
        case retry(TaskID)
        /// nil: purge all.
        case purge(TaskID?)
    }

    public var requestID: [UInt8] {
        switch self {
        case .submit(let r, _), .submitBatch(let r, _), .status(let r, _), .cancel(let r, _), .stats(let r), .tasks(let r, _), .ping(let r), .dead(let r, _), .type(let r, _, _): r
        }
    }

    public static let maxRequestIDBytes = Limits.requestIDBytes
    public static let maxTimeoutMs = Limits.maxTimeoutMs
    /// TASKS `limit` (§11).
    public static let maxTasksLimit = Limits.maxTasksLimit
    public static let maxBatchSubmissions = Limits.maxBatchSubmissions
    public static let maxBatchOptions = Limits.maxBatchOptions

    public func encode() -> [[UInt8]] {
        let h = Frames.clientHeader
        switch self {
        case .submit(let r, let s):
            return [h, Array("SUBMIT".utf8), r] + Self.fields(of: s) + Self.options(of: s)
        case .submitBatch(let r, let specs):
            var f: [[UInt8]] = [h, Array("SUBMIT_BATCH".utf8), r, Frames.ascii(specs.count)]
            for s in specs {
                let options = Self.options(of: s)
                f += Self.fields(of: s)
                f.append(Frames.ascii(options.count))
                f += options
            }
            return f
        case .status(let r, let id): return [h, Array("STATUS".utf8), r, id.bytes]
        case .cancel(let r, let id): return [h, Array("CANCEL".utf8), r, id.bytes]
        case .stats(let r): return [h, Array("STATS".utf8), r]
        case .tasks(let r, let limit): return [h, Array("TASKS".utf8), r, Frames.ascii(limit)]
        case .ping(let r): return [h, Array("PING".utf8), r]
        case .dead(let r, let a):
            switch a {
            case .list(let limit): return [h, Array("DEAD".utf8), r, Array("list".utf8), Frames.ascii(limit)]
            case .retry(let id): return [h, Array("DEAD".utf8), r, Array("retry".utf8), id.bytes]
            case .purge(let id): return [h, Array("DEAD".utf8), r, Array("purge".utf8), id?.bytes ?? []]
            }
        case .type(let r, let a, let t): return [h, Array("TYPE".utf8), r, Array(a.rawValue.utf8), Array(t.utf8)]
        }
    }

    /// SUBMIT frames 3–6: type, priority, timeout_ms, payload.
    private static func fields(of s: TaskSpec) -> [[UInt8]] {
        [Array(s.type.utf8), [48 + s.priority.rawValue], s.timeoutMs.map { Frames.ascii($0) } ?? [], s.payload]
    }

    private static func options(of s: TaskSpec) -> [[UInt8]] {
        var f: [[UInt8]] = []
        if s.maxAttempts != TaskSpec.defaultMaxAttempts { f.append(Array("max_attempts=\(s.maxAttempts)".utf8)) }
        if let k = s.idempotencyKey { f.append(Array("idempotency_key=".utf8) + Frames.opaqueBytes(k)) }
        if let d = s.delayMs { f.append(Array("delay_ms=\(d)".utf8)) }
        if let at = s.runAt { f.append(Array("run_at_ms=\(at / 1000)".utf8)) }
        if s.backoffMs != TaskSpec.defaultBackoffMs { f.append(Array("backoff_ms=\(s.backoffMs)".utf8)) }
        if s.backoffMaxMs != TaskSpec.defaultBackoffMaxMs { f.append(Array("backoff_max_ms=\(s.backoffMaxMs)".utf8)) }
        if let o = s.owner { f.append(Array("owner=\(o)".utf8)) }
        if let n = s.notify { f.append(Array("notify=\(n.rawValue)".utf8)) }
        return f
    }

    /// The commands of this endpoint and direction (§4), plus the DEAD extension.
    static let commands: Set<String> = ["SUBMIT", "SUBMIT_BATCH", "STATUS", "CANCEL", "STATS", "TASKS", "PING", "DEAD", "TYPE"]

    public static func decode(_ frames: [[UInt8]]) throws(ProtocolError) -> ClientRequest {
        // §3.4 order: header, a command frame, a known command, then frame count and fields.
        try Frames.checkHeader(frames, Frames.clientHeader, requestID: Frames.readableRequestID(frames))
        let command = frames[1]
        guard commands.contains(Frames.string(command)) else {
            throw ProtocolError("unknown_command", "unknown client command '\(Frames.printable(command))'",
                                requestID: Frames.readableRequestID(frames))
        }
        guard frames.count >= 3 else { throw .bad("\(Frames.string(command)) needs a request_id frame") }
        let rid = frames[2]
        guard rid.count <= maxRequestIDBytes else { throw .bad("request_id is longer than \(maxRequestIDBytes) bytes") }
        switch Frames.string(command) {
        case "SUBMIT":
            guard frames.count >= 7 else { throw .bad("SUBMIT takes at least 7 frames, got \(frames.count)", rid) }
            return .submit(requestID: rid, spec: try submission(frames[3..<7], options: frames[7...], rid))
        case "SUBMIT_BATCH":
            guard frames.count >= 4 else { throw .bad("SUBMIT_BATCH takes at least 4 frames, got \(frames.count)", rid) }
            let count = Int(try Frames.decimal(frames[3], in: 1...UInt64(maxBatchSubmissions), "count", rid))
            var specs: [TaskSpec] = []
            specs.reserveCapacity(count)
            var i = 4
            for n in 0..<count {
                // Five frames at least: the four fields and option_count.
                guard frames.count - i >= 5 else { throw .bad("SUBMIT_BATCH submission \(n): missing frames", rid) }
                let optionCount: Int
                do throws(ProtocolError) {
                    optionCount = Int(try Frames.decimal(frames[i + 4], in: 0...UInt64(maxBatchOptions), "option_count", rid))
                    guard frames.count - i - 5 >= optionCount else { throw ProtocolError.bad("missing option frames", rid) }
                    specs.append(try submission(frames[i..<(i + 4)], options: frames[(i + 5)..<(i + 5 + optionCount)], rid))
                } catch {
                    throw .bad("SUBMIT_BATCH submission \(n): \(error.message)", rid)
                }
                i += 5 + optionCount
            }
            guard i == frames.count else { throw .bad("SUBMIT_BATCH has \(frames.count - i) frames after its \(count) submissions", rid) }
            return .submitBatch(requestID: rid, specs: specs)
        case "STATUS":
            try Frames.expect(frames, count: 4...4, "STATUS", rid)
            return .status(requestID: rid, id: try Frames.taskID(frames[3], rid))
        case "CANCEL":
            try Frames.expect(frames, count: 4...4, "CANCEL", rid)
            return .cancel(requestID: rid, id: try Frames.taskID(frames[3], rid))
        case "STATS":
            try Frames.expect(frames, count: 3...3, "STATS", rid)
            return .stats(requestID: rid)
        case "TASKS":
            // The limit frame is required; empty means the default (§5.6).
            try Frames.expect(frames, count: 4...4, "TASKS", rid)
            let limit = frames[3].isEmpty ? Limits.defaultTasksLimit : Int(try Frames.decimal(frames[3], in: 1...UInt64(maxTasksLimit), "limit", rid))
            return .tasks(requestID: rid, limit: limit)
        case "PING":
            try Frames.expect(frames, count: 3...3, "PING", rid)
            return .ping(requestID: rid)
        case "DEAD":
            // Frame 4 is always present, empty where the action allows (§5.11).
            try Frames.expect(frames, count: 5...5, "DEAD", rid)
            let arg = frames[4]
            switch Frames.string(frames[3]) {
            case "list":
                return .dead(requestID: rid, action: .list(limit: arg.isEmpty ? 100 : Int(try Frames.decimal(arg, in: 0...Limits.maxDeadListLimit, "limit", rid))))
            case "retry": return .dead(requestID: rid, action: .retry(try Frames.taskID(arg, rid)))
            case "purge": return .dead(requestID: rid, action: .purge(arg.isEmpty ? nil : try Frames.taskID(arg, rid)))
            default: throw .bad("DEAD action must be list, retry or purge", rid)
            }
        case "TYPE":
            try Frames.expect(frames, count: 5...5, "TYPE", rid)
            guard let action = TypeAction(rawValue: Frames.string(frames[3])) else { throw .bad("TYPE action must be pause or resume", rid) }
            return .type(requestID: rid, action: action, type: try Frames.taskType(frames[4], rid))
        default:
            throw ProtocolError("unknown_command", "unknown client command '\(Frames.printable(command))'", requestID: rid)
        }
    }

    /// A submission from its four fields (type, priority, timeout_ms, payload) and options.
    private static func submission(_ f: ArraySlice<[UInt8]>, options: ArraySlice<[UInt8]>, _ rid: [UInt8]) throws(ProtocolError) -> TaskSpec {
        let b = f.startIndex
        var spec = TaskSpec(type: try Frames.taskType(f[b], rid), priority: try Frames.priority(f[b + 1], rid), payload: f[b + 3])
        if !f[b + 2].isEmpty {
            spec.timeoutMs = UInt32(try Frames.decimal(f[b + 2], in: 1...maxTimeoutMs, "timeout_ms", rid))
        }
        var seen: Set<String> = []
        for option in options { try apply(option: option, to: &spec, seen: &seen, rid) }
        return spec
    }

    private static func apply(option: [UInt8], to spec: inout TaskSpec, seen: inout Set<String>, _ rid: [UInt8]) throws(ProtocolError) {
        guard let eq = option.firstIndex(of: UInt8(ascii: "=")) else {
            throw .bad("option frames are key=value, got '\(Frames.printable(option))'", rid)
        }
        let key = Frames.string(Array(option[..<eq]))
        let value = Array(option[(eq + 1)...])
        let any: ClosedRange<UInt64> = 0...UInt64(Int64.max)
        switch key {
        case "max_attempts": spec.maxAttempts = UInt16(try Frames.decimal(value, in: 1...Limits.maxAttempts, "max_attempts", rid))
        case "idempotency_key":
            guard (1...Limits.idempotencyKeyBytes).contains(value.count) else { throw .bad("idempotency_key must be 1-\(Limits.idempotencyKeyBytes) bytes", rid) }
            spec.idempotencyKey = Frames.opaqueString(value)
        case "delay_ms": spec.delayMs = Int64(try Frames.decimal(value, in: 0...Limits.maxDelayMs, "delay_ms", rid))
        // The spec bounds these only by 2^63−1; far-future times and huge backoffs
        // saturate in the core's units instead of being refused.
        case "run_at_ms":
            let ms = Int64(try Frames.decimal(value, in: any, "run_at_ms", rid))
            // Saturates at a whole millisecond so that `encode` round-trips it.
            spec.runAt = min(ms, Int64.max / 1000) * 1000
        case "backoff_ms": spec.backoffMs = UInt32(clamping: try Frames.decimal(value, in: any, "backoff_ms", rid))
        case "backoff_max_ms": spec.backoffMaxMs = UInt32(clamping: try Frames.decimal(value, in: any, "backoff_max_ms", rid))
        // Honoured from admin clients only (the gateway names its HTTP callers); §13.
        case "owner":
            guard (1...Limits.ownerBytes).contains(value.count), let text = String(validating: value, as: UTF8.self) else {
                throw .bad("owner must be 1-128 bytes of UTF-8", rid)
            }
            spec.owner = text
        case "notify":
            guard let n = Notify(rawValue: Frames.string(value)) else { throw .bad("notify must be all, final or none", rid) }
            spec.notify = n
        default: throw .bad("unknown option '\(Frames.printable(Array(option[..<eq])))'", rid)
        }
        // Checked after the key is known, so an unknown key reads as such.
        guard seen.insert(key).inserted else { throw .bad("option '\(key)' given twice", rid) }
    }
}
