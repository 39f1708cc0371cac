import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import Foundation
import XCTest
import ZeroMQ

extension Cluster {
    /// The data directory durability tests share across broker restarts.
    var dataDirectory: String { directory.appendingPathComponent("data").path }

    /// The journal file inside `dataDirectory`.
    var journalPath: String { dataDirectory + "/conveyor-journal.sqlite" }

    /// Starts a journaled broker; `restart` reuses the previous endpoints, so
    /// clients, workers and subscribers reconnect to it by themselves.
    @discardableResult
    func startDurableBroker(_ extra: [String] = [], durability: String = "fsync", restart: Bool = false) throws -> ManagedProcess {
        try startBroker(["--durability", durability, "--data-dir", dataDirectory] + extra, reuseEndpoints: restart)
    }

    /// A SUB socket on all task events that buffers without limit (the default
    /// high-water mark would drop events while a test is busy elsewhere),
    /// known to be live once it returns (it has seen a `stats` message).
    func subscribeUnbounded(_ topics: [String] = ["task."]) throws -> EventLog {
        let sub = try context.socket(.sub)
        try sub.setReceiveHighWaterMark(0)
        try sub.connect(events)
        for t in topics + ["stats"] { try sub.subscribe(t) }
        _ = try eventually("first stats event") { () -> Bool? in
            guard let m = try sub.receive(dontWait: true) else { return nil }
            return m.first == Array("stats".utf8) ? true : nil
        }
        return EventLog(sub)
    }

    /// STATUS of many tasks over one connection, pipelined. A task the broker
    /// does not know maps to `["state": "not_found"]`.
    func statuses(_ ids: [TaskID], timeout: TimeInterval = 30) throws -> [TaskID: [String: Any]] {
        let c = try client()
        defer { c.close() }
        var out: [TaskID: [String: Any]] = [:]
        var pending: [[UInt8]: TaskID] = [:]
        for id in ids {
            let rid = c.nextRequestID()
            pending[rid] = id
            try c.send(.status(requestID: rid, id: id))
        }
        let deadline = Date().addingTimeInterval(timeout)
        while !pending.isEmpty && Date() < deadline {
            guard let reply = try c.receive(timeoutMs: 1000), let rid = reply.requestID, let id = pending.removeValue(forKey: rid) else { continue }
            switch reply {
            case .status(_, let json):
                out[id] = (try JSONSerialization.jsonObject(with: Data(json)) as? [String: Any]) ?? [:]
            case .error(_, let code, _):
                out[id] = ["state": code]
            default:
                out[id] = ["state": "unexpected reply"]
            }
        }
        guard pending.isEmpty else { throw TimedOut(description: "no STATUS reply for \(pending.count) of \(ids.count) tasks") }
        return out
    }

    /// Waits until every task is in a final state; returns their statuses.
    func waitUntilAllFinal(_ ids: [TaskID], timeout: TimeInterval = 60) throws -> [TaskID: [String: Any]] {
        let finals: Set<String> = ["succeeded", "failed", "timed_out", "cancelled"]
        var last: [TaskID: [String: Any]] = [:]
        return try eventually(timeout: timeout, "all \(ids.count) tasks to finish; not yet: \(last.filter { !finals.contains($0.value["state"] as? String ?? "") }.prefix(5).map { "\($0.key)=\($0.value["state"] ?? "?")" })") {
            last = try statuses(ids)
            return last.values.allSatisfy { finals.contains($0["state"] as? String ?? "") } ? last : nil
        }
    }
}

/// Task events read from a SUB socket, parsed. Delivery is best effort (a
/// restarted broker's first events can go before the SUB has reconnected),
/// so tests use it to assert what must never happen twice, and for ordering
/// while the broker stays up.
final class EventLog {
    struct Event {
        let topic: String
        let taskID: TaskID?
        let json: [String: Any]
        var ts: Date? { (json["ts"] as? String).flatMap(EventLog.parseTime) }
    }

    let socket: ZMQSocket
    private(set) var events: [Event] = []

    init(_ socket: ZMQSocket) { self.socket = socket }

    /// Reads what has arrived, without waiting.
    @discardableResult
    func drain() throws -> [Event] {
        var fresh: [Event] = []
        for _ in 0..<100_000 {
            guard let m = try socket.receive(dontWait: true) else { break }
            guard m.count == 2 else { continue }
            let topic = String(decoding: m[0], as: UTF8.self)
            guard topic != "stats" else { continue }
            let json = (try? JSONSerialization.jsonObject(with: Data(m[1])) as? [String: Any]) ?? [:]
            fresh.append(Event(topic: topic, taskID: (json["task_id"] as? String).flatMap { TaskID($0) }, json: json))
        }
        events.append(contentsOf: fresh)
        return fresh
    }

    /// Reads until the broker's next `stats` message: every event it
    /// published before that message has then been read.
    func drainUntilStats(timeout: TimeInterval = 10) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let m = try socket.receive(dontWait: true) else {
                usleep(5000)
                continue
            }
            guard m.count == 2 else { continue }
            let topic = String(decoding: m[0], as: UTF8.self)
            if topic == "stats" { return }
            let json = (try? JSONSerialization.jsonObject(with: Data(m[1])) as? [String: Any]) ?? [:]
            events.append(Event(topic: topic, taskID: (json["task_id"] as? String).flatMap { TaskID($0) }, json: json))
        }
        throw TimedOut(description: "no stats event within \(timeout) s")
    }

    /// Waits for an event matching `match`.
    @discardableResult
    func waitFor(_ what: String, timeout: TimeInterval = 30, _ match: (Event) -> Bool) throws -> Event {
        if let e = events.first(where: match) { return e }
        return try eventually(timeout: timeout, what) { try drain().first(where: match) }
    }

    func count(_ topic: String, _ id: TaskID) -> Int { events.filter { $0.topic == topic && $0.taskID == id }.count }

    nonisolated(unsafe) private static let formatter: ISO8601DateFormatter = {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }()

    static func parseTime(_ s: String) -> Date? { formatter.date(from: s) }
}
