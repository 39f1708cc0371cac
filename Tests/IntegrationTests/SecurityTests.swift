import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import ConveyorTransport
import Foundation
import XCTest
import ZeroMQ

/// CURVE end to end with real processes: who gets a connection, who sees
/// whose tasks, revocation without restart, and the loopback rule.
final class SecurityTests: ClusterTestCase {
    private func int(_ key: String) throws -> Int { try cluster.stats()[key] as? Int ?? -1 }

    func testStrangersGetNoTasksAndSubmitNothing() throws {
        let k = try cluster.secure([("c1", "clients"), ("stranger", nil)])
        try cluster.startBroker(["--curve-dir", k.dir, "--max-running", "10"])
        let c = try cluster.client(security: try k.security("c1"))
        let ids = try (0..<3).map { _ in try submit(c, type: "t", payload: "x") }
        // Three would-be workers: plaintext, an unknown key, a client's key.
        try cluster.startWorker(name: "plain", extra: ["--curve-key", "", "--curve-server-key", ""], waitForJoin: false)
        try cluster.startWorker(name: "stranger", extra: k.flags("stranger"), waitForJoin: false)
        try cluster.startWorker(name: "client-key", extra: k.flags("c1"), waitForJoin: false)
        _ = try eventually("two refused CURVE handshakes") { try int("auth_failures") >= 2 ? true : nil }
        XCTAssertEqual(try int("workers_connected"), 0)
        XCTAssertEqual(try int("current_processing"), 0, "nobody received a task")
        for id in ids { XCTAssertEqual(try cluster.status(id)["state"] as? String, "queued") }
        // Neither a plaintext client nor a worker's key can submit: no connection, no reply.
        let before = try int("tasks_submitted")
        for security in [SocketProfile.Security.none, try k.security("worker"), try k.security("stranger")] {
            let bad = try cluster.client(security: security)
            defer { bad.close() }
            XCTAssertThrowsError(try bad.call(timeoutMs: 700) { .submit(requestID: $0, spec: TaskSpec(type: "t")) })
        }
        XCTAssertEqual(try int("tasks_submitted"), before)
        // The real worker gets them all.
        try cluster.startWorker(name: "real")
        for id in ids { try cluster.waitForState(id, "succeeded") }
    }

    func testClientsSeeOnlyTheirOwnTasksAndAdminsSeeAll() throws {
        let k = try cluster.secure([("c1", "clients"), ("c2", "clients")])
        try cluster.startBroker(["--curve-dir", k.dir])
        let c1 = try cluster.client(security: try k.security("c1")), c2 = try cluster.client(security: try k.security("c2"))
        let mine = try submit(c1, type: "t", payload: "secret")
        let theirs = try submit(c2, type: "t")
        func code(_ r: ClientReply) -> String? { if case .error(_, let c, _) = r { c } else { nil } }
        XCTAssertEqual(code(try c2.call { .status(requestID: $0, id: mine) }), "not_found")
        XCTAssertEqual(code(try c2.call { .cancel(requestID: $0, id: mine) }), "not_found")
        guard case .tasks(_, let listing) = try c2.call({ .tasks(requestID: $0, limit: 100) }) else { return XCTFail("no TASKS") }
        let queued = (try JSONSerialization.jsonObject(with: Data(listing)) as? [String: Any])?["queued"] as? [[String: Any]] ?? []
        XCTAssertEqual(queued.compactMap { $0["task_id"] as? String }, [theirs.description], "c2 lists only its own task")
        XCTAssertEqual(queued.first?["queue_position"] as? Int, 1, "and its true position")
        // The same key may submit with the same idempotency key as another client without seeing its task.
        XCTAssertEqual(code(try c2.call { .dead(requestID: $0, action: .list(limit: 10)) }), "forbidden")
        XCTAssertEqual(code(try c2.call { .type(requestID: $0, action: .pause, type: "t") }), "forbidden")
        // The owner and an admin can.
        XCTAssertEqual(try cluster.status(mine)["owner"] as? String, "key:" + (try CurveCertificate.load(k.secret("c1")).publicKey))
        guard case .cancelled = try c1.call({ .cancel(requestID: $0, id: mine) }) else { return XCTFail("owner cannot cancel") }
        guard case .cancelled = try cluster.client().call({ .cancel(requestID: $0, id: theirs) }) else { return XCTFail("admin cannot cancel") }
    }

    func testRevokingAWorkerKeyMidTaskMovesItsTaskToAnotherWorker() throws {
        let k = try cluster.secure([("w1", "workers"), ("w2", "workers")])
        let broker = try cluster.startBroker(["--curve-dir", k.dir])
        let gate = cluster.directory.appendingPathComponent("go").path
        // w1 holds its task until the test says so (it never will).
        try cluster.startWorker(name: "w1", ["--exec", "while [ ! -e \(gate) ]; do sleep 0.05; done; echo from-w1"], extra: k.flags("w1"))
        let id = try submit(try cluster.client(), type: "t")
        try cluster.waitForState(id, "running")
        try cluster.startWorker(name: "w2", ["--exec", "echo from-w2"], extra: k.flags("w2"))
        try FileManager.default.removeItem(atPath: k.dir + "/workers/w1.key")
        kill(broker.pid, SIGHUP) // or wait for the 5 s re-read
        try cluster.waitForState(id, "succeeded")
        XCTAssertEqual(try cluster.status(id)["result"] as? String, "from-w2\n")
        XCTAssertEqual(try int("auth_revoked"), 1)
        XCTAssertEqual(try int("workers_connected"), 1)
        // w1 cannot come back: its reconnections are refused.
        _ = try eventually("w1's reconnection refused") { try int("auth_failures") >= 1 ? true : nil }
    }

    /// Priorities and a broker killed -9 with everything queued, over CURVE
    /// (reassignment over CURVE: the revocation test above).
    func testPrioritiesAndBrokerCrashWithCurve() throws {
        let k = try cluster.secure()
        let dataDir = cluster.directory.appendingPathComponent("journal").path
        let brokerArgs = ["--curve-dir", k.dir, "--durability", "fsync", "--data-dir", dataDir, "--max-running", "1"]
        var broker = try cluster.startBroker(brokerArgs)
        let c = try cluster.client()
        var ids: [TaskID] = []
        for p in [Priority.low, .normal, .high, .urgent, .low, .urgent] { ids.append(try submit(c, type: "t", priority: p, payload: p.name)) }
        // The broker dies with everything queued and comes back from its journal.
        broker.kill9()
        broker = try cluster.startBroker(brokerArgs, reuseEndpoints: true)
        let order = cluster.directory.appendingPathComponent("order").path
        try cluster.startWorker(name: "w1", ["--exec", "cat >> \(order); echo >> \(order)"])
        for id in ids { try cluster.waitForState(id, "succeeded") }
        let lines = try String(contentsOfFile: order, encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(lines, ["URGENT", "URGENT", "HIGH", "NORMAL", "LOW", "LOW"])
        _ = broker
    }

    func testPyzmqClientAndWorkerWithCurve() throws {
        let k = try cluster.secure([("pyc", "clients"), ("pyw", "workers")])
        try cluster.startBroker(["--curve-dir", k.dir])
        let examples = InteropTests.examples
        let py = try ManagedProcess(
            name: "pyworker", executable: "/usr/bin/env",
            arguments: ["python3", examples.appendingPathComponent("worker.py").path, "--broker", cluster.workers, "--name", "py",
                        "--heartbeat-ms", "200", "--liveness", "3"] + k.flags("pyw"),
            directory: cluster.directory)
        defer { py.stop() }
        _ = try eventually("python worker to join over CURVE") { try int("workers_connected") == 1 ? true : nil }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", examples.appendingPathComponent("client.py").path, "--broker", cluster.clients] + k.flags("pyc")
            + ["submit", "--type", "pdf", "--priority", "2", "--payload", "hello", "--wait"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(text.split(separator: "\n").last.map(String.init), "HELLO", text)
    }

    func testNonLoopbackEndpointsNeedCurveOrInsecure() throws {
        for (flag, ep) in [("--clients", "tcp://0.0.0.0:*"), ("--workers", "tcp://*:0"), ("--events", "tcp://0.0.0.0:*")] {
            var args = ["broker", "--durability", "none", "--clients", "tcp://127.0.0.1:*", "--workers", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*"]
            args[args.firstIndex(of: flag)! + 1] = ep
            let r = try cluster.cli(args, timeout: 20)
            XCTAssertEqual(r.status, 2, "\(flag) \(ep): \(r.err)")
            let lines = r.err.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, r.err)
            XCTAssertTrue(r.err.contains(flag) && r.err.contains("--curve-dir") && r.err.contains("--insecure"), r.err)
        }
        // --insecure: it binds (and is stopped at once).
        let p = try cluster.launch("insecure", ["broker", "--insecure", "--durability", "none", "--clients", "tcp://0.0.0.0:*",
                                                "--workers", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*"])
        XCTAssertTrue(try p.waitForLine(containing: "conveyor broker ready").contains("clients=tcp://0.0.0.0:"))
        p.stop()
        // A gateway's republisher follows the same rule.
        try cluster.startBroker()
        let g = try cluster.cli(["gateway", "--port", "0", "--broker", cluster.clients, "--events", cluster.events, "--events-out", "tcp://0.0.0.0:*"], timeout: 20)
        XCTAssertEqual(g.status, 2, g.err)
        XCTAssertTrue(g.err.contains("--events-out"), g.err)
    }

    func testKeygenRefusesToOverwriteAndBadKeysAreUsageErrors() throws {
        let dir = cluster.directory.path
        XCTAssertEqual(try cluster.cli(["keygen", "w9", "--dir", dir]).status, 0)
        XCTAssertEqual(try cluster.cli(["keygen", "w9", "--dir", dir]).status, 1, "no overwrite")
        XCTAssertEqual(try cluster.cli(["keygen", "../evil", "--dir", dir]).status, 2)
        chmod(dir + "/w9.key_secret", 0o644)
        let r = try cluster.cli(["stats", "--broker", "tcp://127.0.0.1:1", "--curve-key", dir + "/w9.key_secret", "--curve-server-key", dir + "/w9.key"])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.err.contains("chmod 600"), r.err)
        XCTAssertEqual(try cluster.cli(["stats", "--curve-key", dir + "/w9.key_secret"]).status, 2, "one key without the other")
    }
}
