import Foundation
import XCTest

/// The dashboard's operator console in headless Chromium, driven over the
/// DevTools protocol (`--remote-debugging-pipe`, by a small stdlib-only Python
/// driver): each page renders the broker's live data, and each action —
/// cancel, retry and purge a dead letter, purge all — changes the broker's
/// state, through the same fetch paths an operator's clicks take.
final class DashboardConsoleBrowserTests: ClusterTestCase {
    /// Steps: {"nav": URL} | {"wait": JS expression, truthy when done} | {"click": CSS selector}.
    /// Prints one JSON line per step; exits 1 at the first step that fails or times out.
    static let driver = #"""
    import fcntl, json, os, select, subprocess, sys, time
    os.closerange(3, 65536)  # nothing inherited reaches Chromium (our harness watches its own sockets)
    chrome, steps_path, profile = sys.argv[1:4]
    steps = json.load(open(steps_path))
    deadline = time.time() + float(os.environ.get("DRIVER_TIMEOUT", "120"))
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    def fds():
        a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 20); b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 20)
        os.dup2(a, 3); os.dup2(b, 4)
    log = open(profile + ".log", "w")
    p = subprocess.Popen([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                          "--disable-extensions", "--disable-background-networking", "--user-data-dir=" + profile,
                          "--remote-debugging-pipe", "about:blank"],
                         preexec_fn=fds, close_fds=False, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    os.close(to_chrome_r); os.close(from_chrome_w)
    buf = b""; next_id = [0]
    def call(method, params=None, session=None, timeout=20):
        global buf
        next_id[0] += 1
        msg = {"id": next_id[0], "method": method, "params": params or {}}
        if session: msg["sessionId"] = session
        os.write(to_chrome_w, json.dumps(msg).encode() + b"\0")
        end = min(deadline, time.time() + timeout)
        while True:
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                m = json.loads(raw)
                if m.get("id") == next_id[0]:
                    if "error" in m: raise RuntimeError(method + ": " + json.dumps(m["error"]))
                    return m.get("result", {})
            left = end - time.time()
            if left <= 0: raise TimeoutError(method)
            r, _, _ = select.select([from_chrome_r], [], [], left)
            if r:
                chunk = os.read(from_chrome_r, 1 << 20)
                if not chunk: raise RuntimeError("chromium closed the pipe")
                buf += chunk
    def evaluate(session, expr):
        try:
            r = call("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True}, session)
        except RuntimeError:
            return None  # e.g. the context went away with a navigation; the step polls again
        if "exceptionDetails" in r: return None
        return r.get("result", {}).get("value")
    status = 0
    try:
        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        call("Page.enable", {}, session)
        for i, step in enumerate(steps):
            t = float(step.get("timeout", 15)); end = min(deadline, time.time() + t); value = None
            if "nav" in step:
                call("Page.navigate", {"url": step["nav"]}, session); value = step["nav"]
                time.sleep(0.05)
            else:
                expr = step.get("wait") or ("(() => { const el = document.querySelector(%s); if (!el) return false; el.click(); return true; })()" % json.dumps(step["click"]))
                while True:
                    value = evaluate(session, expr)
                    if value: break
                    if time.time() > end:
                        body = evaluate(session, "document.body ? document.body.innerText.slice(0, 3000) : ''")
                        print(json.dumps({"step": i, "ok": False, "spec": step, "page": body}), flush=True)
                        raise SystemExit(1)
                    time.sleep(0.1)
            print(json.dumps({"step": i, "ok": True, "value": value}), flush=True)
    except SystemExit as e:
        status = e.code or 0
    except Exception as e:
        print(json.dumps({"ok": False, "error": repr(e)}), flush=True); status = 1
    finally:
        try: call("Browser.close", {}, timeout=5)
        except Exception: pass
        try: p.wait(timeout=10)
        except Exception: p.kill(); p.wait()
    sys.exit(status)
    """#

    func runDriver(_ steps: [[String: Any]]) throws -> [[String: Any]] {
        guard let browser = GatewayDashboardBrowserTests.chromium() else {
            XCTFail("chromium is not installed: install the Debian package 'chromium' or set CHROMIUM=/path/to/chrome")
            throw TimedOut(description: "no chromium")
        }
        let dir = cluster.directory
        let script = dir.appendingPathComponent("cdp_driver.py")
        try Self.driver.write(to: script, atomically: true, encoding: .utf8)
        let stepsFile = dir.appendingPathComponent("steps-\(UUID().uuidString.prefix(6)).json")
        try JSONSerialization.data(withJSONObject: steps).write(to: stepsFile)
        let profile = dir.appendingPathComponent("chromium-\(UUID().uuidString.prefix(6))").path
        let r = try cluster.runTool("/usr/bin/env", ["python3", script.path, browser, stepsFile.path, profile], timeout: 150)
        let results = r.out.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        XCTAssertEqual(r.status, 0, "driver failed:\n\(r.out.suffix(4000))\n\(r.err.suffix(2000))")
        return results
    }

    func testConsolePagesShowLiveDataAndActionsChangeTheBroker() throws {
        try cluster.startBroker(["--max-running", "2"])
        try cluster.startWorker(name: "console-w", ["--exec", """
            case "$TASK_TYPE" in
              fails) echo 'boom: disk on fire' >&2; exit 3;;
              slow) echo "30 chewing" >&3; sleep 30;;
              *) printf 'result of %s' "$(cat)";;
            esac
            """], extra: ["--types", "ok,fails,slow", "--concurrency", "2"])
        let gw = try cluster.startGateway()
        try cluster.waitForGatewayEvents(gw)
        func submit(_ json: String) throws -> String {
            let r = try gw.http.json("POST", "/api/tasks", json: json)
            XCTAssertEqual(r.status, 201, r.text)
            return try XCTUnwrap(r.json["task_id"] as? String)
        }
        let ok = try submit(#"{"type":"ok","payload":"hello console"}"#)
        let failed = try submit(#"{"type":"fails","max_attempts":1}"#)
        let slow = try submit(#"{"type":"slow"}"#)
        let held1 = try submit(#"{"type":"held","priority":"urgent"}"#)
        let held2 = try submit(#"{"type":"held"}"#)
        _ = try eventually("ok done, failed dead, slow running") { () -> Bool? in
            let s = try gw.http.json("GET", "/api/queue/stats").json
            let slowState = try gw.http.json("GET", "/api/tasks/\(slow)/status").json["state"] as? String
            return (s["total_success"] as? Int) == 1 && (s["dead_letters"] as? Int) == 1 && slowState == "running" ? true : nil
        }
        let base = gw.baseURL + "/"
        func api(_ path: String, _ test: String) -> String {
            "fetch('\(path)', {cache: 'no-store'}).then(r => r.json()).then(j => \(test)).catch(() => false)"
        }
        func text(_ selector: String) -> String { "((document.querySelector('\(selector)') || {}).textContent || '')" }

        let steps: [[String: Any]] = [
            // Workers page: name, types, capacity, busy, heartbeat.
            ["nav": base + "#workers"],
            ["wait": "(() => { const r = document.querySelector('tr[data-worker=\"console-w\"]'); return r && /fails,ok,slow/.test(r.textContent) && /ms ago/.test(r.textContent) && r.children[2].textContent === '2' && r.children[3].textContent === '1' ? r.textContent : false; })()"],
            // Task page of a running task: state, progress, timeline; then cancel it.
            ["nav": base + "#task=\(slow)"],
            ["wait": "/running/.test(\(text("#task-fields"))) && /30% chewing/.test(\(text("#task-progress-text"))) && document.querySelector('#task-timeline li[data-event=\"submitted\"]') ? \(text("#task-fields")) : false"],
            ["click": "#task-actions button[data-action=\"cancel\"]"],
            ["wait": api("/api/tasks/\(slow)/status", "j.state === 'cancelled'")],
            ["wait": "/cancelled/.test(\(text("#task-fields"))) && /cancelled/.test(\(text("#task-timeline"))) ? \(text("#task-timeline")) : false"],
            // Search by type and state; cancel one of the results.
            ["nav": base + "#tasks?type=held&state=queued"],
            ["wait": "document.querySelectorAll('#search-results tr[data-task]').length === 2 ? \(text("#search-message")) : false"],
            ["click": "#search-results tr[data-task=\"\(held1)\"] button[data-action=\"cancel\"]"],
            ["wait": api("/api/tasks/\(held1)/status", "j.state === 'cancelled'")],
            ["wait": "document.querySelectorAll('#search-results tr[data-task]').length === 1 && !!document.querySelector('#search-results tr[data-task=\"\(held2)\"]')"],
            // Search by id finds a finished task; its page shows the result.
            ["nav": base + "#tasks?id=\(ok)"],
            ["wait": "(() => { const r = document.querySelector('#search-results tr[data-task=\"\(ok)\"]'); return r && /succeeded/.test(r.textContent) ? r.textContent : false; })()"],
            ["nav": base + "#task=\(ok)"],
            ["wait": "\(text("#task-output")) === 'result of hello console' && /succeeded/.test(\(text("#task-timeline")))"],
            // Dead letters: the failure is listed; retry sends it back (it fails again), then purge.
            ["nav": base + "#dead"],
            ["wait": "(() => { const r = document.querySelector('#dead-table tr[data-task=\"\(failed)\"]'); return r && /boom: disk on fire/.test(r.textContent) ? r.textContent : false; })()"],
            ["click": "#dead-table tr[data-task=\"\(failed)\"] button[data-action=\"retry\"]"],
            ["wait": "/retried \(failed)/.test(\(text("#dead-message")))"],
            ["wait": api("/api/queue/stats", "j.total_failed === 2 && j.dead_letters === 1")],
            ["wait": "!!document.querySelector('#dead-table tr[data-task=\"\(failed)\"] button[data-action=\"purge\"]')", "timeout": 10],
            ["click": "#dead-table tr[data-task=\"\(failed)\"] button[data-action=\"purge\"]"],
            ["wait": api("/api/queue/stats", "j.dead_letters === 0")],
            ["wait": "/purged 1 dead letter/.test(\(text("#dead-message"))) && \(text("#dead-count")) === '0'"],
        ]
        let results = try runDriver(steps)
        XCTAssertEqual(results.filter { $0["ok"] as? Bool == true }.count, steps.count, "\(results)")

        // The broker's own view agrees with what the clicks did.
        XCTAssertEqual(try gw.http.json("GET", "/api/tasks/\(slow)/status").json["state"] as? String, "cancelled")
        XCTAssertEqual(try gw.http.json("GET", "/api/tasks/\(held1)/status").json["state"] as? String, "cancelled")
        XCTAssertEqual(try gw.http.json("GET", "/api/tasks/\(held2)/status").json["state"] as? String, "queued")
        let stats = try gw.http.json("GET", "/api/queue/stats").json
        XCTAssertEqual(stats["dead_letters"] as? Int, 0)
        XCTAssertEqual(stats["total_cancelled"] as? Int, 2)

        // Purge all, with its confirming second click.
        _ = try submit(#"{"type":"fails","max_attempts":1}"#)
        _ = try submit(#"{"type":"fails","max_attempts":1}"#)
        _ = try eventually("two dead letters") { (try gw.http.json("GET", "/api/queue/stats").json["dead_letters"] as? Int) == 2 ? true : nil }
        _ = try runDriver([
            ["nav": base + "#dead"],
            ["wait": "document.querySelectorAll('#dead-table tr[data-task]').length === 2"],
            ["click": "#dead-purge-all"],
            ["wait": "/click again/.test(\(text("#dead-purge-all")))"],
            ["click": "#dead-purge-all"],
            ["wait": api("/api/queue/stats", "j.dead_letters === 0")],
            ["wait": "/purged 2 dead letters/.test(\(text("#dead-message")))"],
        ])
        XCTAssertEqual(try gw.http.json("GET", "/api/queue/stats").json["dead_letters"] as? Int, 0)
    }
}
