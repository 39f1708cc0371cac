import Foundation
import XCTest

/// `conveyor up`, the README's run command: the embedded default on its fixed
/// loopback ports, serving a task end to end, stopped whole by one signal.
final class UpCommandTests: ClusterTestCase {
    func testUpServesATaskAndStopsEverything() throws {
        let up = try cluster.launch("up", ["up", "--data-dir", cluster.directory.appendingPathComponent("data").path])
        _ = try up.waitForLine(containing: "Ctrl-C stops all")
        _ = try eventually(timeout: 30, "the gateway to answer /healthz") { () -> Bool? in
            let r = try cluster.cli(["stats", "--broker", "tcp://127.0.0.1:5555", "--json"], timeout: 10)
            guard r.status == 0, r.out.contains("\"workers_connected\":2") else { return nil }
            return httpStatus("http://127.0.0.1:8001/healthz") == 200 ? true : nil
        }
        let r = try cluster.cli(["submit", "--broker", "tcp://127.0.0.1:5555", "--type", "pdf", "--payload", "hello", "--wait"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.out, "processed pdf: hello")
        XCTAssertTrue(r.err.contains("progress 60% working"), r.err)

        up.signal(SIGINT)
        XCTAssertEqual(up.waitForExit(timeout: 20), 0)
        XCTAssertTrue(up.stdout.contains("conveyor up: stopped"))
        // Nothing is left listening on the default ports.
        let after = try cluster.cli(["stats", "--broker", "tcp://127.0.0.1:5555", "--json"], timeout: 20)
        XCTAssertEqual(after.status, 1, "a broker still answers: \(after.out)")
        XCTAssertNil(httpStatus("http://127.0.0.1:8001/healthz"))
    }
}

/// The status of a GET, or nil when nothing answers.
func httpStatus(_ url: String) -> Int? {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return nil }
    p.waitUntilExit()
    let code = Int(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)) ?? 0
    return code == 0 ? nil : code
}
