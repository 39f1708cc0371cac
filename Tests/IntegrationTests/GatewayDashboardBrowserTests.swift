import Foundation
import XCTest

/// Loads the dashboard in headless Chromium against a running system and checks
/// that the page the browser built shows the system's live figures.
///
/// Needs the Debian package `chromium` (the test fails, rather than skips, when it
/// is missing: the dashboard would otherwise go untested). Set CHROMIUM to use
/// another binary.
final class GatewayDashboardBrowserTests: ClusterTestCase {
    static let token = "dash-token"

    static func chromium() -> String? {
        if let p = ProcessInfo.processInfo.environment["CHROMIUM"], FileManager.default.isExecutableFile(atPath: p) { return p }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") + ["/usr/bin", "/usr/lib/chromium"] {
            for name in ["chromium", "chromium-browser", "google-chrome"] {
                let p = "\(dir)/\(name)"
                if FileManager.default.isExecutableFile(atPath: p) { return p }
            }
        }
        return nil
    }

    /// The DOM after the page's scripts ran for `budgetMs` of virtual time.
    func dumpDOM(_ url: String, budgetMs: Int = 6000) throws -> String {
        guard let browser = Self.chromium() else {
            XCTFail("chromium is not installed: install the Debian package 'chromium' (apt-get install chromium) or set CHROMIUM=/path/to/chrome")
            throw TimedOut(description: "no chromium")
        }
        let profile = cluster.directory.appendingPathComponent("chromium-profile-\(UUID().uuidString.prefix(6))")
        let r = try cluster.runTool(browser, [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-extensions", "--disable-background-networking", "--user-data-dir=\(profile.path)",
            "--virtual-time-budget=\(budgetMs)", "--dump-dom", url,
        ], timeout: 90)
        XCTAssertEqual(r.status, 0, "chromium failed: \(r.err.suffix(2000))")
        return r.out
    }

    /// The text of the element with `id`, from the dumped DOM.
    func text(_ dom: String, id: String) -> String? {
        guard let r = dom.range(of: "id=\"\(id)\"") else { return nil }
        guard let close = dom[r.upperBound...].firstIndex(of: ">") else { return nil }
        let rest = dom[dom.index(after: close)...]
        guard let end = rest.firstIndex(of: "<") else { return nil }
        return String(rest[..<end])
    }

    func testDashboardRendersLiveFiguresInHeadlessChromium() throws {
        try cluster.startBroker(["--max-running", "1", "--type-concurrency", "ok=1", "--rate-limit", "ok=100/min"])
        try cluster.startWorker(name: "dash-w1", ["--exec", "if [ \"$TASK_TYPE\" = fails ]; then echo 'boom: disk on fire' >&2; exit 3; fi; cat"], extra: ["--types", "ok,fails"])
        let gw = try cluster.startGateway(tokens: [Self.token])
        try cluster.waitForGatewayEvents(gw, token: Self.token)
        for i in 0..<4 {
            XCTAssertEqual(try gw.http.json("POST", "/api/tasks", token: Self.token, json: #"{"type":"ok","payload":"\#(i)"}"#).status, 201)
        }
        XCTAssertEqual(try gw.http.json("POST", "/api/tasks", token: Self.token, json: #"{"type":"fails"}"#).status, 201)
        _ = try eventually("5 tasks processed") { () -> Bool? in
            (try gw.http.json("GET", "/api/queue/stats").json["total_processed"] as? Int) == 5 ? true : nil
        }
        // The failure reaches the dashboard's event history.
        _ = try eventually("the failure in /api/dashboard") { () -> Bool? in
            ((try gw.http.json("GET", "/api/dashboard", token: Self.token).json["recent_failures"] as? [Any])?.count ?? 0) > 0 ? true : nil
        }
        // Work the page must show as queued: no worker accepts "held".
        for p in ["urgent", "urgent", "low"] {
            XCTAssertEqual(try gw.http.json("POST", "/api/tasks", token: Self.token, json: #"{"type":"held","priority":"\#(p)"}"#).status, 201)
        }
        let stats = try gw.http.json("GET", "/api/queue/stats").json
        XCTAssertEqual(stats["queue_size"] as? Int, 3)
        XCTAssertEqual(try gw.http.json("POST", "/api/types/held/pause", token: Self.token).status, 200)

        let dom = try dumpDOM("\(gw.baseURL)/?token=\(Self.token)")
        XCTAssertEqual(text(dom, id: "total-processed"), "5", "processed count in\n\(dom.prefix(4000))")
        XCTAssertEqual(text(dom, id: "total-success"), "4")
        XCTAssertEqual(text(dom, id: "total-failed"), "1")
        XCTAssertEqual(text(dom, id: "workers-connected"), "1")
        XCTAssertEqual(text(dom, id: "q-urgent"), "2")
        XCTAssertEqual(text(dom, id: "q-low"), "1")
        XCTAssertEqual(text(dom, id: "q-high"), "0")
        XCTAssertEqual(text(dom, id: "broker-state"), "live")
        XCTAssertNotEqual(text(dom, id: "last-update"), "never")
        XCTAssertTrue(dom.contains("boom: disk on fire"), "recent failures list")
        XCTAssertTrue(dom.contains("<polyline"), "throughput chart drawn")
        XCTAssertTrue(dom.contains("held"), "queued tasks listed")
        // Task types: limits, state and the pause/resume control; why queued tasks wait.
        let types = try XCTUnwrap(dom.range(of: "id=\"task-types\"").map { String(dom[$0.upperBound...].prefix(3000)) })
        XCTAssertTrue(types.contains("data-type=\"held\""), "the paused type has a row:\n\(types)")
        XCTAssertTrue(types.contains(">paused<") && types.contains(">resume</button>"), "paused, with a resume button:\n\(types)")
        XCTAssertTrue(types.contains(">0 of 1<"), "the concurrency limit of ok:\n\(types)")
        XCTAssertTrue(types.contains("of 100 / 60 s"), "the rate window of ok:\n\(types)")
        XCTAssertTrue(dom.contains(">paused</td>"), "queued tasks say what they wait for")

        // Without a token the public figures still render, and the page asks for one.
        let anonymous = try dumpDOM(gw.baseURL + "/", budgetMs: 3000)
        XCTAssertEqual(text(anonymous, id: "total-processed"), "5")
        XCTAssertTrue(anonymous.contains("id=\"token-form\" style=\"display: flex;\""), "token form shown")
    }
}

extension Cluster {
    /// Runs an external program to completion with a timeout; returns (status, stdout, stderr).
    func runTool(_ executable: String, _ arguments: [String], timeout: TimeInterval) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let outURL = directory.appendingPathComponent("tool-\(UUID().uuidString.prefix(6)).out")
        let errURL = directory.appendingPathComponent("tool-\(UUID().uuidString.prefix(6)).err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: outURL)
        p.standardError = try FileHandle(forWritingTo: errURL)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        let out = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        return (p.terminationStatus, out, err)
    }
}
