import ConveyorClient
import ConveyorCore
import Foundation
import XCTest
import ZeroMQ

/// The gateway as users run it: real broker, worker and gateway processes on
/// loopback, driven over HTTP, SSE and WebSocket.
final class GatewayIntegrationTests: ClusterTestCase {
    static let token = "it-token-1"

    /// A worker command that reports progress twice, then echoes its payload.
    static let progressExec = "echo \"25 quarter\" >&3; sleep 0.3; echo \"75 most\" >&3; sleep 0.3; cat"

    func testSubmitAtEachPriorityCompletesInPriorityOrderWithOneWorker() throws {
        try cluster.startBroker(["--max-running", "1"])
        let gw = try cluster.startGateway(tokens: [Self.token], eventsOut: true)
        try cluster.waitForGatewayEvents(gw, token: Self.token)
        // Watch completions on the gateway's republished stream (and so test it too).
        let out = try XCTUnwrap(gw.eventsOut)
        let sub = try cluster.context.socket(.sub)
        defer { sub.close() }
        try sub.connect(out)
        try sub.subscribe("task.succeeded")
        try sub.subscribe("stats")
        _ = try eventually("first stats event via --events-out") { () -> Bool? in
            guard let m = try sub.receive(dontWait: true) else { return nil }
            return m.first == Array("stats".utf8) ? true : nil
        }

        // No worker yet: everything queues. Submit low first, urgent last, through each route style.
        var expected: [Priority: [String]] = [:]
        for round in 0..<2 {
            for p in [Priority.low, .normal, .high, .urgent] {
                let r: GatewayHTTPClient.Response
                if round == 0 {
                    r = try gw.http.json("POST", "/api/tasks", token: Self.token,
                                         json: #"{"type":"t","payload":"\#(p.name)-\#(round)","priority":"\#(p.name.lowercased())"}"#)
                } else {
                    r = try gw.http.json("POST", "/summarize?priority=\(p.rawValue)", token: Self.token,
                                         json: #"{"url":"https://example.com/\#(p.name)"}"#)
                }
                XCTAssertEqual(r.status, round == 0 ? 201 : 200, r.text)
                XCTAssertEqual(r.json["priority"] as? String, p.name)
                expected[p, default: []].append(try XCTUnwrap(r.json["task_id"] as? String))
            }
        }
        let tasks = try gw.http.json("GET", "/api/queue/tasks", token: Self.token)
        let queued = (tasks.json["queued"] as? [[String: Any]] ?? []).compactMap { $0["task_id"] as? String }
        let order = Priority.dispatchOrder.flatMap { expected[$0] ?? [] }
        XCTAssertEqual(queued, order, "queued in dispatch order")

        try cluster.startWorker(name: "w1")
        var completed: [String] = []
        _ = try eventually(timeout: 60, "8 completions (have \(completed.count))") { () -> Bool? in
            while let m = try sub.receive(dontWait: true) {
                guard m.first == Array("task.succeeded".utf8), m.count == 2,
                      let o = try JSONSerialization.jsonObject(with: Data(m[1])) as? [String: Any], let id = o["task_id"] as? String else { continue }
                completed.append(id)
            }
            return completed.count >= 8 ? true : nil
        }
        XCTAssertEqual(completed, order, "URGENT, HIGH, NORMAL, LOW; FIFO within a level")
        let stats = try gw.http.json("GET", "/api/queue/stats")
        XCTAssertEqual(stats.json["total_success"] as? Int, 8)
    }

    func testServerSentEventsDeliverProgressThenResult() throws {
        try cluster.startBroker()
        let gw = try cluster.startGateway(tokens: [Self.token])
        try cluster.waitForGatewayEvents(gw, token: Self.token)
        let r = try gw.http.json("POST", "/api/tasks", token: Self.token, json: #"{"type":"t","payload":"sse payload"}"#)
        let id = try XCTUnwrap(r.json["task_id"] as? String)
        // EventSource style: the token in the query string.
        let stream = try gw.http.events("/api/tasks/\(id)/stream?token=\(Self.token)")
        defer { stream.close() }
        XCTAssertEqual(stream.status, 200)
        XCTAssertEqual(stream.headers["content-type"], "text/event-stream")
        let first = try XCTUnwrap(stream.next())
        XCTAssertEqual(first.event, "status")
        XCTAssertEqual(first.json["state"] as? String, "queued")
        try cluster.startWorker(name: "w1", ["--exec", Self.progressExec])
        let rest = try stream.rest()
        let names = rest.map(\.event)
        let percents = rest.filter { $0.event == "progress" }.compactMap { $0.json["percent"] as? Int }
        XCTAssertEqual(percents, [25, 75], "\(names)")
        XCTAssertEqual(names.last, "result", "\(names)")
        XCTAssertLessThan(names.firstIndex(of: "progress") ?? 99, names.firstIndex(of: "result") ?? -1)
        XCTAssertEqual(rest.last?.json["result"] as? String, "sse payload")
        XCTAssertEqual(rest.last?.json["state"] as? String, "succeeded")

        // A stream opened on a finished task answers at once and ends.
        let again = try gw.http.events("/api/tasks/\(id)/stream", headers: ["Authorization": "Bearer \(Self.token)"])
        defer { again.close() }
        XCTAssertEqual(try again.rest(timeout: 10).map(\.event), ["status", "result"])
    }

    func testWebSocketDeliversProgressThenResult() throws {
        try cluster.startBroker()
        let gw = try cluster.startGateway(tokens: [Self.token])
        try cluster.waitForGatewayEvents(gw, token: Self.token)
        let r = try gw.http.json("POST", "/api/tasks", token: Self.token, json: #"{"type":"t","payload":{"n":1}}"#)
        let id = try XCTUnwrap(r.json["task_id"] as? String)
        let ws = try gw.http.webSocket("/ws/\(id)?token=\(Self.token)")
        defer { ws.close() }
        XCTAssertEqual(ws.status, 101)
        let first = try XCTUnwrap(ws.next())
        XCTAssertTrue(first.contains("\"event\":\"status\""), first)
        try cluster.startWorker(name: "w1", ["--exec", Self.progressExec])
        var messages: [[String: Any]] = []
        while let m = try ws.next() {
            messages.append(try XCTUnwrap(JSONSerialization.jsonObject(with: Data(m.utf8)) as? [String: Any]))
        }
        let names = messages.compactMap { $0["event"] as? String }
        XCTAssertEqual(messages.filter { $0["event"] as? String == "progress" }.compactMap { $0["percent"] as? Int }, [25, 75], "\(names)")
        XCTAssertEqual(names.last, "result")
        XCTAssertEqual(messages.last?["result"] as? String, #"{"n":1}"#, "a JSON payload reaches the handler as its JSON text")

        // Without the token: one error message, then the server closes (1008);
        // the library cannot refuse a handshake with 401 (spec note in openapi.yaml).
        let refused = try gw.http.webSocket("/ws/\(id)")
        defer { refused.close() }
        XCTAssertEqual(refused.status, 101)
        let error = try XCTUnwrap(try refused.next())
        XCTAssertTrue(error.contains("\"error_type\":\"unauthorized\""), error)
        XCTAssertNil(try refused.next())
        XCTAssertEqual(refused.closeCode, 1008)
        // An unknown task: an error message naming it.
        let unknown = try gw.http.webSocket("/ws/0000000000000001?token=\(Self.token)")
        defer { unknown.close() }
        XCTAssertTrue(try XCTUnwrap(try unknown.next()).contains("\"error_type\":\"not_found\""))
    }

    func testCancelQueuedAndRunningTasks() throws {
        try cluster.startBroker()
        let gw = try cluster.startGateway(tokens: [Self.token])
        try cluster.waitForGatewayEvents(gw, token: Self.token)
        let queued = try XCTUnwrap(try gw.http.json("POST", "/api/tasks", token: Self.token, json: #"{"type":"t"}"#).json["task_id"] as? String)
        let c = try gw.http.json("DELETE", "/api/tasks/\(queued)", token: Self.token)
        XCTAssertEqual(c.status, 200, c.text)
        XCTAssertEqual(c.json["previous_state"] as? String, "queued")
        XCTAssertEqual(try gw.http.json("GET", "/api/tasks/\(queued)/status", token: Self.token).json["state"] as? String, "cancelled")
        XCTAssertEqual(try gw.http.json("DELETE", "/api/tasks/\(queued)", token: Self.token).status, 409)
        XCTAssertEqual(try gw.http.json("DELETE", "/api/tasks/0000000000000001", token: Self.token).status, 404)

        try cluster.startWorker(name: "w1", ["--exec", "echo '5 begun' >&3; sleep 30"], extra: ["--grace", "0.2"])
        let running = try XCTUnwrap(try gw.http.json("POST", "/api/tasks", token: Self.token, json: #"{"type":"t"}"#).json["task_id"] as? String)
        _ = try eventually("task to run") { () -> Bool? in
            try gw.http.json("GET", "/api/tasks/\(running)/status", token: Self.token).json["state"] as? String == "running" ? true : nil
        }
        let stream = try gw.http.events("/api/tasks/\(running)/stream?token=\(Self.token)")
        defer { stream.close() }
        XCTAssertEqual(try stream.next()?.json["state"] as? String, "running")
        let rc = try gw.http.json("DELETE", "/api/tasks/\(running)", token: Self.token)
        XCTAssertEqual(rc.json["previous_state"] as? String, "running")
        let last = try stream.rest().last
        XCTAssertEqual(last?.event, "error")
        XCTAssertEqual(last?.json["state"] as? String, "cancelled")
    }

    func testQueueFullIs503WithRetryAfter() throws {
        try cluster.startBroker(["--max-queue", "2"])
        let gw = try cluster.startGateway(tokens: [Self.token])
        for _ in 0..<2 {
            XCTAssertEqual(try gw.http.json("POST", "/api/tasks", token: Self.token, json: #"{"type":"t"}"#).status, 201)
        }
        let r = try gw.http.json("POST", "/summarize?priority=urgent", token: Self.token, json: #"{"url":"https://e.com"}"#)
        XCTAssertEqual(r.status, 503, r.text)
        XCTAssertEqual(r.json["error_type"] as? String, "queue_full")
        XCTAssertNotNil(r.headers["retry-after"])
    }

    func testUnauthorizedRequestsAre401() throws {
        try cluster.startBroker()
        let gw = try cluster.startGateway(tokens: [Self.token, "second-token"])
        let id = try XCTUnwrap(try gw.http.json("POST", "/api/tasks", token: "second-token", json: #"{"type":"t"}"#).json["task_id"] as? String)
        for (method, path) in [("POST", "/api/tasks"), ("POST", "/summarize"), ("GET", "/api/tasks/\(id)/status"),
                               ("DELETE", "/api/tasks/\(id)"), ("GET", "/api/tasks/\(id)/stream"), ("GET", "/api/queue/tasks")] {
            for token in [nil, "wrong"] {
                let r = try gw.http.json(method, path, token: token, json: method == "POST" ? #"{"type":"t"}"# : nil)
                XCTAssertEqual(r.status, 401, "\(method) \(path) token \(token ?? "none"): \(r.text)")
                XCTAssertEqual(r.json["error_type"] as? String, "unauthorized")
            }
        }
        XCTAssertEqual(try gw.http.json("GET", "/api/tasks/\(id)/status", token: Self.token).status, 200)
        XCTAssertEqual(try gw.http.json("GET", "/api/queue/stats").status, 200, "stats need no token")
    }

    func testBrokerDownIs503FastAndGatewayReconnects() throws {
        let broker = try cluster.startBroker()
        let gw = try cluster.startGateway()
        XCTAssertEqual(try gw.http.json("GET", "/healthz").status, 200)
        broker.kill9()
        // Once the connection is gone, answers are immediate 503s, not hangs.
        let r = try eventually("a fast 503") { () -> GatewayHTTPClient.Response? in
            let start = Date()
            let r = try gw.http.json("POST", "/api/tasks", json: #"{"type":"t"}"#)
            return r.status == 503 && Date().timeIntervalSince(start) < 1 ? r : nil
        }
        XCTAssertEqual(r.json["error_type"] as? String, "broker_unavailable")
        XCTAssertTrue((r.json["message"] as? String ?? "").contains("not reachable"), r.text)
        XCTAssertEqual(try gw.http.json("GET", "/healthz").status, 503)

        try cluster.startBroker(reuseEndpoints: true)
        _ = try eventually("the gateway to reconnect") { () -> Bool? in
            try gw.http.json("POST", "/api/tasks", json: #"{"type":"t"}"#).status == 201 ? true : nil
        }
        XCTAssertEqual(try gw.http.json("GET", "/healthz").status, 200)
    }

    func testLegacyUploadRoundTripsThroughAWorker() throws {
        try cluster.startBroker()
        try cluster.startWorker(name: "w1")
        let gw = try cluster.startGateway()
        let file: [UInt8] = Array("%PDF-1.7 binary:".utf8) + [0, 200, 13, 10]
        var body: [UInt8] = Array("--bnd\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.pdf\"\r\nContent-Type: application/pdf\r\n\r\n".utf8)
        body += file + Array("\r\n--bnd\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nReport\r\n--bnd--\r\n".utf8)
        let r = try gw.http.request("POST", "/analyze-pdf?priority=high", headers: ["Content-Type": "multipart/form-data; boundary=bnd"], body: body)
        XCTAssertEqual(r.status, 200, r.text)
        let id = try XCTUnwrap(r.json["task_id"] as? String)
        let status = try eventually("the upload to be processed") { () -> [String: Any]? in
            let s = try gw.http.json("GET", "/api/tasks/\(id)/status").json
            return s["state"] as? String == "succeeded" ? s : nil
        }
        let result = try XCTUnwrap(status["result"] as? String)
        let payload = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.utf8)) as? [String: Any])
        XCTAssertEqual(payload["filename"] as? String, "r.pdf")
        XCTAssertEqual(payload["title"] as? String, "Report")
        XCTAssertEqual((payload["content_base64"] as? String).flatMap { Data(base64Encoded: $0) }.map(Array.init), file)
        XCTAssertEqual(status["type"] as? String, "pdf")
        XCTAssertEqual(status["priority"] as? String, "HIGH")
    }

    func testMetricsAndHealthFromARunningSystem() throws {
        try cluster.startBroker()
        try cluster.startWorker(name: "w1")
        let gw = try cluster.startGateway()
        try cluster.waitForGatewayEvents(gw)
        for _ in 0..<3 { XCTAssertEqual(try gw.http.json("POST", "/api/tasks", json: #"{"type":"t","priority":"high"}"#).status, 201) }
        let text = try eventually("three successes in /metrics") { () -> String? in
            let t = try gw.http.request("GET", "/metrics").text
            return t.contains("conveyor_tasks_succeeded_total 3") && t.contains("conveyor_dispatch_latency_seconds_count 3") ? t : nil
        }
        for needle in ["conveyor_workers_connected 1.0", "conveyor_broker_up 1.0", #"conveyor_tasks_submitted_total{priority="high"} 3"#,
                       #"conveyor_queue_depth{priority="urgent"} 0.0"#, "conveyor_dispatch_latency_seconds_count 3",
                       #"conveyor_http_requests_total{method="POST",route="/api/tasks",status="201"} 3"#] {
            XCTAssertTrue(text.contains(needle), "missing \(needle):\n\(text)")
        }
        XCTAssertEqual(try gw.http.json("GET", "/healthz").json["status"] as? String, "ok")
    }
}
