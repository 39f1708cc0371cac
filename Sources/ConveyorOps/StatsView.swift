import ConveyorProtocol
import Foundation

/// Why: `conveyor stats --watch` is the operator's `top` for the queue. The
/// screen is a pure function of the broker's STATS and TASKS objects (and the
/// previous STATS, for rates), so what an operator sees is unit-tested on
/// sample objects; the command only handles the terminal (alternate screen,
/// raw keys) and the refresh timer.
public struct StatsView {
    /// One STATS object and when it was taken (monotonic seconds).
    public struct Sample {
        public let stats: [String: Any]
        public let at: Double
        public init(stats: [String: Any], at: Double) { self.stats = stats; self.at = at }
    }

    public var title: String
    public var width: Int
    public var height: Int

    public init(title: String, width: Int = 100, height: Int = 40) {
        self.title = title
        self.width = max(40, width)
        self.height = max(10, height)
    }

    /// Per-second rates of the counters between two samples; nil without a previous one.
    public static func rates(previous: Sample?, current: Sample) -> [String: Double]? {
        guard let previous, current.at > previous.at else { return nil }
        let dt = current.at - previous.at
        var r: [String: Double] = [:]
        for (name, key) in [("submitted", StatsMember.tasksSubmitted), ("processed", .totalProcessed), ("succeeded", .totalSuccess),
                            ("failed", .totalFailed), ("timed_out", .totalTimeout)] {
            let a = int(previous.stats[key.rawValue]) ?? 0, b = int(current.stats[key.rawValue]) ?? 0
            r[name] = Double(max(0, b - a)) / dt
        }
        return r
    }

    /// The screen, one string per line, each at most `width` columns, at most `height` lines.
    public func render(current: Sample, previous: Sample?, tasks: [String: Any]?) -> [String] {
        let s = current.stats
        var lines: [String] = []
        let version = (s[StatsMember.version.rawValue] as? String).map { " \($0)" } ?? ""
        let state = (s[StatsMember.isRunning.rawValue] as? Bool) == false ? "STOPPING" : "live"
        lines.append("conveyor\(version) — \(title) — \(state) — up \(Self.duration(int(s[StatsMember.uptimeS.rawValue]) ?? 0)) — \(s[StatsMember.timestamp.rawValue] as? String ?? "")")
        lines.append("")
        let q = s[StatsMember.queueByPriority.rawValue] as? [String: Any] ?? [:]
        let levels = ["urgent", "high", "normal", "low"].map { "\($0) \(int(q[$0]) ?? 0)" }.joined(separator: "  ")
        lines.append("QUEUE     \(levels)  delayed \(int(s[StatsMember.delayed.rawValue]) ?? 0)  total \(int(s[StatsMember.queueSize.rawValue]) ?? 0)/\(int(s[StatsMember.maxQueueSize.rawValue]) ?? 0)")
        let connected = int(s[StatsMember.workersConnected.rawValue]) ?? 0, busy = int(s[StatsMember.workersBusy.rawValue]) ?? 0
        lines.append("WORKERS   \(connected) connected  \(busy) busy  \(max(0, connected - busy)) idle    running \(int(s[StatsMember.currentProcessing.rawValue]) ?? 0)/\(int(s[StatsMember.maxWorkers.rawValue]) ?? 0)")
        if let r = Self.rates(previous: previous, current: current) {
            lines.append("RATES     submitted \(Self.rate(r["submitted"]))  processed \(Self.rate(r["processed"]))  succeeded \(Self.rate(r["succeeded"]))  failed \(Self.rate(r["failed"]))  timed out \(Self.rate(r["timed_out"]))")
        } else {
            lines.append("RATES     (after the next refresh)")
        }
        if let l = s[StatsMember.dispatchLatencyMs.rawValue] as? [String: Any] {
            lines.append("LATENCY   dispatch p50 \(Self.ms(l["p50"]))  p90 \(Self.ms(l["p90"]))  p99 \(Self.ms(l["p99"]))  max \(Self.ms(l["max"]))  (\(int(l["count"]) ?? 0) dispatches)")
        }
        lines.append("TOTALS    processed \(int(s[StatsMember.totalProcessed.rawValue]) ?? 0)  succeeded \(int(s[StatsMember.totalSuccess.rawValue]) ?? 0)  failed \(int(s[StatsMember.totalFailed.rawValue]) ?? 0)  timed out \(int(s[StatsMember.totalTimeout.rawValue]) ?? 0)  cancelled \(int(s[StatsMember.totalCancelled.rawValue]) ?? 0)  dead letters \(int(s[StatsMember.deadLetters.rawValue]) ?? 0)")

        if let types = s[StatsMember.types.rawValue] as? [String: Any], !types.isEmpty {
            lines.append("")
            lines.append(Self.row(["TYPE", "QUEUED", "RUNNING", "LIMIT", "RATE WINDOW", "STATE"], [18, 7, 8, 6, 20, 20]))
            for name in types.keys.sorted() {
                guard let t = types[name] as? [String: Any] else { continue }
                let limit = int(t["concurrency_limit"]).map(String.init) ?? "–"
                var window = "–"
                if let r = t["rate_limit"] as? [String: Any] {
                    window = "\(int(r["in_window"]) ?? 0)/\(int(r["limit"]) ?? 0) per \(int(r["window_s"]) ?? 0)s"
                }
                let st = (t["paused"] as? Bool) == true ? "paused"
                    : (t["held_until"] as? String).map { "held until \($0)" } ?? (t["blocked"] as? String).map { "waiting: \($0)" } ?? "ok"
                lines.append(Self.row([name, "\(int(t["queued"]) ?? 0)", "\(int(t["running"]) ?? 0)", limit, window, st], [18, 7, 8, 6, 20, 20]))
            }
        }

        let running = tasks?["running"] as? [[String: Any]] ?? []
        let queued = tasks?["queued"] as? [[String: Any]] ?? []
        lines.append("")
        lines.append("RUNNING (\(running.count))")
        if running.isEmpty { lines.append("  none") }
        for t in running {
            let p = t["progress"] as? [String: Any]
            let pct = int(p?["percent"])
            let msg = p?["message"] as? String ?? ""
            let bar = ProgressLine.render(percent: pct, message: msg, elapsed: Self.elapsed(since: t["started_at"] as? String), width: 60, barWidth: 10)
            lines.append("  " + Self.row([t["task_id"] as? String ?? "", t["type"] as? String ?? "", t["priority"] as? String ?? "",
                                          t["worker"] as? String ?? ""], [17, 14, 7, 16]) + " " + bar)
        }
        lines.append("")
        lines.append("QUEUED (\(int(tasks?[StatsMember.queueSize.rawValue]) ?? int(s[StatsMember.queueSize.rawValue]) ?? 0)) next:")
        if queued.isEmpty { lines.append("  none") }
        for t in queued {
            lines.append("  " + Self.row(["#\(int(t["queue_position"]) ?? 0)", t["task_id"] as? String ?? "", t["type"] as? String ?? "",
                                          t["priority"] as? String ?? "", (t["waiting_for"] as? String ?? "").replacingOccurrences(of: "_", with: " ")],
                                         [5, 17, 14, 7, 20]))
        }
        // Fit the terminal: keep the head, cut the tail, leave room for the key help.
        var fitted = lines.map { ProgressLine.clip($0, width) }
        if fitted.count > height - 1 { fitted = Array(fitted.prefix(height - 2)) + ["  …"] }
        fitted.append("q quit")
        return fitted
    }

    static func row(_ cells: [String], _ widths: [Int]) -> String {
        var out = ""
        for (i, c) in cells.enumerated() {
            let w = i < widths.count ? widths[i] : 12
            let text = ProgressLine.clip(c, w)
            out += text + String(repeating: " ", count: max(1, w - text.count + 1))
        }
        while out.last == " " { out.removeLast() }
        return out
    }

    static func rate(_ v: Double?) -> String { String(format: "%.1f/s", v ?? 0) }
    static func ms(_ v: Any?) -> String { String(format: "%.1f ms", double(v) ?? 0) }

    static func duration(_ s: Int) -> String {
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m\(s % 60 < 10 ? "0" : "")\(s % 60)s" }
        return "\(s / 3600)h\((s / 60) % 60 < 10 ? "0" : "")\((s / 60) % 60)m"
    }

    static func elapsed(since rfc3339: String?) -> Double {
        guard let rfc3339 else { return 0 }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let d = f.date(from: rfc3339) ?? ISO8601DateFormatter().date(from: rfc3339)
        return d.map { max(0, Date().timeIntervalSince($0)) } ?? 0
    }
}

func int(_ v: Any?) -> Int? {
    switch v {
    case let i as Int: return i
    case let d as Double: return Int(d)
    case let n as NSNumber: return n.intValue
    default: return nil
    }
}

func double(_ v: Any?) -> Double? {
    switch v {
    case let d as Double: return d
    case let i as Int: return Double(i)
    case let n as NSNumber: return n.doubleValue
    default: return nil
    }
}
