import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Issue 7, the journal's part, with real broker processes: a clean stop
/// leaves one self-contained file; a journal that went backwards (truncated,
/// -wal deleted or cut after a kill -9, an old backup restored) is refused
/// with a message saying what is missing, and accepted with
/// --accept-journal-loss; a full or read-only file system degrades the
/// broker (storage_unavailable) instead of stopping it, and service resumes
/// by itself with nothing acknowledged lost.
final class JournalIntegrityTests: ClusterTestCase {
    // MARK: Helpers

    /// Starts a broker on the cluster's data directory that must refuse to
    /// start; returns its exit status and stderr.
    private func refusedStart(environment: [String: String] = [:]) throws -> (status: Int32?, stderr: String) {
        let p = try cluster.launch("refused-broker-\(UUID().uuidString.prefix(4))", [
            "broker", "--clients", "tcp://127.0.0.1:*", "--workers", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
            "--durability", "fsync", "--data-dir", cluster.dataDirectory,
        ], environment: environment)
        let status = p.waitForExit(timeout: 20)
        XCTAssertFalse(p.stdout.contains("conveyor broker ready"), "a refused broker must not bind")
        return (status, p.stderr)
    }

    private func submitMany(_ n: Int, _ label: String) throws -> [TaskID] {
        let c = try cluster.client()
        defer { c.close() }
        return try (0..<n).map { try submit(c, payload: "\(label) \($0)") }
    }

    private func stopCleanly(_ p: ManagedProcess) {
        p.signal(SIGTERM)
        XCTAssertEqual(p.waitForExit(timeout: 20), 0, "a clean stop exits 0\n\(p.stderr.suffix(1500))")
    }

    private var walPath: String { cluster.journalPath + "-wal" }

    private func fileSize(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1 }

    /// `conveyor journal check FILE --json`.
    private func check(_ file: String) throws -> (status: Int32, json: [String: Any]) {
        let r = try cluster.cli(["journal", "check", file, "--json"])
        return (r.status, (try? JSONSerialization.jsonObject(with: Data(r.out.utf8))) as? [String: Any] ?? ["unparsed": r.out + r.err])
    }

    // MARK: A clean stop

    func testCleanStopLeavesOneSelfContainedFile() throws {
        let broker = try cluster.startDurableBroker(["--max-queue", "1000"])
        let ids = try submitMany(300, "task")
        XCTAssertGreaterThan(fileSize(walPath), 0, "the tasks are in the -wal while the broker runs")
        stopCleanly(broker)
        XCTAssertLessThanOrEqual(max(0, fileSize(walPath)), 0, "the -wal is folded in and truncated (or gone)")

        // Only the main file, copied elsewhere.
        let copyDir = cluster.directory.appendingPathComponent("copy").path
        try FileManager.default.createDirectory(atPath: copyDir, withIntermediateDirectories: true)
        let copy = copyDir + "/conveyor-journal.sqlite"
        try FileManager.default.copyItem(atPath: cluster.journalPath, toPath: copy)
        let c = try check(copy)
        XCTAssertEqual(c.status, 0, "\(c.json)")
        XCTAssertEqual((c.json["by_state"] as? [String: Int])?["queued"], 300, "\(c.json)")
        XCTAssertEqual(c.json["last_task_id"] as? String, ids.last?.description)

        // And a broker on that copy alone answers for every one of them.
        try cluster.startBroker(["--durability", "fsync", "--data-dir", copyDir, "--max-queue", "1000"])
        let st = try cluster.statuses(ids)
        XCTAssertEqual(Set(st.values.map { $0["state"] as? String ?? "?" }), ["queued"])
        XCTAssertEqual(st.count, 300)
    }

    /// The mark must never refuse a legitimate restart.
    func testRestartsAfterCleanStopsAndKill9AreNotRefused() throws {
        for mode in ["fsync", "batch"] {
            var broker = try cluster.startDurableBroker(durability: mode, restart: mode != "fsync")
            var ids = try submitMany(20, "\(mode) a")
            stopCleanly(broker)
            broker = try cluster.startDurableBroker(durability: mode, restart: true)
            ids += try submitMany(20, "\(mode) b")
            broker.kill9()
            broker = try cluster.startDurableBroker(durability: mode, restart: true)
            XCTAssertFalse(broker.stderr.contains("JOURNAL LOSS"), broker.stderr)
            let st = try cluster.statuses(ids)
            XCTAssertEqual(st.values.filter { $0["state"] as? String == "queued" }.count, ids.count, "\(mode): every acknowledged task is back")
            stopCleanly(broker)
        }
    }

    // MARK: A journal that went backwards

    func testJournalTruncatedToZeroIsRefusedThenAccepted() throws {
        let broker = try cluster.startDurableBroker()
        let ids = try submitMany(10, "task")
        stopCleanly(broker)
        XCTAssertEqual(truncate(cluster.journalPath, 0), 0)

        let refused = try refusedStart()
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("went backwards") && refused.stderr.contains("it is empty"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains(ids[9].description), "names the last acknowledged task: \(refused.stderr)")
        XCTAssertTrue(refused.stderr.contains("--accept-journal-loss"), "says how to proceed: \(refused.stderr)")
        XCTAssertEqual(fileSize(cluster.journalPath), 0, "a refused journal is left as it was")

        let accepted = try cluster.startDurableBroker(["--accept-journal-loss"], restart: true)
        XCTAssertTrue(accepted.stderr.contains("JOURNAL LOSS ACCEPTED"), accepted.stderr)
        XCTAssertEqual(Set(try cluster.statuses(ids).values.map { $0["state"] as? String ?? "?" }), ["not_found"])
        let fresh = try submitMany(1, "after")[0]
        XCTAssertGreaterThan(fresh, ids[9], "ids continue after the mark: an acknowledged id is never handed out again")
        stopCleanly(accepted)
        // The mark was reset: the next start needs no flag.
        let next = try cluster.startDurableBroker(restart: true)
        XCTAssertEqual(try cluster.status(fresh)["state"] as? String, "queued")
        XCTAssertFalse(next.stderr.contains("JOURNAL LOSS"))
    }

    func testWALDeletedAfterKill9IsRefusedThenAccepted() throws {
        var broker = try cluster.startDurableBroker()
        let before = try submitMany(5, "before")
        stopCleanly(broker) // the main file now holds these
        broker = try cluster.startDurableBroker(restart: true)
        let after = try submitMany(5, "after")
        broker.kill9()
        XCTAssertGreaterThan(fileSize(walPath), 0)
        try FileManager.default.removeItem(atPath: walPath)
        try? FileManager.default.removeItem(atPath: cluster.journalPath + "-shm")

        let refused = try refusedStart()
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("ends at task \(before[4])"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains(after[4].description) && refused.stderr.contains("-wal"), refused.stderr)
        XCTAssertNotEqual(try check(cluster.journalPath).status, 0, "journal check agrees")

        // The environment variable, as a supervisor would pass it.
        let accepted = try refusedStartAccepted(environment: ["CONVEYOR_ACCEPT_JOURNAL_LOSS": "1"])
        defer { accepted.client.close() }
        XCTAssertTrue(accepted.process.stderr.contains("JOURNAL LOSS ACCEPTED"), accepted.process.stderr)
        for id in before { XCTAssertEqual(try state(accepted.client, id), "queued") }
        for id in after { XCTAssertEqual(try state(accepted.client, id), "not_found") }
    }

    func testWALTruncatedAfterKill9IsRefusedThenAccepted() throws {
        var broker = try cluster.startDurableBroker()
        let before = try submitMany(5, "before")
        stopCleanly(broker)
        broker = try cluster.startDurableBroker(restart: true)
        let after = try submitMany(20, "after")
        broker.kill9()
        let size = fileSize(walPath)
        XCTAssertGreaterThan(size, 4096)
        XCTAssertEqual(truncate(walPath, off_t(size / 2)), 0)

        let refused = try refusedStart()
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("went backwards") && refused.stderr.contains(after[19].description), refused.stderr)

        try cluster.startDurableBroker(["--accept-journal-loss"], restart: true)
        let st = try cluster.statuses(before + after)
        for id in before { XCTAssertEqual(st[id]?["state"] as? String, "queued") }
        XCTAssertEqual(st[after[19]]?["state"] as? String, "not_found", "the cut-off tail is gone")
        // What survived is a prefix: submission order, nothing out of place.
        let kept = after.map { st[$0]?["state"] as? String == "queued" }
        XCTAssertEqual(kept, kept.sorted { $0 && !$1 }, "a prefix of the tasks survives: \(kept)")
    }

    func testOldBackupRestoredIsRefusedThenAccepted() throws {
        let broker = try cluster.startDurableBroker()
        let early = try submitMany(5, "early")
        let backup = cluster.directory.appendingPathComponent("backup.sqlite").path
        // Online, while the broker runs.
        let b = try cluster.cli(["journal", "backup", backup, "--data-dir", cluster.dataDirectory])
        XCTAssertEqual(b.status, 0, b.err)
        XCTAssertTrue(b.out.contains(": ok") && b.out.contains("queued 5"), b.out)
        let c = try check(backup)
        XCTAssertEqual(c.status, 0, "\(c.json)")
        XCTAssertEqual(c.json["tasks"] as? Int, 5)
        let late = try submitMany(5, "late")
        stopCleanly(broker)

        // The operator restores last night's backup.
        try FileManager.default.removeItem(atPath: cluster.journalPath)
        try FileManager.default.copyItem(atPath: backup, toPath: cluster.journalPath)
        let refused = try refusedStart()
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("ends at task \(early[4])") && refused.stderr.contains(late[4].description), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("older copy was restored"), refused.stderr)

        try cluster.startDurableBroker(["--accept-journal-loss"], restart: true)
        let st = try cluster.statuses(early + late)
        for id in early { XCTAssertEqual(st[id]?["state"] as? String, "queued") }
        for id in late { XCTAssertEqual(st[id]?["state"] as? String, "not_found") }
    }

    /// A broker started with an environment (not the Cluster's own helpers,
    /// which take flags): its process and a client on its client endpoint.
    private func refusedStartAccepted(environment: [String: String]) throws -> (process: ManagedProcess, client: BrokerClient) {
        let p = try cluster.launch("accepting-broker", [
            "broker", "--clients", "tcp://127.0.0.1:*", "--workers", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
            "--durability", "fsync", "--data-dir", cluster.dataDirectory,
        ], environment: environment)
        let line = try p.waitForLine(containing: "conveyor broker ready")
        guard let ep = line.split(separator: " ").first(where: { $0.hasPrefix("clients=") }).map({ String($0.dropFirst(8)) }) else {
            throw TimedOut(description: "no clients endpoint in '\(line)'")
        }
        return (p, try BrokerClient(context: cluster.context, endpoint: ep))
    }

    /// The next reply to a request on `c`, skipping unsolicited PROGRESS and FINISHED; nil after `timeoutMs`.
    private func nextReply(_ c: BrokerClient, timeoutMs: Int) throws -> ClientReply? {
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        while true {
            let left = Int(deadline.timeIntervalSinceNow * 1000)
            guard left > 0, let r = try c.receive(timeoutMs: left) else { return nil }
            switch r {
            case .progress, .finished: continue
            default: return r
            }
        }
    }

    private func state(_ c: BrokerClient, _ id: TaskID) throws -> String {
        switch try c.call(timeoutMs: 5000, { .status(requestID: $0, id: id) }) {
        case .status(_, let json): return ((try? JSONSerialization.jsonObject(with: Data(json))) as? [String: Any])?["state"] as? String ?? "?"
        case .error(_, let code, _): return code
        case let other: return "\(other)"
        }
    }

    // MARK: Storage trouble

    /// A small tmpfs the test mounts (this needs CAP_SYS_ADMIN); skipped with a message where mounting is not permitted.
    private func mountSmallFileSystem(megabytes: Int) throws -> String {
        let dir = cluster.directory.appendingPathComponent("small").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let m = try run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m,mode=0755", "tmpfs", dir])
        guard m.status == 0 else {
            throw XCTSkip("cannot mount a small tmpfs for the disk-full test (uid \(getuid()), needs CAP_SYS_ADMIN): \(m.output)")
        }
        mounted.append(dir)
        return dir
    }

    private var mounted: [String] = []

    override func tearDown() {
        // Stop what holds files there before unmounting; the base class then stops the rest.
        if !mounted.isEmpty { for p in cluster?.processes.reversed() ?? [] { p.stop() } }
        for dir in mounted.reversed() {
            if (try? run("/bin/umount", [dir]).status) != 0 { _ = try? run("/bin/umount", ["-l", dir]) }
        }
        mounted.removeAll()
        super.tearDown()
    }

    private func run(_ tool: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out, as: UTF8.self))
    }

    /// Writes `path` until the file system says ENOSPC; returns the bytes written.
    @discardableResult
    private func fill(_ path: String) throws -> Int {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw TimedOut(description: "cannot create \(path)") }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x46, count: 4096)
        var total = 0
        while true {
            let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n > 0 { total += n; continue }
            if errno == EINTR { continue }
            guard errno == ENOSPC else { throw TimedOut(description: "filling \(path): \(String(cString: strerror(errno)))") }
            return total
        }
    }

    func testDiskFullDegradesThenServiceResumesWithNothingLost() throws {
        let small = try mountSmallFileSystem(megabytes: 8)
        let data = small + "/data"
        var broker = try cluster.startBroker(["--durability", "fsync", "--data-dir", data, "--max-queue", "10000"])
        try cluster.startWorker(name: "echo")
        let gw = try cluster.startGateway()
        let client = try cluster.client()
        defer { client.close() }
        var acked = try (0..<5).map { try submit(client, payload: "before \($0)") }
        _ = try cluster.waitUntilAllFinal(acked)

        let filler = small + "/filler"
        try fill(filler)
        // This submission's commit fails: its ACCEPTED must not be sent as success.
        let pendingID = client.nextRequestID()
        try client.send(.submit(requestID: pendingID, spec: TaskSpec(type: "t", payload: [UInt8](repeating: 0x41, count: 32 * 1024))))
        let degraded = try eventually("stats to report storage_degraded") { () -> [String: Any]? in
            let s = try cluster.stats()
            return s["storage_degraded"] as? Bool == true ? s : nil
        }
        XCTAssertTrue((degraded["storage_error"] as? String ?? "").contains("full"), "\(degraded["storage_error"] ?? "nil")")
        XCTAssertNil(try nextReply(client, timeoutMs: 500), "nothing is acknowledged while it is not committed")
        XCTAssertTrue(broker.isRunning)
        try broker.waitForLog("journal commit failed")

        // Changes are refused, with their own code …
        let other = try cluster.client()
        defer { other.close() }
        let refused = try other.call { .submit(requestID: $0, spec: TaskSpec(type: "t", payload: Array("during".utf8))) }
        guard case .rejected(_, let code, let message) = refused else { return XCTFail("expected REJECTED, got \(refused)") }
        XCTAssertEqual(code, "storage_unavailable", message)
        let cancel = try other.call { .cancel(requestID: $0, id: acked[0]) }
        guard case .error(_, "storage_unavailable", _) = cancel else { return XCTFail("cancel while degraded: \(cancel)") }
        // … reads still work …
        XCTAssertEqual(Set(try cluster.statuses(acked).values.map { $0["state"] as? String ?? "?" }), ["succeeded"])
        guard case .tasks = try other.call({ .tasks(requestID: $0, limit: 10) }) else { return XCTFail("TASKS while degraded") }
        guard case .dead = try other.call({ .dead(requestID: $0, action: .list(limit: 10)) }) else { return XCTFail("DEAD list while degraded") }
        // … and the gateway says so: 503 with Retry-After, /healthz degraded.
        let post = try gw.http.json("POST", "/api/tasks", json: #"{"type":"t","payload":"x"}"#)
        XCTAssertEqual(post.status, 503, post.text)
        XCTAssertEqual(post.json["error_type"] as? String, "storage_unavailable", post.text)
        XCTAssertNotNil(post.headers["retry-after"], "\(post.headers)")
        let health = try gw.http.json("GET", "/healthz")
        XCTAssertEqual(health.json["status"] as? String, "degraded", health.text)
        XCTAssertEqual(health.json["storage_degraded"] as? Bool, true, health.text)

        // Space comes back: the retried commit goes through by itself, the held ACCEPTED with it.
        try FileManager.default.removeItem(atPath: filler)
        let reply = try eventually(timeout: 20, "the held ACCEPTED after space returns") { try nextReply(client, timeoutMs: 200) }
        guard case .accepted(let rid, let pendingTask, _, _) = reply else { return XCTFail("expected ACCEPTED, got \(reply)") }
        XCTAssertEqual(rid, pendingID)
        acked.append(pendingTask)
        try broker.waitForLog("journal writable again")
        XCTAssertEqual(try cluster.stats()["storage_degraded"] as? Bool, false)
        XCTAssertEqual(try gw.http.json("GET", "/healthz").json["status"] as? String, "ok")
        acked.append(try submit(other, payload: "after"))
        _ = try cluster.waitUntilAllFinal(acked)

        // Nothing acknowledged is lost: all of it is in the journal after a restart.
        stopCleanly(broker)
        broker = try cluster.startBroker(["--durability", "fsync", "--data-dir", data, "--max-queue", "10000"], reuseEndpoints: true)
        let back = try cluster.statuses(acked)
        XCTAssertEqual(Set(back.values.map { $0["state"] as? String ?? "?" }), ["succeeded"], "\(back)")
    }
}
