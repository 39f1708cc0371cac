import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import Foundation
import XCTest
import ZeroMQ

/// Peers that are hostile or careless but speak the protocol correctly: the
/// broker must neither crash, nor stall, nor let one connection hurt another.
final class HostilePeerTests: ClusterTestCase {
    /// A raw worker connection: READY, then whatever the test sends.
    private func rawWorker(name: String, capacity: Int, types: [String] = []) throws -> ZMQSocket {
        let w = try cluster.context.socket(.dealer)
        try w.setLinger(ms: 0)
        try w.connect(cluster.workers)
        try w.send(WorkerMessage.ready(name: name, types: types, capacity: capacity).encode())
        return w
    }

    /// The next TASK on `w` within `timeout`, answering nothing else (heartbeats keep it alive).
    private func nextTask(_ w: ZMQSocket, timeout: TimeInterval = 10) throws -> (TaskID, UInt16)? {
        let deadline = Date().addingTimeInterval(timeout)
        var poller = ZMQPoller()
        poller.add(w)
        while Date() < deadline {
            if try poller.poll(timeoutMs: 100)[0], let m = try w.receive(dontWait: true),
               case .task(let id, let a, _, _, _, _) = try BrokerToWorker.decode(m) {
                return (id, a)
            }
            try w.send(WorkerMessage.heartbeat.encode())
        }
        return nil
    }

    /// Three READYs carrying a running worker's name (the recipe for
    /// `worker_lost`) get records of their own; the real worker's task is
    /// untouched and succeeds on its first attempt.
    func testReadyNameCollisionsDoNotTouchTheRunningWorker() throws {
        let broker = try cluster.startBroker()
        try cluster.startWorker(name: "w1", ["--builtin", "sleep:1500"])
        let client = try cluster.client()
        let id = try submit(client, payload: "mine")
        try cluster.waitForState(id, "running")
        var impostors: [ZMQSocket] = []
        for _ in 0..<3 { impostors.append(try rawWorker(name: "w1", capacity: 1, types: ["nothing-real"])) }
        defer { for s in impostors { s.close() } }
        try broker.waitForLog("w1#4")
        XCTAssertTrue(broker.stderr.contains("w1#2") && broker.stderr.contains("w1#3"), broker.stderr.suffix(2000).description)
        let during = try cluster.status(id)
        XCTAssertEqual(during["state"] as? String, "running")
        XCTAssertEqual(during["worker"] as? String, "w1")
        try cluster.waitForState(id, "succeeded")
        let st = try cluster.status(id)
        XCTAssertEqual(st["attempt"] as? Int, 1)
        XCTAssertEqual(st["result"] as? String, "mine")
        let stats = try cluster.stats()
        XCTAssertEqual(stats["tasks_reassigned"] as? Int, 0)
        XCTAssertEqual(stats["total_failed"] as? Int, 0)
    }

    /// A READY asking for 1024 slots gets 64 (logged); it cannot hold more.
    func testCapacity1024IsCappedAt64() throws {
        let broker = try cluster.startBroker(["--max-running", "1000", "--max-queue", "1000"])
        let greedy = try rawWorker(name: "greedy", capacity: 1024)
        defer { greedy.close() }
        try broker.waitForLog("capped")
        XCTAssertTrue(broker.stderr.contains("asked=1024") || broker.stderr.contains("1024"), broker.stderr.suffix(2000).description)
        let client = try cluster.client()
        for i in 0..<100 { _ = try submit(client, payload: "\(i)") }
        var got = 0
        while got < 64, try nextTask(greedy) != nil { got += 1 }
        XCTAssertEqual(got, 64)
        // Steady state: 64 running, the rest queued, while the worker stays alive.
        _ = try eventually("64 running and 36 queued") { () -> Bool? in
            try greedy.send(WorkerMessage.heartbeat.encode())
            let s = try cluster.stats()
            return (s["current_processing"] as? Int) == 64 && (s["queue_size"] as? Int) == 36 ? true : nil
        }
        XCTAssertNil(try nextTask(greedy, timeout: 0.5), "a 65th task was dispatched")
    }

    /// A worker that RETURNs the same task again and again: the broker stays
    /// up, the task dead-letters `returned_too_often` at the bound, and a
    /// restart on the same journal — also one whose row holds a spent attempt
    /// counter, as the crash left it — serves on.
    func testReturnStormDeadLettersAndARestartDoesNotCrashLoop() throws {
        let broker = try cluster.startDurableBroker(durability: "batch")
        let storm = try rawWorker(name: "returner", capacity: 1)
        let client = try cluster.client()
        let id = try submit(client, payload: "hot potato")
        var returns = 0
        var lastAttempt: UInt16 = 0
        while let (tid, a) = try nextTask(storm, timeout: 2) {
            XCTAssertEqual(tid, id)
            XCTAssertGreaterThan(a, lastAttempt)
            lastAttempt = a
            try storm.send(WorkerMessage.returned(id: tid, attempt: a).encode())
            returns += 1
            if returns > 200 { break }
        }
        try cluster.waitForState(id, "failed")
        XCTAssertEqual(returns, 101, "100 RETURNs requeue, the 101st dead-letters")
        let st = try cluster.status(id)
        XCTAssertEqual(st["error"] as? String, "returned_too_often")
        // More RETURNs of a finished task are stale, nothing else.
        for _ in 0..<50 { try storm.send(WorkerMessage.returned(id: id, attempt: lastAttempt).encode()) }
        _ = try eventually("stale RETURNs counted") { (try cluster.stats()["stale_results"] as? Int ?? 0) >= 50 ? true : nil }
        let stats = try cluster.stats()
        XCTAssertEqual(stats["tasks_returned_too_often"] as? Int, 1)
        XCTAssertEqual(stats["is_running"] as? Bool, true)
        XCTAssertTrue(broker.stderr.contains("returned too often") && broker.stderr.contains("returner"), broker.stderr.suffix(2000).description)
        storm.close()
        let dead = try XCTUnwrap(client.call { .dead(requestID: $0, action: .list(limit: 10)) })
        guard case .dead(_, let json) = dead else { return XCTFail("\(dead)") }
        XCTAssertTrue(String(decoding: json, as: UTF8.self).contains(id.description))
        client.close()

        broker.stop()
        XCTAssertEqual(broker.waitForExit(), 0)
        // The poisoned journal: the task queued again with attempt 65535.
        let poisoned = try poison(id)
        let second = try cluster.startDurableBroker(durability: "batch", restart: true)
        let again = try rawWorker(name: "returner", capacity: 1)
        defer { again.close() }
        if poisoned {
            try cluster.waitForState(id, "failed")
            XCTAssertEqual(try cluster.status(id)["error"] as? String, "attempts_exhausted")
        } else {
            XCTAssertEqual(try cluster.status(id)["error"] as? String, "returned_too_often")
        }
        // A task submitted now still runs: the broker serves on.
        let fresh = try submit(try cluster.client(), payload: "after")
        let (tid, a) = try XCTUnwrap(try nextTask(again))
        XCTAssertEqual(tid, fresh)
        try again.send(WorkerMessage.done(id: tid, attempt: a, result: Array("ok".utf8)).encode())
        try cluster.waitForState(fresh, "succeeded")
        XCTAssertTrue(second.isRunning)
    }

    /// Rewrites the task's row as queued with attempt 65535 using the sqlite3
    /// command line (false, and the restart is tested on the plain journal, where it is missing).
    private func poison(_ id: TaskID) throws -> Bool {
        guard let sqlite = ["/usr/bin/sqlite3", "/usr/local/bin/sqlite3"].first(where: FileManager.default.isExecutableFile) else {
            print("sqlite3 not installed: the restart is checked on the dead-lettered journal only")
            return false
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: sqlite)
        p.arguments = [cluster.journalPath, "UPDATE tasks SET state='queued', attempt=65535, finished_at=NULL, dead=0 WHERE id=\(Int64(bitPattern: id.raw));"]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        return p.terminationStatus == 0
    }

    /// 100,000 distinct task types submitted and cancelled leave nothing
    /// behind: no lane per type, no memory kept, dispatch going on (the rates
    /// before and after are printed; the benchmark compares them).
    func testHundredThousandJunkTypesDoNotSlowDispatch() throws {
        let broker = try cluster.startBroker(["--max-queue", "100000", "--max-running", "1000", "--result-ttl", "1", "--log-level", "warning"])
        try cluster.startWorker(name: "fast-1", ["--builtin", "noop"], extra: ["--concurrency", "16", "--types", "real"])
        try cluster.startWorker(name: "fast-2", ["--builtin", "noop"], extra: ["--concurrency", "16", "--types", "real"])
        let client = try cluster.client()
        defer { client.close() }
        let freshRate = try throughput(client, tasks: 4000)
        let rssBefore = rssKB(broker.pid)

        var sent = 0, pending = 0, cancelled = 0, rejected = 0
        let started = Date()
        while sent < 100_000 || pending > 0 {
            XCTAssertLessThan(Date().timeIntervalSince(started), 60, "junk phase too slow")
            if Date().timeIntervalSince(started) > 60 { return }
            while sent < 100_000 && pending < 1000 {
                try client.send(.submit(requestID: [], spec: TaskSpec(type: "junk\(sent)", priority: Priority(rawValue: UInt8(sent % 4)) ?? .normal)))
                sent += 1
                pending += 1
            }
            guard let r = try client.receive(timeoutMs: 1000) else { continue }
            switch r {
            case .accepted(_, let id, _, _): try client.send(.cancel(requestID: [], id: id))
            case .cancelled: pending -= 1; cancelled += 1
            case .rejected: pending -= 1; rejected += 1
            case .error: pending -= 1
            default: break
            }
        }
        XCTAssertEqual(cancelled, 100_000, "rejected \(rejected)")
        let stats = try cluster.stats()
        XCTAssertEqual((stats["types"] as? [String: Any])?.count ?? -1, 0, "no lane is left for a cancelled type")
        let afterRate = try throughput(client, tasks: 4000)
        let rssAfter = rssKB(broker.pid)
        print("junk types: fresh \(Int(freshRate)) tasks/s, after 100,000 types \(Int(afterRate)) tasks/s; RSS \(rssBefore / 1024) -> \(rssAfter / 1024) MiB")
        // Speed is the benchmark's (`conveyor bench --junk-types 100000`, README): a rate
        // compared here flaked on a loaded 2-core machine. What must hold is structural: no
        // lane left for a cancelled type (above), memory back near where it was (below), and
        // dispatch of the real type going on (the 4,000 tasks above all finished).
        XCTAssertLessThan(rssAfter - rssBefore, 96 * 1024, "broker RSS grew \(rssBefore) -> \(rssAfter) KiB")
    }

    /// Pipelined no-op tasks of the one real type; returns tasks per second.
    private func throughput(_ c: BrokerClient, tasks: Int) throws -> Double {
        // The FINISHED of a cancelled junk task may still be on its way: drain to a PONG first.
        let rid = c.nextRequestID()
        try c.send(.ping(requestID: rid))
        let drainUntil = Date().addingTimeInterval(10)
        while Date() < drainUntil { if case .pong(let r)? = try c.receive(timeoutMs: 1000), r == rid { break } }
        var submitted = 0, finished = 0
        let start = Date()
        while finished < tasks {
            guard Date().timeIntervalSince(start) < 60 else { XCTFail("throughput phase too slow: \(finished)"); return 0 }
            while submitted < tasks && submitted - finished < 500 {
                try c.send(.submit(requestID: [], spec: TaskSpec(type: "real")))
                submitted += 1
            }
            if case .finished? = try c.receive(timeoutMs: 1000) { finished += 1 }
        }
        return Double(tasks) / Date().timeIntervalSince(start)
    }

    private func rssKB(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }
}
