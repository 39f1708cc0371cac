import ConveyorCore
import Foundation
import XCTest

/// The command-line contract other tools rely on.
final class CLITests: ClusterTestCase {
    func testUsageErrorsExitTwoWithOneLine() throws {
        for args in [["submit", "--type", "t", "--priority", "7"], ["submit", "--type", "t", "--priority", "medium"],
                     ["submit", "--broker", "nonsense", "--type", "t"], ["broker", "--clients", "tcp://127.0.0.1:notaport"],
                     ["worker", "--builtin", "echo", "--concurrency", "0"], ["status", "xyz"], ["bogus"]] {
            let r = try cluster.cli(args)
            XCTAssertEqual(r.status, 2, "\(args): \(r.err)")
            XCTAssertEqual(r.err.split(separator: "\n").count, 1, "\(args): \(r.err)")
        }
    }

    func testBatchPrintsOneLinePerInputInOrder() throws {
        try cluster.startBroker(["--max-queue", "3"])
        let input = """
        {"type":"pdf","priority":"high","payload":"a"}
        {"type":"pdf","priority":0,"payload":{"k":1}}
        not json
        {"type":"bad type","payload":"x"}
        {"type":"doc","priority":9}
        {"type":"doc","priority":"urgent"}
        {"type":"doc"}
        """
        let r = try cluster.cli(["submit", "--broker", cluster.clients, "--batch", "-"], stdin: input + "\n")
        XCTAssertEqual(r.status, 1)
        let lines = r.out.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
        XCTAssertEqual(lines.count, 7, r.out)
        XCTAssertNotNil(TaskID(lines[0]))
        XCTAssertNotNil(TaskID(lines[1]))
        XCTAssertTrue(lines[2].hasPrefix("rejected bad_request"))
        XCTAssertTrue(lines[3].hasPrefix("rejected bad_request"))
        XCTAssertTrue(lines[4].hasPrefix("rejected bad_request"))
        XCTAssertNotNil(TaskID(lines[5]))
        XCTAssertTrue(lines[6].hasPrefix("rejected queue_full"), lines[6])
        // The JSON payload object reached the broker as its JSON text.
        let st = try cluster.status(try XCTUnwrap(TaskID(lines[1])))
        XCTAssertEqual(st["priority"] as? String, "LOW")
    }

    func testSubmitWaitReportsFailure() throws {
        try cluster.startBroker()
        try cluster.startWorker(name: "w", ["--exec", "echo boom >&2; exit 3"])
        let r = try cluster.cli(["submit", "--broker", cluster.clients, "--type", "t", "--wait"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.out, "")
        XCTAssertTrue(r.err.contains("failed boom"), r.err)
    }

    func testStatusJSONAndStatsJSON() throws {
        try cluster.startBroker()
        let submitted = try cluster.cli(["submit", "--broker", cluster.clients, "--type", "t", "--priority", "urgent", "--payload", "p"])
        XCTAssertEqual(submitted.status, 0, submitted.err)
        let id = submitted.out.trimmingCharacters(in: .whitespacesAndNewlines)
        let status = try cluster.cli(["status", "--broker", cluster.clients, id, "--json"])
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(status.out.utf8)) as? [String: Any])
        XCTAssertEqual(obj["state"] as? String, "queued")
        XCTAssertEqual(obj["priority"] as? String, "URGENT")
        XCTAssertEqual(obj["queue_position"] as? Int, 0)
        let stats = try cluster.cli(["stats", "--broker", cluster.clients, "--json"])
        let s = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(stats.out.utf8)) as? [String: Any])
        XCTAssertEqual(s["queue_size"] as? Int, 1)
    }

    func testProgressReachesTheSubmitter() throws {
        try cluster.startBroker()
        try cluster.startWorker(name: "w", ["--exec", "echo '40 reading' >&3; echo '80 writing' >&3; cat"])
        let r = try cluster.cli(["submit", "--broker", cluster.clients, "--type", "t", "--payload", "done", "--wait"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.out, "done")
        XCTAssertTrue(r.err.contains("progress 40% reading"), r.err)
        XCTAssertTrue(r.err.contains("progress 80% writing"), r.err)
    }

    func testEventsCommandPrintsJSONLines() throws {
        try cluster.startBroker()
        let events = try cluster.launch("events", ["events", "--events", cluster.events, "--topic", "stats", "--count", "2"])
        XCTAssertEqual(events.waitForExit(timeout: 20), 0)
        let lines = events.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
        for l in lines {
            let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any])
            XCTAssertEqual(obj["topic"] as? String, "stats")
        }
    }
}
