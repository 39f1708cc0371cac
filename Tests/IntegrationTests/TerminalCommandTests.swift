import Foundation
import XCTest

/// The terminal-facing commands off a TTY (what scripts see) and, through
/// tmux when it is installed, on one: submit --wait, stats --watch, tasks.
final class TerminalCommandTests: ClusterTestCase {
    func testSubmitWaitOffATerminalAndQuiet() throws {
        try cluster.startBroker()
        try cluster.startWorker(name: "t-w1", ["--exec", #"echo "50 half" >&3; printf 'got '; cat"#])
        let plain = try cluster.cli(["submit", "--broker", cluster.clients, "--type", "t", "--payload", "x", "--wait"])
        XCTAssertEqual(plain.status, 0)
        XCTAssertEqual(plain.out, "got x")
        XCTAssertTrue(plain.err.contains("progress 50% half"), plain.err)
        XCTAssertFalse(plain.err.contains("\u{1B}["), "no terminal codes off a TTY")
        let quiet = try cluster.cli(["submit", "--broker", cluster.clients, "--type", "t", "--payload", "y", "--wait", "--quiet"])
        XCTAssertEqual(quiet.status, 0)
        XCTAssertEqual(quiet.out, "got y")
        XCTAssertEqual(quiet.err, "", "--quiet: only the result")
    }

    func testStatsJSONWatchPrintsOneObjectPerLineAndPlainWatchPrintsBlocks() throws {
        try cluster.startBroker()
        let watch = try cluster.launch("stats-watch", ["stats", "--broker", cluster.clients, "--json", "--watch", "--interval", "0.2"])
        let lines = try eventually(timeout: 20, "two JSON lines") { () -> [Substring]? in
            let l = watch.stdout.split(separator: "\n")
            return l.count >= 2 ? l : nil
        }
        kill(watch.pid, SIGKILL)
        _ = watch.waitForExit(timeout: 10)
        for line in lines.prefix(2) {
            let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))
            XCTAssertEqual(obj["version"] as? String, "0.4.0")
            XCTAssertNotNil(obj["queue_by_priority"])
        }
        XCTAssertFalse(watch.stdout.contains("\u{1B}["))

        let plain = try cluster.launch("stats-plain", ["stats", "--broker", cluster.clients, "--watch", "--interval", "0.2"])
        _ = try eventually(timeout: 20, "two blocks") { plain.stdout.components(separatedBy: "\n\n").count >= 3 ? true : nil }
        kill(plain.pid, SIGKILL)
        _ = plain.waitForExit(timeout: 10)
        XCTAssertTrue(plain.stdout.contains("queue_size: 0"), plain.stdout)
        XCTAssertFalse(plain.stdout.contains("\u{1B}["), "off a TTY: no full-screen codes")
    }

    func testTasksListsRunningAndQueuedFiltered() throws {
        try cluster.startBroker()
        try cluster.startWorker(name: "busy-w", ["--exec", "sleep 30"], extra: ["--types", "busy"])
        let c = try cluster.client()
        defer { c.close() }
        let running = try submit(c, type: "busy")
        try cluster.waitForState(running, "running")
        let h1 = try submit(c, type: "held", priority: .urgent)
        _ = try submit(c, type: "held")
        _ = try submit(c, type: "other", priority: .low)

        let all = try cluster.cli(["tasks", "--broker", cluster.clients, "--json"])
        XCTAssertEqual(all.status, 0, all.err)
        let items = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(all.out.utf8)) as? [[String: Any]])
        XCTAssertEqual(items.map { $0["state"] as? String ?? "" }, ["running", "queued", "queued", "queued"])
        XCTAssertEqual(items.first?["task_id"] as? String, running.description)
        XCTAssertEqual(items[1]["task_id"] as? String, h1.description, "queued in dispatch order: urgent first")

        func count(_ args: [String]) throws -> Int {
            let r = try cluster.cli(["tasks", "--broker", cluster.clients, "--json"] + args)
            XCTAssertEqual(r.status, 0, r.err)
            return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [Any])?.count ?? -1
        }
        XCTAssertEqual(try count(["--state", "running"]), 1)
        XCTAssertEqual(try count(["--state", "queued"]), 3)
        XCTAssertEqual(try count(["--type", "held"]), 2)
        XCTAssertEqual(try count(["--state", "queued", "--type", "held", "--limit", "1"]), 1)

        let table = try cluster.cli(["tasks", "--broker", cluster.clients])
        let rows = table.out.split(separator: "\n")
        XCTAssertTrue(rows.first?.hasPrefix("TASK ") == true, table.out)
        XCTAssertEqual(rows.count, 5)
        XCTAssertTrue(rows[1].contains("running") && rows[1].contains("busy-w"), table.out)
        let bad = try cluster.cli(["tasks", "--broker", cluster.clients, "--state", "failed"])
        XCTAssertEqual(bad.status, 2)
        _ = try cluster.cli(["cancel", "--broker", cluster.clients, running.description])
    }

    // MARK: On a terminal, through tmux

    static func tmux() -> String? {
        ["/usr/bin/tmux", "/usr/local/bin/tmux"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func testOnATerminalThroughTmux() throws {
        guard let tmux = Self.tmux() else { throw XCTSkip("tmux is not installed; the renderers are unit-tested in ConveyorOpsTests") }
        try cluster.startBroker()
        try cluster.startWorker(name: "tty-w", ["--exec", #"echo "40 reading" >&3; sleep 1; printf 'tty result'"#])
        // A tmux server of our own (its socket in our directory), killed at the end.
        let socket = cluster.directory.appendingPathComponent("tmux.sock").path
        // Through a wrapper that closes every inherited descriptor: the tmux server daemonises, and
        // must not keep the sockets Foundation watches to see our other children exit.
        let closeFDs = "import os, sys; os.closerange(3, 65536); os.execv(sys.argv[1], sys.argv[1:])"
        func tm(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
            try cluster.runTool("/usr/bin/env", ["python3", "-c", closeFDs, tmux, "-S", socket] + args, timeout: 20)
        }
        defer { _ = try? tm(["kill-server"]) }
        let bin = Cluster.binary
        XCTAssertEqual(try tm(["new-session", "-d", "-s", "stats", "-x", "120", "-y", "40",
                               "\(bin) stats --watch --interval 0.3 --broker \(cluster.clients)"]).status, 0)
        let screen = try eventually(timeout: 20, "the full-screen view") { () -> String? in
            let s = try tm(["capture-pane", "-p", "-t", "stats"]).out
            return s.contains("WORKERS") && s.contains("RATES     submitted") ? s : nil
        }
        XCTAssertTrue(screen.contains("conveyor 0.4.0"), screen)
        XCTAssertTrue(screen.contains("1 connected"), screen)
        XCTAssertTrue(screen.contains("q quit"), screen)
        _ = try tm(["send-keys", "-t", "stats", "q"])
        _ = try eventually(timeout: 10, "q to end the view") { try tm(["has-session", "-t", "stats"]).status != 0 ? true : nil }

        let out = cluster.directory.appendingPathComponent("submit.out").path
        XCTAssertEqual(try tm(["new-session", "-d", "-s", "submit", "-x", "100", "-y", "10",
                               "\(bin) submit --wait --type t --broker \(cluster.clients) > \(out); sleep 30"]).status, 0)
        let final = try eventually(timeout: 20, "the final state on the terminal") { () -> String? in
            let s = try tm(["capture-pane", "-p", "-t", "submit"]).out
            return s.contains("✔ succeeded after") ? s : nil
        }
        XCTAssertFalse(final.contains("progress 40%"), "a TTY gets the bar, not plain lines:\n\(final)")
        XCTAssertEqual(try String(contentsOfFile: out, encoding: .utf8), "tty result")
    }
}
