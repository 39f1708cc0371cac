import Foundation
import XCTest

/// `conveyor up` as a supervisor, through the real binary: the ready line, a
/// task over HTTP and over ZeroMQ, a `kill -9`'ed worker restarted and serving
/// while the broker keeps its tasks, the handler pools, and SIGTERM stopping
/// every child (checked in /proc by PID).
final class UpCommandTests: ClusterTestCase {
    /// Fast tasks echo; `slow` ones wait (until cancelled) so one worker is busy.
    static let exec = #"if [ "$TASK_TYPE" = slow ]; then sleep 30; fi; echo "50 half" >&3; printf 'done %s: ' "$TASK_TYPE"; cat"#

    struct Up {
        let process: ManagedProcess
        let gateway: String
        let port: Int
        let clients: String
        let pids: [String: Int32]
    }

    func startUp(_ extra: [String], environment: [String: String] = [:]) throws -> Up {
        let args = ["up", "--clients", "tcp://127.0.0.1:*", "--workers-endpoint", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
                    "--http-port", "0", "--events-out", "off", "--data-dir", cluster.directory.appendingPathComponent("data").path]
        let up = try cluster.launch("up", args + extra, environment: environment)
        let line = try up.waitForLine(containing: "conveyor up ready", timeout: 60)
        XCTAssertTrue(line.hasPrefix("conveyor up ready gateway=http://127.0.0.1:"), line)
        var f: [String: String] = [:]
        for part in line.split(separator: " ") where part.contains("=") {
            let kv = part.split(separator: "=", maxSplits: 1)
            f[String(kv[0])] = String(kv[1])
        }
        let gateway = try XCTUnwrap(f["gateway"])
        for k in ["clients", "workers", "events"] {
            XCTAssertTrue(f[k]?.hasPrefix("tcp://127.0.0.1:") == true && f[k]?.hasSuffix(":*") == false, "\(k) resolved in \(line)")
        }
        let pidsLine = try up.waitForLine(containing: "conveyor up pids")
        var pids: [String: Int32] = [:]
        for part in pidsLine.split(separator: " ") where part.contains("=") {
            let kv = part.split(separator: "=", maxSplits: 1)
            pids[String(kv[0])] = Int32(kv[1])
        }
        let port = try XCTUnwrap(Int(gateway.split(separator: ":").last ?? ""))
        return Up(process: up, gateway: gateway, port: port, clients: try XCTUnwrap(f["clients"]), pids: pids)
    }

    /// `conveyor up` runs CURVE with the key set it made in DATA_DIR/keys; the CLI uses its key.
    func curve(_ up: Up? = nil, dataDir: String = "data") -> [String] {
        let keys = cluster.directory.appendingPathComponent(dataDir).appendingPathComponent("keys").path
        return ["--curve-key", keys + "/own/cli.key_secret", "--curve-server-key", keys + "/broker.key"]
    }

    func stats(_ up: Up) throws -> [String: Any] {
        let r = try cluster.cli(["stats", "--broker", up.clients] + curve(up) + ["--json"], timeout: 10)
        return (try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]) ?? [:]
    }

    func status(_ up: Up, _ id: String) throws -> [String: Any] {
        let r = try cluster.cli(["status", "--broker", up.clients] + curve(up) + ["--json", id], timeout: 10)
        return (try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]) ?? [:]
    }

    func processExists(_ pid: Int32) -> Bool { FileManager.default.fileExists(atPath: "/proc/\(pid)") }

    func testSupervisedSystemServesRestartsAKilledWorkerAndStopsEveryChild() throws {
        let up = try startUp(["--exec", Self.exec, "--workers", "2"])
        XCTAssertEqual(up.process.stdout.components(separatedBy: "conveyor up ready").count, 2, "exactly one ready line")
        XCTAssertTrue(up.process.stdout.contains("dashboard: \(up.gateway)/"), up.process.stdout)
        XCTAssertTrue(up.process.stdout.contains("curl -s -X POST \(up.gateway)/api/tasks"), up.process.stdout)
        XCTAssertTrue(up.process.stdout.contains("[broker] conveyor broker ready"), "children's lines are labelled")
        XCTAssertTrue(up.process.stderr.contains("[worker-1] "), up.process.stderr.suffix(2000).description)
        XCTAssertEqual(Set(up.pids.keys), ["broker", "worker-1", "worker-2", "gateway"])

        // A task over HTTP, one over ZeroMQ.
        let http = GatewayHTTPClient(port: up.port)
        let accepted = try http.json("POST", "/api/tasks", json: #"{"type":"greeting","payload":"over http"}"#)
        XCTAssertEqual(accepted.status, 201, accepted.text)
        let httpID = try XCTUnwrap(accepted.json["task_id"] as? String)
        _ = try eventually("the HTTP task to succeed") { () -> Bool? in
            let s = try http.json("GET", "/api/tasks/\(httpID)/status").json
            return s["state"] as? String == "succeeded" ? true : nil
        }
        XCTAssertEqual(try http.json("GET", "/api/tasks/\(httpID)/status").json["result"] as? String, "done greeting: over http")
        let zmq = try cluster.cli(["submit", "--broker", up.clients] + curve(up) + ["--type", "zmq", "--payload", "over zeromq", "--wait"])
        // The embedded default is CURVE: a plaintext client gets no answer at all.
        let plain = try cluster.cli(["stats", "--broker", up.clients], timeout: 30)
        XCTAssertEqual(plain.status, 1, "plaintext must not reach a conveyor up broker: \(plain.out)")
        XCTAssertEqual(zmq.status, 0, zmq.err)
        XCTAssertEqual(zmq.out, "done zmq: over zeromq")

        // A slow task occupies one worker; kill -9 that worker.
        let slow = try cluster.cli(["submit", "--broker", up.clients] + curve(up) + ["--type", "slow"])
        let slowID = slow.out.trimmingCharacters(in: .whitespacesAndNewlines)
        let victim = try eventually("the slow task to run") { () -> String? in
            let s = try status(up, slowID)
            return s["state"] as? String == "running" ? s["worker"] as? String : nil
        }
        let victimPID = try XCTUnwrap(up.pids[victim], "\(victim) in \(up.pids)")
        let killedAt = Date()
        kill(victimPID, SIGKILL)
        try up.process.waitForLog("\(victim) (pid \(victimPID)) exited unexpectedly: signal 9 (SIGKILL); restarting in 1 s", timeout: 10)
        try up.process.waitForLog("\(victim) restarted (pid ", timeout: 10)
        _ = try eventually(timeout: 10, "the restarted worker to register") { () -> Bool? in
            (try stats(up)["workers_connected"] as? Int) == 2 ? true : nil
        }
        // Serving: a new task completes, within 5 s of the kill.
        let after = try cluster.cli(["submit", "--broker", up.clients] + curve(up) + ["--type", "after", "--payload", "x", "--wait"], timeout: 10)
        XCTAssertEqual(after.status, 0, after.err)
        XCTAssertEqual(after.out, "done after: x")
        XCTAssertLessThan(Date().timeIntervalSince(killedAt), 5, "restarted and serving within 5 s")
        // The broker never stopped and still has the slow task (reassigned, not lost).
        XCTAssertTrue(processExists(up.pids["broker"] ?? 0), "the broker kept running")
        let s = try status(up, slowID)
        XCTAssertTrue(["running", "queued"].contains(s["state"] as? String ?? ""), "\(s)")
        XCTAssertEqual(try stats(up)["total_processed"] as? Int, 3)

        // SIGTERM: exit 0, no child left (the restarted worker's new PID included).
        let restartLine = up.process.stderr.split(separator: "\n").first { $0.contains("\(victim) restarted (pid ") }.map(String.init) ?? ""
        let newPID = Int32(restartLine.split(separator: "(pid ").last?.split(separator: ",").first ?? "") ?? 0
        XCTAssertGreaterThan(newPID, 0, restartLine)
        up.process.signal(SIGTERM)
        XCTAssertEqual(up.process.waitForExit(timeout: 40), 0, up.process.stderr.suffix(3000).description)
        XCTAssertTrue(up.process.stdout.contains("conveyor up: stopped"))
        let order = up.process.stderr.split(separator: "\n").filter { $0.contains("conveyor up: stopping ") }.map { $0.split(separator: " ")[3] }
        XCTAssertEqual(order.first, "gateway", "\(order)")
        XCTAssertEqual(order.last, "broker", "\(order)")
        for (name, pid) in up.pids.merging([victim: newPID], uniquingKeysWith: { $1 }) {
            XCTAssertFalse(processExists(pid), "\(name) (pid \(pid)) left behind")
        }
    }

    func testDefaultWorkersArePoolsPerHandlerTypeAndAMissingDirectoryFallsBackToTheDemo() throws {
        // Stand-in handlers in the layout of ops/handlers.
        let dir = cluster.directory.appendingPathComponent("handlers")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for type in ["document", "pdf"] {
            try "import sys\nsys.stdout.write('\(type) handler: ' + sys.stdin.read())\n".write(to: dir.appendingPathComponent("\(type).py"), atomically: true, encoding: .utf8)
        }
        let up = try startUp(["--workers", "1"], environment: ["CONVEYOR_HANDLERS_DIR": dir.path])
        XCTAssertEqual(Set(up.pids.keys), ["broker", "worker-document-1", "worker-pdf-1", "gateway"], "one pool per handler present")
        let doc = try cluster.cli(["submit", "--broker", up.clients] + curve(up) + ["--type", "document", "--payload", "hi", "--wait"])
        XCTAssertEqual(doc.out, "document handler: hi", doc.err)
        let pdf = try cluster.cli(["submit", "--broker", up.clients] + curve(up) + ["--type", "pdf", "--payload", "p", "--wait"])
        XCTAssertEqual(pdf.out, "pdf handler: p", pdf.err)
        up.process.signal(SIGINT)
        XCTAssertEqual(up.process.waitForExit(timeout: 40), 0)
        for pid in up.pids.values { XCTAssertFalse(processExists(pid)) }

        let fallback = try cluster.launch("up-fallback", ["up", "--handlers", "/nonexistent/handlers", "--workers", "1",
                                                          "--clients", "tcp://127.0.0.1:*", "--workers-endpoint", "tcp://127.0.0.1:*",
                                                          "--events", "tcp://127.0.0.1:*", "--http-port", "0", "--events-out", "off",
                                                          "--data-dir", cluster.directory.appendingPathComponent("data2").path])
        let line = try fallback.waitForLine(containing: "conveyor up ready", timeout: 60)
        XCTAssertTrue(fallback.stderr.contains("warning: handlers directory /nonexistent/handlers is missing"), fallback.stderr)
        let clients = String(line.split(separator: " ").first { $0.hasPrefix("clients=") }?.dropFirst(8) ?? "")
        let demo = try cluster.cli(["submit", "--broker", clients] + curve(dataDir: "data2") + ["--type", "document", "--payload", "hello", "--wait"])
        XCTAssertEqual(demo.out, "processed document: hello", demo.err)
        fallback.signal(SIGTERM)
        XCTAssertEqual(fallback.waitForExit(timeout: 40), 0)
    }
}
