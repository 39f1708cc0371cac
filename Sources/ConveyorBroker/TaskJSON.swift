import ConveyorCore
import ConveyorProtocol
import Foundation

/// JSON shapes the broker sends out: status objects, events, stats.
/// Hand-written with `JSONWriter` because events are on the hot path.
enum TaskJSON {
    static func status(_ t: TaskRecord, position: Int?, waitingFor: WaitReason? = nil) -> [UInt8] {
        var w = JSONWriter(capacity: 384)
        w.field("task_id", t.id.description)
        w.field("type", t.type)
        w.field("priority", t.priority.name)
        w.field("priority_level", Int(t.priority.rawValue))
        w.field("state", t.state.rawValue)
        w.field("attempt", Int(t.attempt))
        w.field("max_attempts", Int(t.maxAttempts))
        if let position { w.field("queue_position", position) }
        if let waitingFor { w.field("waiting_for", waitingFor.rawValue) }
        let d = t.details
        // Present only while running (§5.3): members of other states are omitted, not null.
        if t.state == .running, let worker = d?.worker { w.field("worker", worker) }
        if let d, d.progressPercent != nil || d.progressMessage != nil {
            w.beginObject("progress")
            w.field("percent", d.progressPercent.map { Int($0) })
            w.field("message", d.progressMessage ?? "")
            w.endObject()
        } else {
            w.fieldNull("progress")
        }
        w.field("created_at", t.createdAt.rfc3339)
        w.field("started_at", d?.startedAt?.rfc3339)
        w.field("finished_at", d?.finishedAt?.rfc3339)
        if let at = d?.runAt, t.state == .delayed { w.field("run_at", at.rfc3339) }
        w.field("timeout_ms", Int(t.timeoutMs))
        if t.state == .succeeded, let r = d?.result {
            if let s = String(validating: r, as: UTF8.self) { w.field("result", s) } else { w.field("result_base64", Data(r).base64EncodedString()) }
        }
        if let e = d?.error, t.state != .succeeded { w.field("error", e) }
        w.field("dead", d?.dead ?? false)
        if let owner = t.owner { w.field("owner", owner) }
        return w.finish()
    }

    /// One member of stats `types` (§7.4).
    static func typeStats(_ s: TypeStats, into w: inout JSONWriter) {
        w.beginObject(s.type)
        w.field("queued", s.queued)
        w.field("running", s.running)
        w.field("concurrency_limit", s.concurrencyLimit)
        if let r = s.rateLimit {
            w.beginObject("rate_limit")
            w.field("limit", Int(r.limit)); w.field("window_s", Int(r.windowUs / 1_000_000)); w.field("in_window", s.dispatchesInWindow)
            w.endObject()
        } else {
            w.fieldNull("rate_limit")
        }
        if let c = s.costLimit {
            w.beginObject("cost_limit")
            w.field("limit", Int(c.limit)); w.field("window_s", Int(c.windowUs / 1_000_000)); w.field("in_window", Int(s.costInWindow))
            w.endObject()
        } else {
            w.fieldNull("cost_limit")
        }
        w.field("held_until", s.heldUntil?.rfc3339)
        w.field("paused", s.paused)
        w.field("blocked", s.blocked?.rawValue)
        w.endObject()
    }

    /// - Parameter attempt: dispatches so far when the event happened (§7.3); the
    ///   record may be ahead of it when the task was dispatched again in the same loop turn.
    static func event(_ name: String, _ t: TaskRecord?, id: TaskID, attempt: UInt16?, now: Timestamp, extra: (inout JSONWriter) -> Void) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.field("event", name)
        w.field("task_id", id.description)
        if let t {
            w.field("type", t.type)
            w.field("priority", t.priority.name)
            w.field("attempt", Int(attempt ?? t.attempt))
        }
        w.field("ts", now.rfc3339)
        extra(&w)
        return w.finish()
    }
}
