import ConveyorClient
import ConveyorCore
import Foundation
import XCTest
import ZeroMQ

/// Dispatch policies with real broker and worker processes: what the workers
/// see (their own clocks, from `--exec` commands logging to a file) is what
/// the limits promise.
final class PolicyIntegrationTests: ClusterTestCase {
    /// Nanosecond timestamps a worker command appended to `file`, one per line, with a tag.
    private func log(_ file: String) throws -> [(tag: String, ns: Int64)] {
        let text = (try? String(contentsOfFile: cluster.directory.appendingPathComponent(file).path, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let p = line.split(separator: " ")
            guard p.count == 2, let ns = Int64(p[1]) else { return nil }
            return (String(p[0]), ns)
        }
    }

    private func submitAll(_ n: Int, type: String, client: BrokerClient) throws -> [TaskID] {
        try (0..<n).map { _ in try submit(client, type: type) }
    }

    func testTypeConcurrencyIsNeverExceededWithMoreCapacityThanTheLimit() throws {
        try cluster.startBroker(["--max-running", "20", "--type-concurrency", "llm=2"])
        let file = cluster.directory.appendingPathComponent("spans").path
        let exec = "echo start $(date +%s%N) >> \(file); sleep 0.25; echo end $(date +%s%N) >> \(file)"
        try cluster.startWorker(name: "a", ["--exec", exec], extra: ["--concurrency", "4"])
        try cluster.startWorker(name: "b", ["--exec", exec], extra: ["--concurrency", "4"])
        let c = try cluster.client()
        let ids = try submitAll(10, type: "llm", client: c)
        for id in ids { try cluster.waitForState(id, "succeeded") }
        var running = 0, peak = 0
        for e in try log("spans").sorted(by: { $0.ns < $1.ns || ($0.ns == $1.ns && $0.tag == "end") }) {
            running += e.tag == "start" ? 1 : -1
            peak = max(peak, running)
        }
        XCTAssertEqual(peak, 2, "8 slots, limit 2: exactly 2 at a time")
        let types = try XCTUnwrap(cluster.stats()["types"] as? [String: Any])
        let llm = try XCTUnwrap(types["llm"] as? [String: Any])
        XCTAssertEqual(llm["concurrency_limit"] as? Int, 2)
    }

    func testARateLimitOfTwoPerSecondSpacesTwelveTasks() throws {
        try cluster.startBroker(["--max-running", "20", "--rate-limit", "llm=2/s"])
        let file = cluster.directory.appendingPathComponent("starts").path
        try cluster.startWorker(name: "a", ["--exec", "echo start $(date +%s%N) >> \(file)"], extra: ["--concurrency", "8"])
        let c = try cluster.client()
        let ids = try submitAll(12, type: "llm", client: c)
        _ = try eventually("the rate window to be visible in stats") { () -> Bool? in
            let llm = (try cluster.stats()["types"] as? [String: Any])?["llm"] as? [String: Any]
            let rate = llm?["rate_limit"] as? [String: Any]
            return (rate?["limit"] as? Int) == 2 && (rate?["in_window"] as? Int) == 2 ? true : nil
        }
        let queued = try cluster.status(ids[11])
        XCTAssertEqual(queued["waiting_for"] as? String, "rate_limit")
        for id in ids { try cluster.waitForState(id, "succeeded") }
        let starts = try log("starts").map(\.ns).sorted()
        XCTAssertEqual(starts.count, 12)
        // As the workers saw it: no 3 starts within a second (50 ms for transport jitter).
        for i in 0..<(starts.count - 2) {
            XCTAssertGreaterThanOrEqual(starts[i + 2] - starts[i], 950_000_000, "starts \(i)...\(i + 2) within a second")
        }
        XCTAssertGreaterThanOrEqual(starts[11] - starts[0], 4_900_000_000, "12 tasks at 2/s take 5 s")
    }

    /// The 429 path: `--exec` exits 75 with `retry-after 2`; the task goes back
    /// without using its only attempt, the type is held 2 s, and it succeeds.
    func testExitStatus75HoldsTheTypeAndTheTaskSucceedsOnItsNextTry() throws {
        try cluster.startBroker(["--max-running", "4"])
        let sub = try cluster.subscribe(["type.", "task.rate_limited"])
        defer { sub.close() }
        let dir = cluster.directory.path
        let exec = """
            echo start $(date +%s%N) >> \(dir)/starts
            if [ ! -e \(dir)/once-$TASK_ID ]; then touch \(dir)/once-$TASK_ID; echo "retry-after 2" >&3; exit 75; fi
            echo ok
            """
        try cluster.startWorker(name: "a", ["--exec", exec])
        let c = try cluster.client()
        let id = try submit(c, type: "llm") { $0.maxAttempts = 1 }
        var topics: [String] = []
        _ = try eventually(timeout: 20, "type.held and type.released events (got \(topics))") { () -> Bool? in
            while let m = try sub.receive(dontWait: true) {
                let t = String(decoding: m[0], as: UTF8.self)
                if t != "stats" { topics.append(t) }
                if t == "type.held" {
                    let held = try JSONSerialization.jsonObject(with: Data(m[1])) as? [String: Any]
                    XCTAssertEqual(held?["type"] as? String, "llm")
                    XCTAssertNotNil(held?["held_until"] as? String)
                    // While held: stats and STATUS say so.
                    let llm = (try cluster.stats()["types"] as? [String: Any])?["llm"] as? [String: Any]
                    XCTAssertNotNil(llm?["held_until"] as? String)
                    XCTAssertEqual(try cluster.status(id)["waiting_for"] as? String, "held")
                }
            }
            return topics.contains("type.released") ? true : nil
        }
        XCTAssertEqual(Array(topics.prefix(2)), ["task.rate_limited", "type.held"])
        try cluster.waitForState(id, "succeeded")
        let status = try cluster.status(id)
        XCTAssertEqual(status["result"] as? String, "ok\n")
        XCTAssertEqual(status["attempt"] as? Int, 2, "two dispatches")
        let starts = try log("starts").map(\.ns).sorted()
        XCTAssertEqual(starts.count, 2)
        XCTAssertGreaterThanOrEqual(starts[1] - starts[0], 1_950_000_000, "held for the 2 s the worker asked for")
        XCTAssertEqual(try cluster.stats()["tasks_rate_limited"] as? Int, 1)
    }

    func testPauseAndResumeOverTheCLIAndHTTP() throws {
        try cluster.startBroker(["--max-running", "4"])
        try cluster.startWorker(name: "a", ["--builtin", "echo"], extra: ["--concurrency", "2"])
        let paused = try cluster.cli(["pause", "--broker", cluster.clients, "pdf"])
        XCTAssertEqual(paused.status, 0, paused.err)
        XCTAssertTrue(paused.out.contains(#""paused":true"#), paused.out)
        XCTAssertEqual(try cluster.cli(["pause", "--broker", cluster.clients, "not a type"]).status, 2)

        let c = try cluster.client()
        let pdf = try submit(c, type: "pdf", priority: .urgent, payload: "p")
        let doc = try submit(c, type: "doc", priority: .low, payload: "d")
        // The later, lower task of another type runs; the paused one waits.
        try cluster.waitForState(doc, "succeeded")
        var s = try cluster.status(pdf)
        XCTAssertEqual(s["state"] as? String, "queued")
        XCTAssertEqual(s["waiting_for"] as? String, "paused")
        XCTAssertEqual(((try cluster.stats()["types"] as? [String: Any])?["pdf"] as? [String: Any])?["paused"] as? Bool, true)
        let resumed = try cluster.cli(["resume", "--broker", cluster.clients, "pdf"])
        XCTAssertTrue(resumed.out.contains(#""paused":false"#), resumed.out)
        try cluster.waitForState(pdf, "succeeded")

        // The same over HTTP, with the gateway's auth.
        let gw = try cluster.startGateway(tokens: ["tok"])
        XCTAssertEqual(try gw.http.json("POST", "/api/types/pdf/pause").status, 401)
        let r = try gw.http.json("POST", "/api/types/pdf/pause", token: "tok")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.json["paused"] as? Bool, true)
        XCTAssertEqual(try gw.http.json("POST", "/api/types/bad%20type/pause", token: "tok").status, 400)
        let queued = try submit(c, type: "pdf", payload: "q")
        s = try cluster.status(queued)
        XCTAssertEqual(s["waiting_for"] as? String, "paused")
        XCTAssertEqual(try gw.http.json("POST", "/api/types/pdf/resume", token: "tok").json["paused"] as? Bool, false)
        try cluster.waitForState(queued, "succeeded")
    }
}
