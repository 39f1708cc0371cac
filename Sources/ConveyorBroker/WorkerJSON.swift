import ConveyorCore
import ConveyorProtocol

/// Why: operators need to see which workers are connected, what they take and
/// whether they are alive; the scheduler already tracks that, so TASKS carries
/// it (`workers`) at the cost of one small object per worker.
enum WorkerJSON {
    /// - Parameter wall: converts a monotonic timestamp to wall-clock time.
    static func list(_ workers: some Sequence<WorkerRecord>, now: Timestamp, wall: (Timestamp) -> Timestamp) -> [UInt8] {
        let items = workers.sorted { $0.name < $1.name }.map { w -> [UInt8] in
            var j = JSONWriter(capacity: 192)
            j.field("name", w.name)
            if let t = w.types { j.field("types", strings: t.sorted()) } else { j.fieldNull("types") }
            j.field("capacity", w.capacity)
            j.field("busy", w.running.count)
            j.field("draining", w.draining)
            j.field("last_heartbeat", wall(w.lastHeard).rfc3339)
            j.field("last_heartbeat_ms_ago", Int(max(0, now - w.lastHeard) / 1000))
            return j.finish()
        }
        return JSONWriter.array(items)
    }
}
