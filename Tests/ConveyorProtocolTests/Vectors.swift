import Foundation
import XCTest
import ConveyorCore
@testable import ConveyorProtocol

/// proto/vectors.json, read as the spec's §16 describes it.
struct Vector {
    let name: String
    let direction: String
    let frames: [[UInt8]]
    /// Valid vectors: the decoded fields, normalised.
    let decoded: Value?
    /// Invalid vectors: the §3.4 classification.
    let error: String?
}

/// A decoded message as a comparable tree: strings and `{"hex"}` become bytes
/// (opaque and text fields alike compare as bytes), numbers become integers.
indirect enum Value: Equatable, CustomStringConvertible {
    case bytes([UInt8])
    case int(Int)
    case null
    case list([Value])
    case object([String: Value])

    static func string(_ s: String) -> Value { .bytes(Array(s.utf8)) }
    static func optInt<T: BinaryInteger>(_ v: T?) -> Value { v.map { .int(Int($0)) } ?? .null }

    var description: String {
        switch self {
        case .bytes(let b):
            if let s = String(validating: b, as: UTF8.self) { return s.debugDescription }
            return "hex:" + b.map { String(format: "%02x", $0) }.joined()
        case .int(let i): return String(i)
        case .null: return "null"
        case .list(let l): return "[" + l.map(\.description).joined(separator: ", ") + "]"
        case .object(let o): return "{" + o.keys.sorted().map { "\($0): \(o[$0]!)" }.joined(separator: ", ") + "}"
        }
    }
}

enum VectorFile {
    static let url: URL = {
        // Tests/ConveyorProtocolTests/Vectors.swift → repository root.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("proto/vectors.json")
    }()

    static func load() throws -> (valid: [Vector], invalid: [Vector]) {
        let data = try Data(contentsOf: url)
        guard let root = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw Bad("root is not an object") }
        guard root["version"] as? Int == 1 else { throw Bad("version is not 1") }
        func vectors(_ key: String) throws -> [Vector] {
            guard let list = root[key] as? [[String: Any]] else { throw Bad("\(key) is not a list of objects") }
            return try list.map { v in
                guard let name = v["name"] as? String, let direction = v["direction"] as? String,
                      let frames = v["frames"] as? [Any] else { throw Bad("vector without name/direction/frames: \(v)") }
                return Vector(
                    name: name, direction: direction, frames: try frames.map(bytes),
                    decoded: try v["decoded"].map(normalise), error: v["error"] as? String
                )
            }
        }
        return (try vectors("valid"), try vectors("invalid"))
    }

    struct Bad: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    static func bytes(_ any: Any) throws -> [UInt8] {
        if let s = any as? String { return Array(s.utf8) }
        if let o = any as? [String: Any], o.count == 1, let hex = o["hex"] as? String { return try decodeHex(hex) }
        throw Bad("not a frame: \(any)")
    }

    static func decodeHex(_ hex: String) throws -> [UInt8] {
        let u = Array(hex.utf8)
        guard u.count % 2 == 0 else { throw Bad("odd hex length: \(hex)") }
        return try stride(from: 0, to: u.count, by: 2).map { i in
            guard let b = UInt8(String(decoding: u[i..<i + 2], as: UTF8.self), radix: 16) else { throw Bad("bad hex: \(hex)") }
            return b
        }
    }

    static func normalise(_ any: Any) throws -> Value {
        if any is NSNull { return .null }
        if let s = any as? String { return .string(s) }
        // Decoded fields hold integers only (no booleans, no fractions).
        if let n = any as? NSNumber { return .int(n.intValue) }
        if let l = any as? [Any] { return .list(try l.map(normalise)) }
        if let o = any as? [String: Any] {
            if o.count == 1, let hex = o["hex"] as? String { return .bytes(try decodeHex(hex)) }
            var out: [String: Value] = [:]
            for (k, v) in o { out[k] = try normalise(v) }
            return .object(out)
        }
        throw Bad("unexpected JSON value \(any)")
    }

}

// MARK: Decoded messages as Values, in the shape the vectors use.

let numericOptions: Set<String> = ["max_attempts", "delay_ms", "run_at_ms", "backoff_ms", "backoff_max_ms"]

extension ClientRequest {
    static func submission(_ s: TaskSpec) -> [String: Value] {
        var options: [String: Value] = [:]
        if s.maxAttempts != 1 { options["max_attempts"] = .int(Int(s.maxAttempts)) }
        if let k = s.idempotencyKey { options["idempotency_key"] = .bytes(Frames.opaqueBytes(k)) }
        if let d = s.delayMs { options["delay_ms"] = .int(Int(d)) }
        if let at = s.runAt { options["run_at_ms"] = .int(Int(at / 1000)) }
        if s.backoffMs != 1000 { options["backoff_ms"] = .int(Int(s.backoffMs)) }
        if s.backoffMaxMs != 300_000 { options["backoff_max_ms"] = .int(Int(s.backoffMaxMs)) }
        if let o = s.owner { options["owner"] = .string(o) }
        if let n = s.notify { options["notify"] = .string(n.rawValue) }
        return ["type": .string(s.type), "priority": .int(Int(s.priority.rawValue)), "timeout_ms": .optInt(s.timeoutMs),
                "payload": .bytes(s.payload), "options": .object(options)]
    }

    var value: Value {
        switch self {
        case .submit(let r, let s):
            var o = Self.submission(s)
            o["command"] = .string("SUBMIT")
            o["request_id"] = .bytes(r)
            return .object(o)
        case .submitBatch(let r, let specs):
            return .object(["command": .string("SUBMIT_BATCH"), "request_id": .bytes(r), "submissions": .list(specs.map { .object(Self.submission($0)) })])
        case .status(let r, let id):
            return .object(["command": .string("STATUS"), "request_id": .bytes(r), "task_id": .bytes(id.bytes)])
        case .cancel(let r, let id):
            return .object(["command": .string("CANCEL"), "request_id": .bytes(r), "task_id": .bytes(id.bytes)])
        case .stats(let r): return .object(["command": .string("STATS"), "request_id": .bytes(r)])
        case .tasks(let r, let limit): return .object(["command": .string("TASKS"), "request_id": .bytes(r), "limit": .int(limit)])
        case .ping(let r): return .object(["command": .string("PING"), "request_id": .bytes(r)])
        case .dead(let r, let a):
            var o: [String: Value] = ["command": .string("DEAD"), "request_id": .bytes(r)]
            switch a {
            case .list(let limit): o["action"] = .string("list"); o["limit"] = .int(limit)
            case .retry(let id): o["action"] = .string("retry"); o["task_id"] = .bytes(id.bytes)
            case .purge(let id): o["action"] = .string("purge"); o["task_id"] = id.map { .bytes($0.bytes) } ?? .null
            }
            return .object(o)
        case .type(let r, let a, let t):
            return .object(["command": .string("TYPE"), "request_id": .bytes(r), "action": .string(a.rawValue), "type": .string(t)])
        }
    }
}

extension ClientReply {
    var value: Value {
        switch self {
        case .accepted(let r, let id, let pos, let info):
            var o: [String: Value] = ["command": .string("ACCEPTED"), "request_id": .bytes(r), "task_id": .bytes(id.bytes), "position": .int(pos)]
            if let info {
                o["duplicate"] = .int(info.duplicate ? 1 : 0)
                o["state"] = .string(info.state.rawValue)
            }
            return .object(o)
        case .rejected(let r, let c, let m):
            return .object(["command": .string("REJECTED"), "request_id": .bytes(r), "code": .string(c), "message": .string(m)])
        case .submitted(let r, let outcomes):
            return .object(["command": .string("SUBMITTED"), "request_id": .bytes(r), "outcomes": .list(outcomes.map { o in
                switch o {
                case .accepted(let id, let pos, let info):
                    .object(["outcome": .string("ACCEPTED"), "task_id": .bytes(id.bytes), "position": .int(pos),
                             "duplicate": .int(info.duplicate ? 1 : 0), "state": .string(info.state.rawValue)])
                case .rejected(let c, let m): .object(["outcome": .string("REJECTED"), "code": .string(c), "message": .string(m)])
                }
            })])
        case .status(let r, let j): return .object(["command": .string("STATUS"), "request_id": .bytes(r), "json": .bytes(j)])
        case .cancelled(let r, let id, let p):
            return .object(["command": .string("CANCELLED"), "request_id": .bytes(r), "task_id": .bytes(id.bytes), "previous_state": .string(p)])
        case .stats(let r, let j): return .object(["command": .string("STATS"), "request_id": .bytes(r), "json": .bytes(j)])
        case .tasks(let r, let j): return .object(["command": .string("TASKS"), "request_id": .bytes(r), "json": .bytes(j)])
        case .dead(let r, let j): return .object(["command": .string("DEAD"), "request_id": .bytes(r), "json": .bytes(j)])
        case .type(let r, let j): return .object(["command": .string("TYPE"), "request_id": .bytes(r), "json": .bytes(j)])
        case .pong(let r): return .object(["command": .string("PONG"), "request_id": .bytes(r)])
        case .error(let r, let c, let m):
            return .object(["command": .string("ERROR"), "request_id": .bytes(r), "code": .string(c), "message": .string(m)])
        case .notLeader(let r, let submit, let m, let leader):
            return .object(["command": .string(submit ? "REJECTED" : "ERROR"), "request_id": .bytes(r), "code": .string("not_leader"),
                            "message": .string(m), "leader": .string(leader)])
        case .progress(let id, let p, let m):
            return .object(["command": .string("PROGRESS"), "task_id": .bytes(id.bytes), "percent": .optInt(p), "message": .string(m)])
        case .finished(let id, let s, let b):
            return .object(["command": .string("FINISHED"), "task_id": .bytes(id.bytes), "state": .string(s), "body": .bytes(b)])
        }
    }
}

extension WorkerMessage {
    var value: Value {
        switch self {
        case .ready(let n, let t, let c, let batch):
            var o: [String: Value] = ["command": .string("READY"), "name": .string(n), "types": .list(t.map(Value.string)), "capacity": .int(c)]
            if let batch { o["batch"] = .int(batch) }
            return .object(o)
        case .doneBatch(let items):
            return .object(["command": .string("DONE_BATCH"), "results": .list(items.map {
                .object(["task_id": .bytes($0.id.bytes), "attempt": .int(Int($0.attempt)), "result": .bytes($0.result), "cost": .optInt($0.cost)])
            })])
        case .heartbeat: return .object(["command": .string("HEARTBEAT")])
        case .progress(let id, let a, let p, let m):
            return .object(["command": .string("PROGRESS"), "task_id": .bytes(id.bytes), "attempt": .int(Int(a)),
                            "percent": .optInt(p), "message": .string(m)])
        case .done(let id, let a, let r, let cost):
            var o: [String: Value] = ["command": .string("DONE"), "task_id": .bytes(id.bytes), "attempt": .int(Int(a)), "result": .bytes(r)]
            if let cost { o["cost"] = .int(Int(cost)) }
            return .object(o)
        case .retryLater(let id, let a, let ms):
            return .object(["command": .string("RETRY_LATER"), "task_id": .bytes(id.bytes), "attempt": .int(Int(a)),
                            "retry_after_ms": .optInt(ms)])
        case .fail(let id, let a, let e):
            return .object(["command": .string("FAIL"), "task_id": .bytes(id.bytes), "attempt": .int(Int(a)), "error": .string(e)])
        case .drain: return .object(["command": .string("DRAIN")])
        case .returned(let id, let a): return .object(["command": .string("RETURN"), "task_id": .bytes(id.bytes), "attempt": .int(Int(a))])
        case .disconnect: return .object(["command": .string("DISCONNECT")])
        }
    }
}

extension BrokerToWorker {
    static func assignment(_ a: Assignment) -> [String: Value] {
        ["task_id": .bytes(a.id.bytes), "attempt": .int(Int(a.attempt)), "type": .string(a.type),
         "priority": .int(Int(a.priority.rawValue)), "timeout_ms": .int(Int(a.timeoutMs)), "payload": .bytes(a.payload)]
    }

    var value: Value {
        switch self {
        case .welcome(let hb, let lv): return .object(["command": .string("WELCOME"), "heartbeat_ms": .int(hb), "liveness": .int(lv)])
        case .task(let id, let a, let t, let p, let to, let pl):
            var o = Self.assignment(.init(id: id, attempt: a, type: t, priority: p, timeoutMs: to, payload: pl))
            o["command"] = .string("TASK")
            return .object(o)
        case .taskBatch(let items):
            return .object(["command": .string("TASK_BATCH"), "tasks": .list(items.map { .object(Self.assignment($0)) })])
        case .heartbeat: return .object(["command": .string("HEARTBEAT")])
        case .cancel(let id, let a, let r):
            return .object(["command": .string("CANCEL"), "task_id": .bytes(id.bytes), "attempt": .int(Int(a)), "reason": .string(r)])
        case .disconnect: return .object(["command": .string("DISCONNECT")])
        }
    }
}

extension EventMessage {
    var value: Value { .object(["topic": .string(topic), "json": .bytes(json)]) }
}

/// Decodes frames as the vector's direction says; returns the normalised value
/// and the canonical re-encoding.
func decode(_ direction: String, _ frames: [[UInt8]]) throws -> (value: Value, encoded: [[UInt8]]) {
    switch direction {
    case "client->broker":
        let m = try ClientRequest.decode(frames)
        return (m.value, m.encode())
    case "broker->client":
        let m = try ClientReply.decode(frames)
        return (m.value, m.encode())
    case "worker->broker":
        let m = try WorkerMessage.decode(frames)
        return (m.value, m.encode())
    case "broker->worker":
        let m = try BrokerToWorker.decode(frames)
        return (m.value, m.encode())
    case "events":
        let m = try EventMessage.decode(frames)
        return (m.value, m.encode())
    default:
        throw VectorFile.Bad("unknown direction \(direction)")
    }
}
