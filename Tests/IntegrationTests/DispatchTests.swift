import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import Foundation
import XCTest

/// End-to-end behaviour of broker and workers as separate processes.
final class DispatchTests: ClusterTestCase {
    /// With one single-slot worker, tasks submitted while it was away finish
    /// in strict priority order, FIFO within each level.
    func testPrioritiesHonouredEndToEnd() throws {
        try cluster.startBroker(["--max-running", "1"])
        let client = try cluster.client()
        let plan: [Priority] = [.low, .normal, .urgent, .high, .low, .urgent, .normal, .high, .normal, .low, .urgent, .high]
        var ids: [(TaskID, Priority, Int)] = []
        for (i, p) in plan.enumerated() { ids.append((try submit(client, priority: p, payload: "\(i)"), p, i)) }
        let expected = ids.sorted { ($0.1.rawValue, -$0.2) > ($1.1.rawValue, -$1.2) }.map(\.0)

        try cluster.startWorker(name: "solo")
        var finished: [TaskID] = []
        while finished.count < plan.count {
            guard let n = try client.nextNotification(timeoutMs: 20_000) else { return XCTFail("no FINISHED after \(finished.count)") }
            if case .finished(let id, let state, _) = n {
                XCTAssertEqual(state, "succeeded")
                finished.append(id)
            }
        }
        XCTAssertEqual(finished, expected)
    }

    /// A worker killed with SIGKILL mid-task: the task is reassigned and
    /// completes on another worker, reported succeeded exactly once.
    func testKilledWorkerTaskCompletesElsewhere() throws {
        try cluster.startBroker()
        let victim = try cluster.startWorker(name: "victim", ["--builtin", "sleep:1500"])
        let sub = try cluster.subscribe(["task."])
        let client = try cluster.client()
        let id = try submit(client, payload: "survive")
        try cluster.waitForState(id, "running")
        XCTAssertEqual(try cluster.status(id)["worker"] as? String, "victim")
        try cluster.startWorker(name: "rescuer", ["--builtin", "sleep:100"])
        victim.kill9()

        try cluster.waitForState(id, "succeeded")
        let st = try cluster.status(id)
        XCTAssertEqual(st["result"] as? String, "survive")
        XCTAssertEqual(st["attempt"] as? Int, 2)
        // Count lifecycle events for this task until things are quiet.
        var counts: [String: Int] = [:]
        while let m = try sub.receive(dontWait: false), m.count == 2 {
            let topic = String(decoding: m[0], as: UTF8.self)
            if topic == "stats" {
                if (counts["task.succeeded"] ?? 0) >= 1 { break } else { continue }
            }
            if String(decoding: m[1], as: UTF8.self).contains(id.description) { counts[topic, default: 0] += 1 }
        }
        XCTAssertEqual(counts["task.succeeded"], 1)
        XCTAssertEqual(counts["task.reassigned"], 1)
        XCTAssertEqual(try cluster.stats()["tasks_reassigned"] as? Int, 1)
    }

    /// A task past its deadline ends timed_out, its whole process group is
    /// gone, and the worker goes on to the next task.
    func testTimeoutKillsProcessGroupAndWorkerMovesOn() throws {
        try cluster.startBroker()
        let pids = cluster.directory.appendingPathComponent("pids").path
        let cmd = "if [ \"$TASK_TYPE\" = slow ]; then echo $$ >> \(pids); sleep 60 & echo $! >> \(pids); wait; else cat; fi"
        try cluster.startWorker(name: "w", ["--exec", cmd, "--grace", "1"])
        let client = try cluster.client()
        let slow = try submit(client, type: "slow") { $0.timeoutMs = 700 }
        try cluster.waitForState(slow, "timed_out")
        let st = try cluster.status(slow)
        XCTAssertTrue((st["error"] as? String ?? "").contains("timed out"), "\(st)")

        let listed = try eventually("both pids written") { () -> [Int32]? in
            let p = ((try? String(contentsOfFile: pids, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
            return p.count == 2 ? p : nil
        }
        _ = try eventually("process group to be gone") { listed.allSatisfy { !processAlive($0) } ? true : nil }

        let next = try submit(client, type: "fast", payload: "after")
        try cluster.waitForState(next, "succeeded")
        XCTAssertEqual(try cluster.status(next)["result"] as? String, "after")
        XCTAssertEqual(try cluster.stats()["total_timeout"] as? Int, 1)
    }

    /// A command that exits without reading a large payload fails that task
    /// only: the worker (which gets EPIPE, not SIGPIPE) goes on.
    func testCommandIgnoringItsPayloadDoesNotKillTheWorker() throws {
        try cluster.startBroker()
        let worker = try cluster.startWorker(name: "w", ["--exec", "if [ \"$TASK_TYPE\" = rude ]; then exit 7; fi; cat"])
        let client = try cluster.client()
        let rude = try submit(client, type: "rude", payload: String(repeating: "x", count: 1 << 20))
        try cluster.waitForState(rude, "failed")
        XCTAssertTrue(worker.isRunning, "worker died: \(worker.stderr.suffix(500))")
        let next = try submit(client, type: "polite", payload: "still here")
        try cluster.waitForState(next, "succeeded")
        XCTAssertEqual(try cluster.status(next)["result"] as? String, "still here")
    }

    /// Cancelling a running task stops its process and frees the worker.
    func testCancelRunningTask() throws {
        try cluster.startBroker()
        try cluster.startWorker(name: "w", ["--exec", "if [ \"$TASK_TYPE\" = slow ]; then sleep 60; else cat; fi", "--grace", "1"])
        let client = try cluster.client()
        let slow = try submit(client, type: "slow")
        try cluster.waitForState(slow, "running")
        let r = try cluster.cli(["cancel", "--broker", cluster.clients, slow.description])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("was running"), r.out)
        try cluster.waitForState(slow, "cancelled")
        let again = try cluster.cli(["cancel", "--broker", cluster.clients, slow.description])
        XCTAssertEqual(again.status, 1)
        XCTAssertTrue(again.err.contains("not_cancellable"), again.err)
        let next = try submit(client, type: "fast", payload: "ok")
        try cluster.waitForState(next, "succeeded")
    }

    /// Beyond the bound, submissions are rejected `queue_full`, never dropped.
    func testQueueFullRejects() throws {
        try cluster.startBroker(["--max-queue", "2"])
        let client = try cluster.client()
        _ = try submit(client)
        _ = try submit(client)
        let reply = try client.call { .submit(requestID: $0, spec: TaskSpec(type: "t")) }
        guard case .rejected(_, let code, let message) = reply else { return XCTFail("expected REJECTED, got \(reply)") }
        XCTAssertEqual(code, "queue_full")
        XCTAssertTrue(message.contains("2"), message)
        let cli = try cluster.cli(["submit", "--broker", cluster.clients, "--type", "t"])
        XCTAssertEqual(cli.status, 1)
        XCTAssertTrue(cli.err.hasPrefix("rejected queue_full"), cli.err)
        let stats = try cluster.stats()
        XCTAssertEqual(stats["submissions_rejected"] as? Int, 2)
        XCTAssertEqual(stats["queue_size"] as? Int, 2)
    }

    /// A plain ZeroMQ SUB socket receives the stats snapshot with the fields web apps read.
    func testSubscriberReceivesStats() throws {
        try cluster.startBroker()
        let sub = try cluster.context.socket(.sub)
        try sub.connect(cluster.events)
        try sub.subscribe("stats")
        guard let m = try sub.receive(), m.count == 2 else { return XCTFail("no stats message") }
        XCTAssertEqual(String(decoding: m[0], as: UTF8.self), "stats")
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(m[1])) as? [String: Any])
        for key in ["total_processed", "total_success", "total_failed", "total_timeout", "current_processing", "queue_size",
                    "max_workers", "max_queue_size", "is_running", "queue_by_priority", "workers_connected", "workers_busy",
                    "tasks_reassigned", "submissions_rejected", "dispatch_latency_ms"] {
            XCTAssertNotNil(obj[key], "missing \(key)")
        }
        XCTAssertEqual(obj["is_running"] as? Bool, true)
    }

    /// A restarted broker gets its workers back without operator action.
    func testWorkersReRegisterAfterBrokerRestart() throws {
        let broker = try cluster.startBroker()
        try cluster.startWorker(name: "loyal")
        broker.kill9()
        try cluster.startBroker(reuseEndpoints: true)
        _ = try eventually(timeout: 30, "worker to come back") { (try cluster.stats()["workers_connected"] as? Int) == 1 ? true : nil }
        let id = try submit(try cluster.client(), payload: "again")
        try cluster.waitForState(id, "succeeded")
    }

    /// Garbage never crashes the broker: it is counted, answered where possible, and service goes on.
    func testMalformedInputIsCountedNotFatal() throws {
        try cluster.startBroker()
        let raw = try cluster.context.socket(.dealer)
        try raw.connect(cluster.clients)
        try raw.send([Array("CVYC01".utf8), Array("SUBMIT".utf8), Array("r1".utf8), Array("bad type!".utf8), [49], [], []])
        let reply = try XCTUnwrap(try raw.receive())
        XCTAssertEqual(reply.map { String(decoding: $0, as: UTF8.self) }.prefix(4), ["CVYC01", "REJECTED", "r1", "bad_request"])
        try raw.send([Array("CVYC99".utf8), Array("PING".utf8), Array("r2".utf8)])
        let v = try XCTUnwrap(try raw.receive())
        XCTAssertEqual(String(decoding: v[3], as: UTF8.self), "unsupported_version")
        try raw.send([[0xff, 0x00], [1, 2, 3]])
        let w = try cluster.context.socket(.dealer)
        try w.connect(cluster.workers)
        try w.send([Array("CVYW01".utf8), Array("DONE".utf8), Array("zz".utf8)])
        let told = try XCTUnwrap(try w.receive())
        XCTAssertEqual(told.map { String(decoding: $0, as: UTF8.self) }, ["CVYW01", "DISCONNECT"])
        let stats = try cluster.stats()
        XCTAssertEqual(stats["malformed_messages"] as? Int, 4)
        XCTAssertEqual(stats["is_running"] as? Bool, true)
    }

    /// A worker that goes silent (stopped, not dead) loses its task to another
    /// worker; when it wakes up, its late result is ignored as stale.
    func testSilentWorkerLosesTaskAndItsLateResultIsStale() throws {
        try cluster.startBroker()
        let sleeper = try cluster.startWorker(name: "sleeper", ["--builtin", "sleep:1000"])
        let client = try cluster.client()
        let id = try submit(client, payload: "once")
        try cluster.waitForState(id, "running")
        sleeper.signal(SIGSTOP)
        try cluster.startWorker(name: "awake", ["--builtin", "sleep:2000"])
        _ = try eventually("task to move to the awake worker") { (try cluster.status(id)["worker"] as? String) == "awake" ? true : nil }
        sleeper.signal(SIGCONT)
        try cluster.waitForState(id, "succeeded")
        XCTAssertEqual(try cluster.status(id)["attempt"] as? Int, 2)
        // The sleeper finishes its stale attempt, re-registers, and its DONE is counted, not applied.
        _ = try eventually("stale result to be counted") { (try cluster.stats()["stale_results"] as? Int ?? 0) >= 1 ? true : nil }
        XCTAssertEqual(try cluster.stats()["total_success"] as? Int, 1)
    }

    /// A late result from a superseded attempt is ignored and counted.
    func testStaleResultIgnored() throws {
        try cluster.startBroker()
        let w = try cluster.context.socket(.dealer)
        try w.connect(cluster.workers)
        try w.send(WorkerMessage.ready(name: "fake", types: [], capacity: 1).encode())
        let client = try cluster.client()
        let id = try submit(client, payload: "x")
        var attempt: UInt16 = 0
        _ = try eventually("TASK for the fake worker") { () -> Bool? in
            guard let m = try w.receive(dontWait: true) else { return nil }
            if case .task(let tid, let a, _, _, _, _) = try BrokerToWorker.decode(m), tid == id { attempt = a; return true }
            return nil
        }
        try w.send(WorkerMessage.done(id: id, attempt: attempt + 1, result: Array("wrong".utf8)).encode())
        try w.send(WorkerMessage.done(id: id, attempt: attempt, result: Array("right".utf8)).encode())
        try cluster.waitForState(id, "succeeded")
        XCTAssertEqual(try cluster.status(id)["result"] as? String, "right")
        XCTAssertEqual(try cluster.stats()["stale_results"] as? Int, 1)
    }
}

func processAlive(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    // A zombie (exited, not yet reaped by its new parent) is gone for our purposes.
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    guard let close = stat.lastIndex(of: ")") else { return false }
    return !stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
}
