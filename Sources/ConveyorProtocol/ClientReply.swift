import ConveyorCore

/// What the broker sends a client: a reply to a request (carrying its
/// request id), or an unsolicited PROGRESS/FINISHED for a task it submitted.
public enum ClientReply: Equatable, Sendable {
    /// `info`: the 1.1 frames 5 and 6, sent when the SUBMIT carried `notify` (§5.2).
    case accepted(requestID: [UInt8], id: TaskID, position: Int, info: Acceptance? = nil)
    case rejected(requestID: [UInt8], code: String, message: String)
    /// The answer to SUBMIT_BATCH: one outcome per submission, in order (§5.13).
    case submitted(requestID: [UInt8], outcomes: [SubmitOutcome])
    case status(requestID: [UInt8], json: [UInt8])
    case cancelled(requestID: [UInt8], id: TaskID, previous: String)
    case stats(requestID: [UInt8], json: [UInt8])
    case tasks(requestID: [UInt8], json: [UInt8])
    case dead(requestID: [UInt8], json: [UInt8])
    /// Answer to TYPE: `{"type", "paused", "changed"}`.
    case type(requestID: [UInt8], json: [UInt8])
    case pong(requestID: [UInt8])
    case error(requestID: [UInt8], code: String, message: String)
    /// A standby broker's answer to anything (1.2, §9.7): REJECTED (`submit`:
    /// to SUBMIT and SUBMIT_BATCH) or ERROR with code `not_leader`, and frame 5
    /// `leader`, the active broker's client endpoint ("" when unknown).
    case notLeader(requestID: [UInt8], submit: Bool, message: String, leader: String)
    case progress(id: TaskID, percent: UInt8?, message: String)
    case finished(id: TaskID, state: String, body: [UInt8])

    /// nil for unsolicited messages.
    public var requestID: [UInt8]? {
        switch self {
        case .accepted(let r, _, _, _), .rejected(let r, _, _), .submitted(let r, _), .status(let r, _), .cancelled(let r, _, _), .stats(let r, _),
             .tasks(let r, _), .dead(let r, _), .type(let r, _), .pong(let r), .error(let r, _, _), .notLeader(let r, _, _, _):
            r
        case .progress, .finished: nil
        }
    }

    public func encode() -> [[UInt8]] {
        let h = Frames.clientHeader
        switch self {
        case .accepted(let r, let id, let pos, let info):
            var f = [h, Array("ACCEPTED".utf8), r, id.bytes, Frames.ascii(max(pos, 0))]
            if let info { f += [info.duplicate ? [49] : [48], Array(info.state.rawValue.utf8)] }
            return f
        case .rejected(let r, let c, let m): return [h, Array("REJECTED".utf8), r, Array(c.utf8), Array(m.utf8)]
        case .submitted(let r, let outcomes):
            var f = [h, Array("SUBMITTED".utf8), r]
            f.reserveCapacity(3 + 5 * outcomes.count)
            for o in outcomes {
                switch o {
                case .accepted(let id, let pos, let info):
                    f += [Array("ACCEPTED".utf8), id.bytes, Frames.ascii(max(pos, 0)), info.duplicate ? [49] : [48], Array(info.state.rawValue.utf8)]
                case .rejected(let c, let m): f += [Array("REJECTED".utf8), Array(c.utf8), Array(m.utf8), [], []]
                }
            }
            return f
        case .status(let r, let j): return [h, Array("STATUS".utf8), r, j]
        case .cancelled(let r, let id, let p): return [h, Array("CANCELLED".utf8), r, id.bytes, Array(p.utf8)]
        case .stats(let r, let j): return [h, Array("STATS".utf8), r, j]
        case .tasks(let r, let j): return [h, Array("TASKS".utf8), r, j]
        case .dead(let r, let j): return [h, Array("DEAD".utf8), r, j]
        case .type(let r, let j): return [h, Array("TYPE".utf8), r, j]
        case .pong(let r): return [h, Array("PONG".utf8), r]
        case .error(let r, let c, let m): return [h, Array("ERROR".utf8), r, Array(c.utf8), Array(m.utf8)]
        case .notLeader(let r, let submit, let m, let leader):
            return [h, Array((submit ? "REJECTED" : "ERROR").utf8), r, Array(ErrorCode.notLeader.rawValue.utf8), Array(m.utf8), Array(leader.utf8)]
        case .progress(let id, let p, let m): return [h, Array("PROGRESS".utf8), id.bytes, p.map { Frames.ascii($0) } ?? [], Array(m.utf8)]
        case .finished(let id, let s, let b): return [h, Array("FINISHED".utf8), id.bytes, Array(s.utf8), b]
        }
    }

    static let commands: Set<String> = [
        "ACCEPTED", "REJECTED", "SUBMITTED", "STATUS", "CANCELLED", "STATS", "TASKS", "DEAD", "TYPE", "PONG", "ERROR", "PROGRESS", "FINISHED",
    ]
    static let finalStates: Set<String> = ["succeeded", "failed", "timed_out", "cancelled"]
    static let cancellableStates: Set<String> = ["queued", "delayed", "running"]

    private static func acceptance(_ duplicate: [UInt8], _ state: [UInt8], _ r: [UInt8]) throws(ProtocolError) -> Acceptance {
        guard duplicate == [48] || duplicate == [49] else { throw .bad("duplicate must be 0 or 1, got '\(Frames.printable(duplicate))'", r) }
        guard let st = TaskState(rawValue: Frames.string(state)) else { throw .bad("state must be a task state, got '\(Frames.printable(state))'", r) }
        return Acceptance(duplicate: duplicate == [49], state: st)
    }

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
            guard frames.count == 5 || frames.count == 7 else { throw .bad("ACCEPTED takes 5 or 7 frames, got \(frames.count)", r) }
            return .accepted(requestID: r, id: try Frames.taskID(frames[3], r),
                             position: Int(try Frames.decimal(frames[4], in: 0...UInt64(Int.max), "position", r)),
                             info: frames.count == 7 ? try acceptance(frames[5], frames[6], r) : nil)
        case "SUBMITTED":
            guard (frames.count - 3) % 5 == 0, frames.count > 3 else { throw .bad("SUBMITTED takes 3 + 5k frames, got \(frames.count)", r) }
            var outcomes: [SubmitOutcome] = []
            outcomes.reserveCapacity((frames.count - 3) / 5)
            for i in stride(from: 3, to: frames.count, by: 5) {
                switch s(frames[i]) {
                case "ACCEPTED":
                    outcomes.append(.accepted(id: try Frames.taskID(frames[i + 1], r),
                                              position: Int(try Frames.decimal(frames[i + 2], in: 0...UInt64(Int.max), "position", r)),
                                              info: try acceptance(frames[i + 3], frames[i + 4], r)))
                case "REJECTED":
                    guard frames[i + 3].isEmpty, frames[i + 4].isEmpty else { throw .bad("a REJECTED outcome ends with two empty frames", r) }
                    outcomes.append(.rejected(code: s(frames[i + 1]), message: s(frames[i + 2])))
                default: throw .bad("outcome must be ACCEPTED or REJECTED, got '\(Frames.printable(frames[i]))'", r)
                }
            }
            return .submitted(requestID: r, outcomes: outcomes)
        case "REJECTED" where frames.count == 6, "ERROR" where frames.count == 6:
            guard frames[3] == Array(ErrorCode.notLeader.rawValue.utf8) else {
                throw .bad("\(s(frames[1])) takes 5 frames (6 only with not_leader), got 6", r)
            }
            return .notLeader(requestID: r, submit: frames[1] == Array("REJECTED".utf8), message: s(frames[4]), leader: s(frames[5]))
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

/// What the 1.1 ACCEPTED adds (§5.2): whether an idempotency key matched an
/// existing task, and that task's state now — so a resubmission of a task that
/// already ran is not mistaken for a new, queued one.
public struct Acceptance: Equatable, Sendable {
    public let duplicate: Bool
    public let state: TaskState
    public init(duplicate: Bool, state: TaskState) {
        self.duplicate = duplicate
        self.state = state
    }
}

/// One submission's answer in SUBMITTED (§5.13).
public enum SubmitOutcome: Equatable, Sendable {
    case accepted(id: TaskID, position: Int, info: Acceptance)
    case rejected(code: String, message: String)
}
