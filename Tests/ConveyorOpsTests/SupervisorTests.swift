import ConveyorOps
import Foundation
import XCTest

/// The supervisor with real `/bin/sh` children: output labelled, ready lines,
/// restart after `kill -9`, ordered shutdown with SIGKILL after the grace period.
final class SupervisorTests: XCTestCase {
    final class Captured: @unchecked Sendable {
        var lines: [String] = []
        var logs: [String] = []
    }

    func makeSupervisor(_ c: Captured) -> Supervisor {
        Supervisor(sinks: .init(output: { name, line, isErr in c.lines.append("[\(name)]\(isErr ? "!" : "") \(line)") },
                                log: { c.logs.append($0) }))
    }

    func sh(_ name: String, _ script: String, ready: String? = nil, grace: Double = 5) -> ChildSpec {
        ChildSpec(name: name, executable: "/bin/sh", arguments: ["-c", script], readyMarker: ready, graceSeconds: grace)
    }

    func alive(_ pid: pid_t) -> Bool { kill(pid, 0) == 0 }

    func testLabelsOutputRestartsAKilledChildAndStopsInOrder() throws {
        let c = Captured()
        let sup = makeSupervisor(c)
        try sup.start(sh("a", "echo hello; echo oops >&2; echo a is ready; exec sleep 30", ready: "a is ready"))
        try sup.start(sh("b", "trap 'echo b got TERM; exit 0' TERM; echo b is ready; while :; do sleep 0.05; done", ready: "b is ready"))
        try sup.run(timeout: 10, what: "both ready") { sup.isReady("a") && sup.isReady("b") }
        XCTAssertTrue(c.lines.contains("[a] hello"), "\(c.lines)")
        XCTAssertTrue(c.lines.contains("[a]! oops"), "\(c.lines)")
        XCTAssertEqual(sup.readyLine(of: "a"), "a is ready")

        let first = try XCTUnwrap(sup.pid(of: "a"))
        kill(first, SIGKILL)
        try sup.run(timeout: 5, what: "a restarted and ready") { sup.restarts(of: "a") == 1 && sup.isReady("a") }
        XCTAssertNotEqual(sup.pid(of: "a"), first)
        XCTAssertTrue(c.logs.contains { $0.contains("a (pid \(first)) exited unexpectedly: signal 9 (SIGKILL); restarting in 1 s") }, "\(c.logs)")
        XCTAssertTrue(sup.isReady("b"), "the other child kept running")

        let pids = Array(sup.pids.values)
        XCTAssertTrue(sup.shutdown(order: [["b"], ["a"]]))
        XCTAssertTrue(c.lines.contains("[b] b got TERM"), "\(c.lines)")
        let stops = c.logs.filter { $0.hasPrefix("stopping") }
        XCTAssertEqual(stops.map { String($0.prefix(10)) }, ["stopping b", "stopping a"])
        for p in pids { XCTAssertFalse(alive(p), "pid \(p) left behind") }
        XCTAssertTrue(sup.pids.isEmpty)
    }

    func testAChildIgnoringSIGTERMIsKilledAfterItsGrace() throws {
        let c = Captured()
        let sup = makeSupervisor(c)
        try sup.start(sh("stubborn", "trap '' TERM; echo up; while :; do sleep 0.05; done", ready: "up", grace: 0.5))
        try sup.run(timeout: 10, what: "ready") { sup.isReady("stubborn") }
        let pid = try XCTUnwrap(sup.pid(of: "stubborn"))
        let t0 = Date()
        XCTAssertTrue(sup.shutdown(order: [["stubborn"]]))
        XCTAssertLessThan(Date().timeIntervalSince(t0), 5)
        XCTAssertFalse(alive(pid))
        XCTAssertTrue(c.logs.contains { $0.contains("did not stop within 0.5 s: SIGKILL") }, "\(c.logs)")
    }

    func testASecondStopRequestDuringShutdownKillsEverythingAtOnce() throws {
        let c = Captured()
        var sup: Supervisor?
        // The second request arrives as soon as the graceful stop has begun (an event, not a timer).
        let s = Supervisor(sinks: .init(output: { _, _, _ in }, log: { line in
            c.logs.append(line)
            if line.hasPrefix("stopping slow-a") { sup?.requestStop() }
        }))
        sup = s
        try s.start(sh("slow-a", "trap '' TERM; echo up; while :; do sleep 0.05; done", ready: "up", grace: 30))
        try s.start(sh("slow-b", "trap '' TERM; echo up; while :; do sleep 0.05; done", ready: "up", grace: 30))
        try s.run(timeout: 10, what: "ready") { s.isReady("slow-a") && s.isReady("slow-b") }
        let pids = Array(s.pids.values)
        s.requestStop()
        s.pump(timeoutMs: 0)
        XCTAssertEqual(s.stopRequests, 1)
        let t0 = Date()
        XCTAssertFalse(s.shutdown(order: [["slow-a"], ["slow-b"]]), "forced")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10, "did not wait out the 30 s grace")
        XCTAssertTrue(c.logs.contains("second signal: killing every child"), "\(c.logs)")
        for p in pids { XCTAssertFalse(alive(p), "pid \(p) left behind") }
        sup = nil
    }

    func testWaitingAbortsWhenAWatchedChildExits() throws {
        let sup = makeSupervisor(Captured())
        try sup.start(sh("early", "echo failing >&2; exit 3", ready: "never"))
        XCTAssertThrowsError(try sup.run(timeout: 10, what: "ready", abortOnExit: ["early"]) { sup.isReady("early") }) { e in
            XCTAssertEqual(e as? SupervisorError, .exited(name: "early", .status(3)))
        }
        sup.shutdown(order: [])
    }
}
