import ConveyorClient
import ConveyorCore
import ConveyorGateway
import ConveyorProtocol
import Foundation
import Synchronization

/// An in-memory stand-in for the broker behind `BrokerTransport`: a tiny model of
/// tasks (queued in priority order, cancellable, finishable by the test) that
/// answers the client protocol, records every request it was sent, and lets a
/// test push events to subscribers. Router tests need no process or socket.
final class FakeBroker: BrokerTransport, Sendable {
    struct Record {
        var id: TaskID
        var spec: TaskSpec
        var state: String
        var result: String?
        var error: String?
        var progress: (Int?, String)?
        var dead = false
    }

    struct State {
        var tasks: [TaskID: Record] = [:]
        var order: [TaskID] = []
        var next: UInt64 = 0x0190_f3c2_a1b2_0001
        var requests: [ClientRequest] = []
        var down = false
        var maxQueue = 100
        var paused: Set<String> = []
        var subscribers: [TaskID: [AsyncStream<TaskUpdate>.Continuation]] = [:]
        var observers: [AsyncStream<BrokerEvent>.Continuation] = []
        /// Called once per task, right after the first STATUS for it was answered, to
        /// script what happens next (a stream reads the status once it has subscribed).
        var afterFirstStatus: (@Sendable (TaskID) -> Void)?
        var statusSeen: Set<TaskID> = []
    }

    let state = Mutex(State())
    let brokerEndpoint = "tcp://127.0.0.1:5555"

    var requests: [ClientRequest] { state.withLock { $0.requests } }
    var submitted: [TaskSpec] {
        requests.compactMap { if case .submit(_, let s) = $0 { s } else { nil } }
    }

    func setDown(_ down: Bool) { state.withLock { $0.down = down } }
    func setMaxQueue(_ n: Int) { state.withLock { $0.maxQueue = n } }
    func afterFirstStatus(_ body: @escaping @Sendable (TaskID) -> Void) { state.withLock { $0.afterFirstStatus = body } }

    // MARK: BrokerTransport

    func call(timeoutMs: Int?, _ make: ([UInt8]) -> ClientRequest) async throws -> ClientReply {
        let request = make(Array("r1".utf8))
        // Everything the gateway sends must be a valid protocol message.
        let decoded = try ClientRequest.decode(request.encode())
        let (reply, hook) = try state.withLock { s -> (ClientReply, (@Sendable () -> Void)?) in
            s.requests.append(decoded)
            if s.down { throw ClientError.notConnected(endpoint: brokerEndpoint) }
            let reply = answer(decoded, &s)
            if case .status(_, let id) = decoded, let h = s.afterFirstStatus, s.statusSeen.insert(id).inserted {
                return (reply, { h(id) })
            }
            return (reply, nil)
        }
        hook?()
        return reply
    }

    func updates(for id: TaskID) -> AsyncStream<TaskUpdate> {
        let (stream, c) = AsyncStream<TaskUpdate>.makeStream()
        state.withLock { $0.subscribers[id, default: []].append(c) }
        return stream
    }

    func events(prefixes: [String], buffer: Int) -> AsyncStream<BrokerEvent> {
        let (stream, c) = AsyncStream<BrokerEvent>.makeStream()
        state.withLock { $0.observers.append(c) }
        return stream
    }

    // MARK: Test controls

    /// Adds a task directly (as if submitted elsewhere).
    @discardableResult
    func add(type: String = "pdf", priority: Priority = .normal, state st: String = "queued", owner: String? = nil) -> TaskID {
        state.withLock { s in
            let id = TaskID(raw: s.next)
            s.next += 1
            var spec = TaskSpec(type: type, priority: priority)
            spec.owner = owner
            s.tasks[id] = Record(id: id, spec: spec, state: st)
            s.order.append(id)
            return id
        }
    }

    func setState(_ id: TaskID, _ st: String, result: String? = nil, error: String? = nil, dead: Bool = false) {
        state.withLock { s in
            s.tasks[id]?.state = st
            s.tasks[id]?.result = result
            s.tasks[id]?.error = error
            s.tasks[id]?.dead = dead
        }
    }

    func setProgress(_ id: TaskID, _ percent: Int?, _ message: String) {
        state.withLock { $0.tasks[id]?.progress = (percent, message) }
    }

    /// Sends a task event (topic `task.NAME`) to the task's subscribers.
    func emit(_ id: TaskID, _ name: String, extra: String = "") {
        let json = "{\"event\":\"\(name)\",\"task_id\":\"\(id)\",\"type\":\"pdf\",\"priority\":\"NORMAL\",\"attempt\":1,\"ts\":\"2024-07-15T09:30:00.123Z\"\(extra)}"
        let event = BrokerEvent(topic: Array("task.\(name)".utf8), json: Array(json.utf8))
        let targets = state.withLock { $0.subscribers[id] ?? [] }
        for t in targets { t.yield(.event(event)) }
    }

    func finished(_ id: TaskID, state st: String, body: String) {
        let targets = state.withLock { $0.subscribers[id] ?? [] }
        for t in targets { t.yield(.finished(state: st, body: Array(body.utf8))) }
    }

    // MARK: Model

    private func queued(_ s: State) -> [Record] {
        let q = s.order.compactMap { s.tasks[$0] }.filter { $0.state == "queued" }
        return Priority.dispatchOrder.flatMap { p in q.filter { $0.spec.priority == p } }
    }

    private func statusJSON(_ t: Record, _ s: State) -> [UInt8] {
        var w = JSONWriter()
        w.field("task_id", t.id.description)
        w.field("type", t.spec.type)
        w.field("priority", t.spec.priority.name)
        w.field("priority_level", Int(t.spec.priority.rawValue))
        w.field("state", t.state)
        w.field("attempt", t.state == "queued" ? 0 : 1)
        w.field("max_attempts", Int(t.spec.maxAttempts))
        if t.state == "queued", let pos = queued(s).firstIndex(where: { $0.id == t.id }) { w.field("queue_position", pos) }
        if let p = t.progress {
            w.beginObject("progress")
            w.field("percent", p.0)
            w.field("message", p.1)
            w.endObject()
        } else {
            w.fieldNull("progress")
        }
        w.field("created_at", "2024-07-15T09:30:00.123Z")
        w.fieldNull("started_at")
        w.fieldNull("finished_at")
        w.field("timeout_ms", Int(t.spec.timeoutMs ?? 3_600_000))
        if let r = t.result { w.field("result", r) }
        if let e = t.error { w.field("error", e) }
        w.field("dead", t.dead)
        if let o = t.spec.owner { w.field("owner", o) }
        return w.finish()
    }

    private func answer(_ request: ClientRequest, _ s: inout State) -> ClientReply {
        switch request {
        case .submit(let r, let spec):
            if spec.type == "forbidden" { return .rejected(requestID: r, code: "unknown_type", message: "type forbidden is not accepted") }
            if spec.payload.count > 64 * 1024 * 1024 { return .rejected(requestID: r, code: "payload_too_large", message: "too large") }
            if let key = spec.idempotencyKey, let t = s.tasks.values.first(where: { $0.spec.idempotencyKey == key }) {
                let state = TaskState(rawValue: t.state) ?? .queued
                return .accepted(requestID: r, id: t.id, position: 0, info: spec.notify == nil ? nil : Acceptance(duplicate: true, state: state))
            }
            if queued(s).count >= s.maxQueue { return .rejected(requestID: r, code: "queue_full", message: "queue is full (\(s.maxQueue))") }
            let id = TaskID(raw: s.next)
            s.next += 1
            let st = (spec.delayMs ?? 0) > 0 ? "delayed" : "queued"
            s.tasks[id] = Record(id: id, spec: spec, state: st)
            s.order.append(id)
            let pos = queued(s).firstIndex { $0.id == id } ?? 0
            return .accepted(requestID: r, id: id, position: pos,
                             info: spec.notify == nil ? nil : Acceptance(duplicate: false, state: st == "delayed" ? .delayed : .queued))
        case .submitBatch(let r, _):
            return .error(requestID: r, code: "unknown_command", message: "this fake broker speaks SUBMIT only")
        case .status(let r, let id):
            guard let t = s.tasks[id] else { return .error(requestID: r, code: "not_found", message: "no task \(id)") }
            return .status(requestID: r, json: statusJSON(t, s))
        case .cancel(let r, let id):
            guard let t = s.tasks[id] else { return .error(requestID: r, code: "not_found", message: "no task \(id)") }
            guard ["queued", "delayed", "running"].contains(t.state) else {
                return .error(requestID: r, code: "not_cancellable", message: "task \(id) is already \(t.state)")
            }
            s.tasks[id]?.state = "cancelled"
            s.tasks[id]?.error = "cancelled"
            return .cancelled(requestID: r, id: id, previous: t.state)
        case .stats(let r):
            return .stats(requestID: r, json: statsJSON(s))
        case .tasks(let r, let limit):
            let running = s.order.compactMap { s.tasks[$0] }.filter { $0.state == "running" }.prefix(limit).map { statusJSON($0, s) }
            let q = queued(s).prefix(limit).map { statusJSON($0, s) }
            var w = JSONWriter()
            w.field("running", raw: JSONWriter.array(Array(running)))
            w.field("queued", raw: JSONWriter.array(Array(q)))
            w.field("queue_size", queued(s).count)
            return .tasks(requestID: r, json: w.finish())
        case .ping(let r):
            return .pong(requestID: r)
        case .type(let r, let action, let type):
            let changed = action == .pause ? s.paused.insert(type).inserted : s.paused.remove(type) != nil
            var w = JSONWriter()
            w.field("type", type)
            w.field("paused", s.paused.contains(type))
            w.field("changed", changed)
            return .type(requestID: r, json: w.finish())
        case .dead(let r, let action):
            let dead = s.order.compactMap { s.tasks[$0] }.filter(\.dead)
            switch action {
            case .list(let limit):
                var w = JSONWriter()
                w.field("dead", raw: JSONWriter.array(dead.prefix(limit).map { statusJSON($0, s) }))
                w.field("count", dead.count)
                return .dead(requestID: r, json: w.finish())
            case .retry(let id):
                guard s.tasks[id]?.dead == true else { return .error(requestID: r, code: "not_found", message: "no dead-lettered task \(id)") }
                s.tasks[id]?.dead = false
                s.tasks[id]?.state = "queued"
                var w = JSONWriter()
                w.field("retried", id.description)
                return .dead(requestID: r, json: w.finish())
            case .purge(let id):
                let victims = dead.filter { id == nil || $0.id == id }
                if id != nil && victims.isEmpty { return .error(requestID: r, code: "not_found", message: "no dead-lettered task") }
                for v in victims { s.tasks[v.id]?.dead = false }
                var w = JSONWriter()
                w.field("purged", victims.count)
                return .dead(requestID: r, json: w.finish())
            }
        }
    }

    private func statsJSON(_ s: State) -> [UInt8] {
        let all = s.tasks.values
        func count(_ st: String) -> Int { all.filter { $0.state == st }.count }
        let q = queued(s)
        var w = JSONWriter()
        w.field("total_processed", count("succeeded") + count("failed") + count("timed_out"))
        w.field("total_success", count("succeeded"))
        w.field("total_failed", count("failed"))
        w.field("total_timeout", count("timed_out"))
        w.field("total_cancelled", count("cancelled"))
        w.field("current_processing", count("running"))
        w.field("queue_size", q.count)
        w.field("max_workers", 3)
        w.field("max_queue_size", s.maxQueue)
        w.field("is_running", true)
        w.beginObject("queue_by_priority")
        for p in Priority.dispatchOrder { w.field(p.name.lowercased(), q.filter { $0.spec.priority == p }.count) }
        w.endObject()
        w.field("delayed", count("delayed"))
        w.field("workers_connected", 1)
        w.field("workers_busy", count("running") > 0 ? 1 : 0)
        w.field("dead_letters", all.filter(\.dead).count)
        w.field("timestamp", "2024-07-15T09:30:00.123Z")
        return w.finish()
    }
}
