import ConveyorCore
import ConveyorProtocol
import Prometheus
import Synchronization

/// The gateway's Prometheus metrics (GET /metrics), in a registry of its own.
///
/// Why not the global swift-metrics bootstrap: a process may bootstrap it only
/// once, which would tie every router test to one shared set of counters. The
/// broker's figures (queue depth, workers, totals) are refreshed from a STATS
/// request at scrape time and from the `stats` events in between; cumulative
/// broker totals become Prometheus counters by adding the increase since the
/// previous snapshot (a broker restart, which resets them, adds the new total).
public final class GatewayMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    private let queueDepth: [Priority: Gauge]
    private let delayed: Gauge
    private let running: Gauge
    private let workersConnected: Gauge
    private let workersBusy: Gauge
    private let deadLetters: Gauge
    private let brokerUp: Gauge
    private let maxQueue: Gauge
    private let submitted: [Priority: Counter]
    private let finishedCounters: [String: Counter]
    private let dispatchLatency: ValueHistogram
    private let httpInFlight: Gauge
    private let connectionsOpen: Gauge
    private let connectionsRefused: Counter
    private let requestsShed: Counter
    private let lastTotals = Mutex<[String: Int]>([:])
    private let rejectedByReason = Mutex<[String: Counter]>([:])
    private let httpSeries = Mutex<[HTTPSeriesKey: (count: Counter, duration: ValueHistogram)]>([:])

    struct HTTPSeriesKey: Hashable {
        let method: String
        let route: String
        let status: Int
    }

    static let latencyBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
    static let httpBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    /// Broker stats member → counter name suffix.
    static let totals: [(member: String, name: String, help: String)] = [
        (StatsMember.totalSuccess.rawValue, "tasks_succeeded", "Tasks that ended succeeded (broker-wide)."),
        (StatsMember.totalFailed.rawValue, "tasks_failed", "Tasks that ended failed (broker-wide)."),
        (StatsMember.totalTimeout.rawValue, "tasks_timed_out", "Tasks that ended timed_out (broker-wide)."),
        (StatsMember.totalCancelled.rawValue, "tasks_cancelled", "Tasks that were cancelled (broker-wide)."),
    ]

    public init() {
        let registry = self.registry
        func gauge(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Gauge {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "conveyor", metricName: name, unitName: "", helpText: help), labels: labels)
        }
        var depth: [Priority: Gauge] = [:]
        var sub: [Priority: Counter] = [:]
        for p in Priority.allCases {
            depth[p] = gauge("queue_depth", "Queued (dispatchable) tasks per priority.", [("priority", p.name.lowercased())])
            sub[p] = registry.makeCounter(
                descriptor: MetricNameDescriptor(namespace: "conveyor", metricName: "tasks_submitted", unitName: "total",
                                                 helpText: "Tasks accepted by the broker for submissions made through this gateway."),
                labels: [("priority", p.name.lowercased())])
        }
        queueDepth = depth
        submitted = sub
        delayed = gauge("tasks_delayed", "Tasks waiting for a delay or retry backoff.")
        running = gauge("tasks_running", "Attempts running on workers.")
        workersConnected = gauge("workers_connected", "Registered workers.")
        workersBusy = gauge("workers_busy", "Workers running at least one task.")
        deadLetters = gauge("dead_letters", "Tasks in the dead-letter set.")
        maxQueue = gauge("queue_max_size", "The broker's queue bound.")
        brokerUp = gauge("broker_up", "1 when the last STATS request to the broker was answered.")
        httpInFlight = gauge("http_requests_in_flight", "HTTP requests being handled.")
        connectionsOpen = gauge("http_connections_open", "HTTP connections open (at scrape time).")
        connectionsRefused = registry.makeCounter(
            descriptor: MetricNameDescriptor(namespace: "conveyor", metricName: "http_malformed_requests", unitName: "total",
                                             helpText: "Connections answered 400 and closed because their first request did not parse."), labels: [])
        requestsShed = registry.makeCounter(
            descriptor: MetricNameDescriptor(namespace: "conveyor", metricName: "http_requests_shed", unitName: "total",
                                             helpText: "Requests answered 503 overloaded because too many connections were open."), labels: [])
        var fin: [String: Counter] = [:]
        for t in GatewayMetrics.totals {
            fin[t.member] = registry.makeCounter(
                descriptor: MetricNameDescriptor(namespace: "conveyor", metricName: t.name, unitName: "total", helpText: t.help), labels: [])
        }
        finishedCounters = fin
        dispatchLatency = registry.makeValueHistogram(
            descriptor: MetricNameDescriptor(namespace: "conveyor", metricName: "dispatch_latency", unitName: "seconds",
                                             helpText: "Time from a task becoming dispatchable to its dispatch to a worker (from the event stream)."),
            labels: [], buckets: GatewayMetrics.latencyBuckets)
    }

    /// Updates the broker figures from a stats object (proto §7.4).
    public func update(stats: JSONValue) {
        if let q = stats[StatsMember.queueByPriority.rawValue] {
            for p in Priority.allCases { if let n = q[p.name.lowercased()]?.numberValue { queueDepth[p]?.set(n) } }
        }
        if let n = stats[StatsMember.delayed.rawValue]?.numberValue { delayed.set(n) }
        if let n = stats[StatsMember.currentProcessing.rawValue]?.numberValue { running.set(n) }
        if let n = stats[StatsMember.workersConnected.rawValue]?.numberValue { workersConnected.set(n) }
        if let n = stats[StatsMember.workersBusy.rawValue]?.numberValue { workersBusy.set(n) }
        if let n = stats[StatsMember.deadLetters.rawValue]?.numberValue { deadLetters.set(n) }
        if let n = stats[StatsMember.maxQueueSize.rawValue]?.numberValue { maxQueue.set(n) }
        let increases: [(Counter, Int)] = lastTotals.withLock { last in
            GatewayMetrics.totals.compactMap { t in
                guard let v = stats[t.member]?.intValue, let c = finishedCounters[t.member] else { return nil }
                let before = last[t.member]
                last[t.member] = v
                let inc = before.map { v >= $0 ? v - $0 : v } ?? v
                return inc > 0 ? (c, inc) : nil
            }
        }
        for (c, inc) in increases { c.increment(by: Int64(inc)) }
    }

    public func setBrokerUp(_ up: Bool) { brokerUp.set(up ? 1.0 : 0.0) }

    public func submitted(_ p: Priority) { submitted[p]?.increment() }

    /// A submission the broker (or the gateway's validation) refused, by reason
    /// (`queue_full`, `payload_too_large`, `bad_request`, `unknown_type`, `broker_unavailable`…).
    public func rejected(_ reason: String) {
        let known: Set<String> = ["queue_full", "payload_too_large", "bad_request", "unknown_type", "shutting_down", "broker_unavailable", "unauthorized",
                                     "unsupported_media_type"]
        let r = known.contains(reason) ? reason : "other"
        let c = rejectedByReason.withLock { m -> Counter in
            if let c = m[r] { return c }
            let c = registry.makeCounter(
                descriptor: MetricNameDescriptor(namespace: "conveyor", metricName: "tasks_rejected", unitName: "total",
                                                 helpText: "Submissions through this gateway that were refused, by reason."),
                labels: [("reason", r)])
            m[r] = c
            return c
        }
        c.increment()
    }

    public func dispatchLatency(seconds: Double) { dispatchLatency.record(max(0, seconds)) }

    func httpStarted() { httpInFlight.increment() }
    func rejectedConnection() { connectionsRefused.increment() }
    func shedRequest() { requestsShed.increment() }
    func setConnectionsOpen(_ n: Int) { connectionsOpen.set(Double(n)) }

    func httpFinished(method: String, route: String, status: Int, seconds: Double) {
        httpInFlight.decrement()
        let key = HTTPSeriesKey(method: method, route: route, status: status)
        let series = httpSeries.withLock { m in
            if let s = m[key] { return s }
            let labels = [("method", method), ("route", route), ("status", String(status))]
            let s = (
                registry.makeCounter(
                    descriptor: MetricNameDescriptor(namespace: "conveyor", subsystem: "http", metricName: "requests", unitName: "total",
                                                     helpText: "HTTP requests answered, by method, route template and status."),
                    labels: labels),
                registry.makeValueHistogram(
                    descriptor: MetricNameDescriptor(namespace: "conveyor", subsystem: "http", metricName: "request_duration", unitName: "seconds",
                                                     helpText: "Time to produce an HTTP response (streams: until the stream ends)."),
                    labels: labels, buckets: GatewayMetrics.httpBuckets)
            )
            m[key] = s
            return s
        }
        series.count.increment()
        series.duration.record(seconds)
    }

    /// The Prometheus text exposition of every metric.
    public func render() -> [UInt8] { registry.emitToBuffer() }
}
