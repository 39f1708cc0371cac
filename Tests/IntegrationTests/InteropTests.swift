import ConveyorCore
import Foundation
import XCTest

/// A client and a worker written in Python with pyzmq from proto/ alone,
/// against the Swift broker.
final class InteropTests: ClusterTestCase {
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("proto/examples")

    func python(_ args: [String], timeout: TimeInterval = 60) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
                String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    func testPythonClientAndWorkerAgainstSwiftBroker() throws {
        let check = try python(["-c", "import zmq"])
        XCTAssertEqual(check.status, 0, "pyzmq is required (the test command installs it): \(check.err)")
        try cluster.startBroker()
        let py = try ManagedProcess(
            name: "pyworker", executable: "/usr/bin/env",
            arguments: ["python3", Self.examples.appendingPathComponent("worker.py").path, "--broker", cluster.workers,
                        "--name", "py", "--heartbeat-ms", "200", "--liveness", "3"],
            directory: cluster.directory)
        defer { py.stop() }
        _ = try eventually("python worker to join") { (try cluster.stats()["workers_connected"] as? Int) == 1 ? true : nil }

        let client = Self.examples.appendingPathComponent("client.py").path
        let ok = try python([client, "--broker", cluster.clients, "submit", "--type", "pdf", "--priority", "2", "--payload", "hello", "--wait"])
        XCTAssertEqual(ok.status, 0, ok.err)
        // client.py prints the task id, then the result.
        let lines = ok.out.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 2, ok.out)
        XCTAssertNotNil(TaskID(lines.first ?? ""), ok.out)
        XCTAssertEqual(lines.last, "HELLO")

        let bad = try python([client, "--broker", cluster.clients, "submit", "--type", "pdf", "--payload", "fail", "--wait"])
        XCTAssertEqual(bad.status, 1, bad.err)

        // The Swift CLI sees the Python worker's results, the Python client sees the Swift broker's stats.
        let stats = try python([client, "--broker", cluster.clients, "stats"])
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(stats.out.utf8)) as? [String: Any])
        XCTAssertEqual(obj["total_success"] as? Int, 1)
        XCTAssertEqual(obj["total_failed"] as? Int, 1)
    }
}
