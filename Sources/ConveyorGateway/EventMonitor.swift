import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import ServiceLifecycle
import Synchronization

/// Watches the broker's event stream for the dashboard and the metrics: keeps
/// a short history of `stats` snapshots (the throughput chart of a freshly
/// opened page must show the last minutes, which a browser cannot know), the
/// most recent failures and worker arrivals/departures, and measures dispatch
/// latency as the time between `task.queued` and `task.started`.
///
/// Runs as a ServiceLifecycle service next to the HTTP server.
public final class EventMonitor: Service, Sendable {
    public struct Sample: Sendable, Equatable {
        /// Unix epoch milliseconds of the snapshot (from its `timestamp`).
        public var time: Int64
        public var processed: Int
        public var succeeded: Int
        public var failed: Int
        public var queued: Int
        public var running: Int
    }

    struct State {
        var history: [Sample] = []
        var failures: [[UInt8]] = []
        var workerEvents: [[UInt8]] = []
        var queuedAt: [TaskID: Int64] = [:]
        var lastStats: [UInt8]?
    }

    /// Ten minutes of one-second snapshots.
    public static let historyLimit = 600
    public static let failureLimit = 20
    /// Bounds the queued-at table when tasks are queued faster than dispatched.
    static let pendingLimit = 200_000

    private let transport: any BrokerTransport
    private let metrics: GatewayMetrics
    private let state = Mutex(State())

    public init(transport: any BrokerTransport, metrics: GatewayMetrics) {
        self.transport = transport
        self.metrics = metrics
    }

    public func run() async throws {
        let stream = transport.events(prefixes: ["stats", "task.", "worker."], buffer: 16_384)
        await withGracefulShutdownHandler {
            for await event in stream.cancelOnGracefulShutdown() { observe(event) }
        } onGracefulShutdown: {}
    }

    static let topicStats = Array("stats".utf8)
    static let topicQueued = Array("task.queued".utf8)
    static let topicReassigned = Array("task.reassigned".utf8)
    static let topicStarted = Array("task.started".utf8)
    static let topicFailed = Array("task.failed".utf8)
    static let topicTimedOut = Array("task.timed_out".utf8)
    static let topicWorker = Array("worker.".utf8)
    static let finalTopics: [[UInt8]] = ["task.succeeded", "task.cancelled", "task.failed", "task.timed_out"].map { Array($0.utf8) }

    /// Handles one event (public for tests that feed events directly).
    public func observe(_ event: BrokerEvent) {
        let topic = event.topic
        if topic == EventMonitor.topicStats {
            guard let v = try? JSONValue.parse(event.json) else { return }
            metrics.update(stats: v)
            let sample = Sample(
                time: (v[StatsMember.timestamp.rawValue]?.stringValue).flatMap(EventMonitor.epochMs) ?? 0,
                processed: v[StatsMember.totalProcessed.rawValue]?.intValue ?? 0,
                succeeded: v[StatsMember.totalSuccess.rawValue]?.intValue ?? 0,
                failed: (v[StatsMember.totalFailed.rawValue]?.intValue ?? 0) + (v[StatsMember.totalTimeout.rawValue]?.intValue ?? 0),
                queued: v[StatsMember.queueSize.rawValue]?.intValue ?? 0,
                running: v[StatsMember.currentProcessing.rawValue]?.intValue ?? 0)
            state.withLock { s in
                s.lastStats = event.json
                s.history.append(sample)
                if s.history.count > EventMonitor.historyLimit { s.history.removeFirst(s.history.count - EventMonitor.historyLimit) }
            }
            return
        }
        if topic.starts(with: EventMonitor.topicWorker) {
            state.withLock { s in
                s.workerEvents.append(event.json)
                if s.workerEvents.count > EventMonitor.failureLimit { s.workerEvents.removeFirst() }
            }
            return
        }
        guard let id = event.taskID else { return }
        if topic == EventMonitor.topicQueued || topic == EventMonitor.topicReassigned {
            guard let ts = EventMonitor.member("ts", in: event.json).flatMap(EventMonitor.epochMs) else { return }
            state.withLock { s in
                if s.queuedAt.count >= EventMonitor.pendingLimit { s.queuedAt.removeAll(keepingCapacity: true) }
                s.queuedAt[id] = ts
            }
        } else if topic == EventMonitor.topicStarted {
            guard let ts = EventMonitor.member("ts", in: event.json).flatMap(EventMonitor.epochMs) else { return }
            if let q = state.withLock({ $0.queuedAt.removeValue(forKey: id) }) {
                metrics.dispatchLatency(seconds: Double(ts - q) / 1000)
            }
        } else if EventMonitor.finalTopics.contains(topic) {
            let failed = topic == EventMonitor.topicFailed || topic == EventMonitor.topicTimedOut
            state.withLock { s in
                s.queuedAt.removeValue(forKey: id)
                if failed {
                    s.failures.append(event.json)
                    if s.failures.count > EventMonitor.failureLimit { s.failures.removeFirst() }
                }
            }
        }
    }

    /// `{"history": [...], "recent_failures": [...], "worker_events": [...]}` for the dashboard.
    public func dashboardJSON() -> [UInt8] {
        let (history, failures, workers) = state.withLock { ($0.history, $0.failures, $0.workerEvents) }
        var w = JSONWriter(capacity: 64 + history.count * 96)
        w.field("history", raw: JSONWriter.array(history.map { s in
            var o = JSONWriter(capacity: 96)
            o.field("t", s.time)
            o.field("processed", s.processed)
            o.field("succeeded", s.succeeded)
            o.field("failed", s.failed)
            o.field("queued", s.queued)
            o.field("running", s.running)
            return o.finish()
        }))
        w.field("recent_failures", raw: JSONWriter.array(failures.reversed()))
        w.field("worker_events", raw: JSONWriter.array(workers.reversed()))
        return w.finish()
    }

    public var history: [Sample] { state.withLock { $0.history } }

    /// The string value of a top-level `"name":"value"` member, found by scanning
    /// (events are flat objects written by the broker's JSONWriter).
    static func member(_ name: String, in json: [UInt8]) -> String? {
        let key = Array("\"\(name)\":\"".utf8)
        guard json.count > key.count else { return nil }
        var i = 0
        while i + key.count <= json.count {
            if json[i] == key[0], json[i..<(i + key.count)].elementsEqual(key) {
                let start = i + key.count
                guard let end = json[start...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
                return String(decoding: json[start..<end], as: UTF8.self)
            }
            i += 1
        }
        return nil
    }

    /// Parses `2024-07-15T09:30:00.123Z` (the protocol's timestamp form) to Unix ms.
    static func epochMs(_ s: String) -> Int64? {
        let u = Array(s.utf8)
        guard u.count >= 20, u[4] == UInt8(ascii: "-"), u[7] == UInt8(ascii: "-"), u[10] == UInt8(ascii: "T"),
              u[13] == UInt8(ascii: ":"), u[16] == UInt8(ascii: ":") else { return nil }
        func num(_ r: Range<Int>) -> Int64? {
            var v: Int64 = 0
            for k in r {
                guard u[k] >= 48, u[k] <= 57 else { return nil }
                v = v * 10 + Int64(u[k] - 48)
            }
            return v
        }
        guard let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10), let h = num(11..<13), let mi = num(14..<16),
              let sec = num(17..<19), (1...12).contains(mo), (1...31).contains(d) else { return nil }
        var ms: Int64 = 0
        if u[19] == UInt8(ascii: ".") {
            var k = 20, scale: Int64 = 100
            while k < u.count, u[k] >= 48, u[k] <= 57 {
                ms += Int64(u[k] - 48) * scale
                scale /= 10
                k += 1
            }
        }
        // Days from civil (Howard Hinnant's algorithm).
        let yy = mo <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let mp = (mo + 9) % 12
        let doy = (153 * mp + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return ((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms
    }
}
