import ConveyorCore

/// What the broker sends a client: a reply to a request (carrying its
/// request id), or an unsolicited PROGRESS/FINISHED for a task it submitted.
public enum ClientReply: Equatable, Sendable {
    case accepted(requestID: [UInt8], id: TaskID, position: Int)
    case rejected(requestID: [UInt8], code: String, message: String)
    case status(requestID: [UInt8], json: [UInt8])
    case cancelled(requestID: [UInt8], id: TaskID, previous: String)
    case stats(requestID: [UInt8], json: [UInt8])
    case tasks(requestID: [UInt8], json: [UInt8])
    case dead(requestID: [UInt8], json: [UInt8])
    /// Answer to TYPE: `{"type", "paused", "changed"}`.
    case type(requestID: [UInt8], json: [UInt8])
    case pong(requestID: [UInt8])
    case error(requestID: [UInt8], code: String, message: String)
    case progress(id: TaskID, percent: UInt8?, message: String)
    case finished(id: TaskID, state: String, body: [UInt8])

    /// nil for unsolicited messages.
    public var requestID: [UInt8]? {
        switch self {
        case .accepted(let r, _, _), .rejected(let r, _, _), .status(let r, _), .cancelled(let r, _, _), .stats(let r, _),
             .tasks(let r, _), .dead(let r, _), .type(let r, _), .pong(let r), .error(let r, _, _):
            r
        case .progress, .finished: nil
        }
    }

    public func encode() -> [[UInt8]] {
        let h = Frames.clientHeader
        switch self {
        case .accepted(let r, let id, let pos): return [h, Array("ACCEPTED".utf8), r, id.bytes, Frames.ascii(max(pos, 0))]
        case .rejected(let r, let c, let m): return [h, Array("REJECTED".utf8), r, Array(c.utf8), Array(m.utf8)]
        case .status(let r, let j): return [h, Array("STATUS".utf8), r, j]
        case .cancelled(let r, let id, let p): return [h, Array("CANCELLED".utf8), r, id.bytes, Array(p.utf8)]
        case .stats(let r, let j): return [h, Array("STATS".utf8), r, j]
        case .tasks(let r, let j): return [h, Array("TASKS".utf8), r, j]
        case .dead(let r, let j): return [h, Array("DEAD".utf8), r, j]
        case .type(let r, let j): return [h, Array("TYPE".utf8), r, j]
        case .pong(let r): return [h, Array("PONG".utf8), r]
        case .error(let r, let c, let m): return [h, Array("ERROR".utf8), r, Array(c.utf8), Array(m.utf8)]
        case .progress(let id, let p, let m): return [h, Array("PROGRESS".utf8), id.bytes, p.map { Frames.ascii($0) } ?? [], Array(m.utf8)]
        case .finished(let id, let s, let b): return [h, Array("FINISHED".utf8), id.bytes, Array(s.utf8), b]
        }
    }

    static let commands: Set<String> = [
        "ACCEPTED", "REJECTED", "STATUS", "CANCELLED", "STATS", "TASKS", "DEAD", "TYPE", "PONG", "ERROR", "PROGRESS", "FINISHED",
    ]
    static let finalStates: Set<String> = ["succeeded", "failed", "timed_out", "cancelled"]
    static let cancellableStates: Set<String> = ["queued", "delayed", "running"]

    public static func decode(_ frames: [[UInt8]]) throws(ProtocolError) -> ClientReply {
        // §3.4 order: header, a command frame, a known command, then frame count and fields.
        try Frames.checkHeader(frames, Frames.clientHeader)
        let s = Frames.string
        guard commands.contains(s(frames[1])) else {
            throw ProtocolError("unknown_command", "unknown reply '\(Frames.printable(frames[1]))'")
        }
        guard frames.count >= 3 else { throw .bad("\(s(frames[1])) needs at least 3 frames") }
        let r = frames[2]
        switch s(frames[1]) {
        case "PROGRESS", "FINISHED": break // frame 2 is a task_id
        default: guard r.count <= ClientRequest.maxRequestIDBytes else { throw .bad("request_id is longer than 64 bytes") }
        }
        switch s(frames[1]) {
        case "ACCEPTED":
            try Frames.expect(frames, count: 5...5, "ACCEPTED", r)
            return .accepted(requestID: r, id: try Frames.taskID(frames[3], r),
                             position: Int(try Frames.decimal(frames[4], in: 0...UInt64(Int.max), "position", r)))
        case "REJECTED":
            try Frames.expect(frames, count: 5...5, "REJECTED", r)
            return .rejected(requestID: r, code: s(frames[3]), message: s(frames[4]))
        case "STATUS":
            try Frames.expect(frames, count: 4...4, "STATUS", r)
            return .status(requestID: r, json: frames[3])
        case "CANCELLED":
            try Frames.expect(frames, count: 5...5, "CANCELLED", r)
            guard cancellableStates.contains(s(frames[4])) else {
                throw .bad("previous_state must be queued, delayed or running, got '\(Frames.printable(frames[4]))'", r)
            }
            return .cancelled(requestID: r, id: try Frames.taskID(frames[3], r), previous: s(frames[4]))
        case "STATS":
            try Frames.expect(frames, count: 4...4, "STATS", r)
            return .stats(requestID: r, json: frames[3])
        case "TASKS":
            try Frames.expect(frames, count: 4...4, "TASKS", r)
            return .tasks(requestID: r, json: frames[3])
        case "DEAD":
            try Frames.expect(frames, count: 4...4, "DEAD", r)
            return .dead(requestID: r, json: frames[3])
        case "TYPE":
            try Frames.expect(frames, count: 4...4, "TYPE", r)
            return .type(requestID: r, json: frames[3])
        case "PONG":
            try Frames.expect(frames, count: 3...3, "PONG", r)
            return .pong(requestID: r)
        case "ERROR":
            try Frames.expect(frames, count: 5...5, "ERROR", r)
            return .error(requestID: r, code: s(frames[3]), message: s(frames[4]))
        case "PROGRESS":
            try Frames.expect(frames, count: 5...5, "PROGRESS", nil)
            return .progress(id: try Frames.taskID(frames[2], nil), percent: try Frames.percent(frames[3], nil), message: s(frames[4]))
        case "FINISHED":
            try Frames.expect(frames, count: 5...5, "FINISHED", nil)
            guard finalStates.contains(s(frames[3])) else {
                throw .bad("state must be a final state, got '\(Frames.printable(frames[3]))'")
            }
            return .finished(id: try Frames.taskID(frames[2], nil), state: s(frames[3]), body: frames[4])
        default:
            throw ProtocolError("unknown_command", "unknown reply '\(Frames.printable(frames[1]))'")
        }
    }
}
