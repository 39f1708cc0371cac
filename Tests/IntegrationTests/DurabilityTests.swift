import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import Foundation
import XCTest

/// Issue 4 with real processes: a journaled broker (`--durability fsync`) is
/// killed with SIGKILL or stopped with SIGTERM and restarted on the same
/// endpoints and data directory; what it acknowledged is still there.
final class DurabilityTests: ClusterTestCase {
    /// Submitted while no worker is connected, the broker killed and restarted,
    /// then one single-slot worker: completion order is priority, then FIFO.
    func testRestartPreservesOrder() throws {
        let args = ["--max-running", "1"]
        let broker = try cluster.startDurableBroker(args)
        let client = try cluster.client()
        defer { client.close() }
        let plan: [Priority] = [.low, .normal, .urgent, .high, .low, .urgent, .normal, .high, .normal, .low, .urgent, .high]
        var ids: [(id: TaskID, priority: Priority, index: Int)] = []
        for (i, p) in plan.enumerated() {
            ids.append((try submit(client, type: i % 3 == 0 ? "a" : "b", priority: p, payload: "\(i)"), p, i))
        }
        let expected = ids.sorted { ($0.priority, -$0.index) > ($1.priority, -$1.index) }.map(\.id)

        broker.kill9()
        try cluster.startDurableBroker(args, restart: true)
        let log = EventLog(try cluster.subscribe(["task.succeeded"]))
        try cluster.startWorker(name: "solo")
        _ = try eventually("all \(plan.count) to succeed") { try log.drain().isEmpty && log.events.count == plan.count ? true : nil }
        XCTAssertEqual(log.events.map(\.taskID), expected)
    }

    /// Results, binary ones included, answer STATUS after a kill -9.
    func testResultsSurviveRestart() throws {
        let broker = try cluster.startDurableBroker()
        try cluster.startWorker(name: "echo")
        let client = try cluster.client()
        defer { client.close() }
        let text = try submit(client, payload: "hello, journal")
        let binary = try submit(client) { $0.payload = [0xff, 0x00, 0xfe, 0x80] }
        try cluster.waitForState(text, "succeeded")
        try cluster.waitForState(binary, "succeeded")
        let before = try cluster.status(text)

        broker.kill9()
        try cluster.startDurableBroker(restart: true)
        let after = try cluster.status(text)
        XCTAssertEqual(after["state"] as? String, "succeeded")
        XCTAssertEqual(after["result"] as? String, "hello, journal")
        XCTAssertEqual(after["finished_at"] as? String, before["finished_at"] as? String)
        XCTAssertEqual(after["attempt"] as? Int, 1)
        let bin = try cluster.status(binary)
        XCTAssertEqual(bin["result_base64"] as? String, Data([0xff, 0x00, 0xfe, 0x80]).base64EncodedString())
    }

    /// max_attempts 3 with backoff_ms 2000: each retry waits
    /// [base·2^(k-1)/2, base·2^(k-1)] (equal jitter), and a broker killed
    /// during a backoff comes back with the same run_at and honours it.
    func testRetriesFollowTheBackoffAcrossRestart() throws {
        let broker = try cluster.startDurableBroker()
        var log = EventLog(try cluster.subscribe(["task."]))
        // Reads its payload first: a command that exits without reading stdin
        // can take the worker down with SIGPIPE (a worker bug, reported).
        let flaky = "p=$(cat); if [ \"$TASK_ATTEMPT\" -lt 3 ]; then echo \"attempt $TASK_ATTEMPT failed\" >&2; exit 1; fi; printf %s \"$p\""
        let worker = try cluster.startWorker(name: "flaky", ["--exec", flaky])
        let client = try cluster.client()
        defer { client.close() }
        let id = try submit(client, payload: "third time lucky") {
            $0.maxAttempts = 3
            $0.backoffMs = 2000
            $0.backoffMaxMs = 60_000
        }
        let first = try log.waitFor("first retry") { $0.topic == "task.retrying" && $0.taskID == id }
        let runAt1 = try XCTUnwrap((first.json["run_at"] as? String).flatMap(EventLog.parseTime))
        let delay1 = runAt1.timeIntervalSince(try XCTUnwrap(first.ts))
        XCTAssert((0.95...2.01).contains(delay1), "first backoff \(delay1) s, expected 1-2 s")
        XCTAssertTrue((first.json["error"] as? String ?? "").contains("attempt 1 failed"))

        // Worker and broker die during the backoff.
        worker.kill9()
        broker.kill9()
        try cluster.startDurableBroker(restart: true)
        let st = try cluster.status(id)
        if st["state"] as? String == "delayed" {
            XCTAssertEqual(st["run_at"] as? String, first.json["run_at"] as? String, "run_at kept across the restart")
        } else {
            XCTAssertEqual(st["state"] as? String, "queued", "\(st)")
            XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(runAt1), 0, "only due once run_at passed")
        }
        XCTAssertEqual(st["attempt"] as? Int, 1)

        log = EventLog(try cluster.subscribe(["task."]))
        try cluster.startWorker(name: "flaky2", ["--exec", flaky])
        let started2 = try log.waitFor("attempt 2") { $0.topic == "task.started" && $0.taskID == id }
        XCTAssertEqual(started2.json["attempt"] as? Int, 2)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(started2.ts).timeIntervalSince(runAt1), -0.002, "dispatched before its run_at")
        let second = try log.waitFor("second retry") { $0.topic == "task.retrying" && $0.taskID == id }
        let runAt2 = try XCTUnwrap((second.json["run_at"] as? String).flatMap(EventLog.parseTime))
        let delay2 = runAt2.timeIntervalSince(try XCTUnwrap(second.ts))
        XCTAssert((1.95...4.01).contains(delay2), "second backoff \(delay2) s, expected 2-4 s")
        let started3 = try log.waitFor("attempt 3") { $0.topic == "task.started" && $0.taskID == id && ($0.json["attempt"] as? Int) == 3 }
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(started3.ts).timeIntervalSince(runAt2), -0.002)
        try cluster.waitForState(id, "succeeded")
        let done = try cluster.status(id)
        XCTAssertEqual(done["attempt"] as? Int, 3)
        XCTAssertEqual(done["result"] as? String, "third time lucky")
    }

    /// Dead letters survive a restart and round-trip through the CLI:
    /// listed, retried (with their payload), purged (for good).
    func testDeadLettersRoundTripThroughTheCLI() throws {
        var broker = try cluster.startDurableBroker()
        let failing = try cluster.startWorker(name: "failing", ["--exec", "cat >/dev/null; echo nope >&2; exit 3"])
        let client = try cluster.client()
        defer { client.close() }
        let alpha = try submit(client, payload: "alpha")
        let beta = try submit(client, payload: "beta")
        try cluster.waitForState(alpha, "failed")
        try cluster.waitForState(beta, "failed")
        failing.stop()

        broker.kill9()
        broker = try cluster.startDurableBroker(restart: true)
        let list = try cluster.cli(["dead", "list", "--broker", cluster.clients])
        XCTAssertEqual(list.status, 0, list.err)
        let listed = try JSONSerialization.jsonObject(with: Data(list.out.utf8)) as? [String: Any]
        XCTAssertEqual(listed?["count"] as? Int, 2, list.out)
        let deadIDs = (listed?["dead"] as? [[String: Any]])?.compactMap { $0["task_id"] as? String }
        XCTAssertEqual(deadIDs, [alpha.description, beta.description])
        XCTAssertTrue(list.out.contains("nope"), "the error is kept: \(list.out)")

        try cluster.startWorker(name: "echo")
        let retry = try cluster.cli(["dead", "retry", alpha.description, "--broker", cluster.clients])
        XCTAssertEqual(retry.status, 0, retry.err)
        try cluster.waitForState(alpha, "succeeded")
        XCTAssertEqual(try cluster.status(alpha)["result"] as? String, "alpha", "a retried dead letter runs with its payload")
        let purge = try cluster.cli(["dead", "purge", beta.description, "--broker", cluster.clients])
        XCTAssertEqual(purge.status, 0, purge.err)
        XCTAssertTrue(purge.out.contains("\"purged\":1"), purge.out)

        broker.kill9()
        try cluster.startDurableBroker(restart: true)
        XCTAssertEqual(try cluster.statuses([beta])[beta]?["state"] as? String, "not_found", "a purge is durable")
        XCTAssertEqual(try cluster.status(alpha)["state"] as? String, "succeeded")
        let again = try cluster.cli(["dead", "list", "--broker", cluster.clients])
        XCTAssertTrue(again.out.contains("\"count\":0"), again.out)
    }

    /// The same idempotency key returns the same task id across restarts,
    /// while the task is queued and after it finished.
    func testIdempotentResubmissionReturnsTheSameIDAcrossRestart() throws {
        var broker = try cluster.startDurableBroker()
        let submitArgs = ["submit", "--type", "t", "--payload", "once", "--idempotency-key", "order-42"]
        let first = try cluster.cli(submitArgs + ["--broker", cluster.clients])
        XCTAssertEqual(first.status, 0, first.err)
        let id = first.out.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertNotNil(TaskID(id), first.out)

        broker.kill9()
        broker = try cluster.startDurableBroker(restart: true)
        let second = try cluster.cli(submitArgs + ["--broker", cluster.clients])
        XCTAssertEqual(second.out.trimmingCharacters(in: .whitespacesAndNewlines), id, "same key, same task while queued")

        try cluster.startWorker(name: "echo")
        try cluster.waitForState(try XCTUnwrap(TaskID(id)), "succeeded")
        broker.kill9()
        try cluster.startDurableBroker(restart: true)
        let third = try cluster.cli(submitArgs + ["--broker", cluster.clients])
        XCTAssertEqual(third.out.trimmingCharacters(in: .whitespacesAndNewlines), id, "same key, same task once finished")
        let stats = try cluster.stats()
        XCTAssertEqual(stats["queue_size"] as? Int, 0)
        XCTAssertEqual(stats["current_processing"] as? Int, 0, "the task did not run again")
    }

    /// Beyond what memory keeps (`--max-finished 1`), the journal still answers:
    /// an old idempotency key is a duplicate (same id, its real state, nothing
    /// runs again), and an old dead letter is listed and can be retried.
    func testKeysAndDeadLettersOlderThanMemoryAreReadFromTheJournal() throws {
        let args = ["--max-finished", "1"]
        var broker = try cluster.startDurableBroker(args)
        let echo = try cluster.startWorker(name: "echo")
        let client = try cluster.client()
        defer { client.close() }
        let keyed = try cluster.cli(["submit", "--type", "t", "--payload", "old", "--idempotency-key", "invoice-7", "--broker", cluster.clients])
        XCTAssertEqual(keyed.status, 0, keyed.err)
        let old = try XCTUnwrap(TaskID(keyed.out.trimmingCharacters(in: .whitespacesAndNewlines)))
        try cluster.waitForState(old, "succeeded")
        echo.stop()
        let failing = try cluster.startWorker(name: "failing", ["--exec", "cat >/dev/null; echo nope >&2; exit 3"])
        let dead = try submit(client, payload: "doomed")
        try cluster.waitForState(dead, "failed")
        failing.stop()
        try cluster.startWorker(name: "echo-2")
        for i in 0..<3 { try cluster.waitForState(try submit(client, payload: "newer \(i)"), "succeeded") }

        broker.kill9()
        broker = try cluster.startDurableBroker(args, restart: true)
        let again = try cluster.cli(["submit", "--type", "t", "--payload", "old", "--idempotency-key", "invoice-7", "--broker", cluster.clients])
        XCTAssertEqual(again.out.trimmingCharacters(in: .whitespacesAndNewlines), old.description, "found in the journal: a duplicate")
        XCTAssertEqual(try cluster.status(old)["state"] as? String, "succeeded")
        XCTAssertEqual(try cluster.stats()["queue_size"] as? Int, 0, "nothing was enqueued again")
        let list = try cluster.cli(["dead", "list", "--broker", cluster.clients])
        XCTAssertTrue(list.out.contains(dead.description), "a dead letter only the journal holds is listed: \(list.out)")
        let retry = try cluster.cli(["dead", "retry", dead.description, "--broker", cluster.clients])
        XCTAssertEqual(retry.status, 0, retry.err)
        try cluster.waitForState(dead, "succeeded")
    }

    /// SIGTERM while submissions pour in: the broker exits 0, and every task
    /// it acknowledged is there after the restart and completes.
    func testSigtermToTheBrokerLosesNothing() throws {
        let args = ["--max-running", "4", "--max-queue", "10000"]
        let broker = try cluster.startDurableBroker(args)
        try cluster.startWorker(name: "w", ["--builtin", "sleep:20"], extra: ["--concurrency", "4"])
        let client = try cluster.client()
        defer { client.close() }
        var keyOf: [[UInt8]: Int] = [:]
        for i in 0..<400 {
            let rid = client.nextRequestID()
            keyOf[rid] = i
            try client.send(.submit(requestID: rid, spec: TaskSpec(type: "t", priority: Priority(rawValue: UInt8(i % 4)) ?? .low, payload: Array("p\(i)".utf8))))
        }
        var acked: [TaskID: Int] = [:]
        var stopped = false
        while let reply = try client.receive(timeoutMs: stopped ? 1500 : 10_000) {
            if case .accepted(let rid, let id, _, _) = reply, let i = keyOf[rid] { acked[id] = i }
            if acked.count == 150 && !stopped {
                broker.signal(SIGTERM)
                stopped = true
            }
        }
        XCTAssertEqual(broker.waitForExit(), 0, "a SIGTERMed broker exits cleanly")
        XCTAssertGreaterThanOrEqual(acked.count, 150)
        try cluster.startDurableBroker(args, restart: true)
        let finals = try cluster.waitUntilAllFinal(Array(acked.keys))
        for (id, i) in acked {
            XCTAssertEqual(finals[id]?["state"] as? String, "succeeded", "task \(id)")
            XCTAssertEqual(finals[id]?["result"] as? String, "p\(i)", "task \(id)")
        }
    }

    /// SIGTERM to a worker: its running task finishes within --grace and is
    /// not run again; a task longer than the grace is returned and runs elsewhere.
    func testSigtermToAWorkerLetsItsTaskFinishWithinGrace() throws {
        try cluster.startDurableBroker()
        let patient = try cluster.startWorker(name: "patient", ["--builtin", "sleep:1500"], extra: ["--grace", "10"])
        let client = try cluster.client()
        defer { client.close() }
        let id = try submit(client, payload: "finish me")
        try cluster.waitForState(id, "running")
        patient.signal(SIGTERM)
        XCTAssertEqual(patient.waitForExit(timeout: 10), 0)
        // Its DONE left before its DISCONNECT; the broker may read them just after we ask.
        try cluster.waitForState(id, "succeeded", timeout: 10)
        let st = try cluster.status(id)
        XCTAssertEqual(st["state"] as? String, "succeeded", "\(st)")
        XCTAssertEqual(st["attempt"] as? Int, 1, "finished by the draining worker, not run again")
        XCTAssertEqual(st["result"] as? String, "finish me")

        let hasty = try cluster.startWorker(name: "hasty", ["--builtin", "sleep:4000"], extra: ["--grace", "0.3"])
        let long = try submit(client, payload: "too long")
        try cluster.waitForState(long, "running")
        let signalled = Date()
        hasty.signal(SIGTERM)
        XCTAssertEqual(hasty.waitForExit(timeout: 10), 0)
        XCTAssertLessThan(Date().timeIntervalSince(signalled), 3, "the worker leaves after its grace, not after the task")
        try cluster.waitForState(long, "queued")
        try cluster.startWorker(name: "backup", ["--builtin", "echo"])
        try cluster.waitForState(long, "succeeded")
        XCTAssertEqual(try cluster.status(long)["attempt"] as? Int, 2)
    }

    /// A corrupt journal or an unusable data directory stops the broker with
    /// exit status 1 and a message naming the file; it never starts empty.
    func testCorruptOrUnwritableJournalStopsTheBroker() throws {
        try FileManager.default.createDirectory(atPath: cluster.dataDirectory, withIntermediateDirectories: true)
        try Data((0..<50_000).map { UInt8(truncatingIfNeeded: $0 &* 7919) }).write(to: URL(fileURLWithPath: cluster.journalPath))
        let corrupt = try cluster.launch("broker-corrupt", brokerArguments(dataDir: cluster.dataDirectory))
        XCTAssertEqual(corrupt.waitForExit(), 1)
        XCTAssertTrue(corrupt.stderr.contains(cluster.journalPath), corrupt.stderr)
        XCTAssertTrue(corrupt.stderr.contains("corrupt"), corrupt.stderr)
        XCTAssertFalse(corrupt.stdout.contains("ready"))

        let blocker = cluster.directory.appendingPathComponent("not-a-directory")
        try Data("x".utf8).write(to: blocker)
        let unwritable = try cluster.launch("broker-unwritable", brokerArguments(dataDir: blocker.appendingPathComponent("data").path))
        XCTAssertEqual(unwritable.waitForExit(), 1)
        XCTAssertTrue(unwritable.stderr.contains(blocker.appendingPathComponent("data").path), unwritable.stderr)
        XCTAssertFalse(unwritable.stdout.contains("ready"))
    }

    private func brokerArguments(dataDir: String) -> [String] {
        ["broker", "--clients", "tcp://127.0.0.1:*", "--workers", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
         "--durability", "fsync", "--data-dir", dataDir]
    }
}
