import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import Foundation
import XCTest
import ConveyorTransport
import ZeroMQ

/// Real broker, worker and gateway processes on loopback with ephemeral
/// ports, for one test. `tearDown` stops everything it started.
final class Cluster: @unchecked Sendable {
    let directory: URL
    let context = ZMQContext()
    private(set) var processes: [ManagedProcess] = []
    private(set) var clients = ""
    private(set) var workers = ""
    private(set) var events = ""
    private var counter = 0
    /// With CURVE: the key set, the security of `client()` (an admin key) and
    /// the flags every worker gets.
    var keys: KeySet?
    var clientSecurity: SocketProfile.Security = .none
    var workerCurveArgs: [String] = []

    /// The `conveyor` executable built next to this test bundle.
    static var binary: String {
        if let p = ProcessInfo.processInfo.environment["CONVEYOR_BIN"] { return p }
        var dir = Bundle.main.bundleURL
        for b in Bundle.allBundles where b.bundlePath.hasSuffix(".xctest") { dir = b.bundleURL.deletingLastPathComponent() }
        let candidate = dir.appendingPathComponent("conveyor").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".build/debug/conveyor").path
    }

    init(test: String = #function) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("conveyor-it-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    func launch(_ name: String, _ arguments: [String], environment: [String: String] = [:]) throws -> ManagedProcess {
        let p = try ManagedProcess(name: name, executable: Cluster.binary, arguments: arguments, environment: environment, directory: directory)
        processes.append(p)
        return p
    }

    /// Starts a broker on ephemeral ports (memory-only unless `extra` says otherwise).
    /// Reuses the previous endpoints when `reuseEndpoints` (a restart).
    @discardableResult
    func startBroker(_ extra: [String] = [], reuseEndpoints: Bool = false, name: String = "broker") throws -> ManagedProcess {
        let eps = reuseEndpoints ? [clients, workers, events] : ["tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*"]
        var args = ["broker", "--clients", eps[0], "--workers", eps[1], "--events", eps[2],
                    "--heartbeat-interval", "200", "--heartbeat-liveness", "3"]
        if !extra.contains("--durability") { args += ["--durability", "none"] }
        if !extra.contains("--data-dir") { args += ["--data-dir", directory.appendingPathComponent("data").path] }
        counter += 1
        let p = try launch("\(name)-\(counter)", args + extra)
        let line = try p.waitForLine(containing: "conveyor broker ready")
        for part in line.split(separator: " ") {
            if part.hasPrefix("clients=") { clients = String(part.dropFirst(8)) }
            if part.hasPrefix("workers=") { workers = String(part.dropFirst(8)) }
            if part.hasPrefix("events=") { events = String(part.dropFirst(7)) }
        }
        return p
    }

    /// Starts a worker; waits until the broker counts it.
    @discardableResult
    func startWorker(name: String, _ handler: [String] = ["--builtin", "echo"], extra: [String] = [], waitForJoin: Bool = true) throws -> ManagedProcess {
        let before = try stats()["workers_connected"] as? Int ?? 0
        let p = try launch("worker-\(name)", ["worker", "--broker", workers, "--name", name,
                                              "--heartbeat-interval", "200", "--heartbeat-liveness", "3"] + handler + extra
                                              + (extra.contains("--curve-key") ? [] : workerCurveArgs))
        if waitForJoin {
            _ = try eventually("worker \(name) to join") { (try stats()["workers_connected"] as? Int ?? 0) > before ? true : nil }
        }
        return p
    }

    func client() throws -> BrokerClient { try BrokerClient(context: context, endpoint: clients, security: clientSecurity) }

    func client(security: SocketProfile.Security) throws -> BrokerClient {
        try BrokerClient(context: context, endpoint: clients, security: security)
    }

    func stats() throws -> [String: Any] {
        let c = try client()
        defer { c.close() }
        guard case .stats(_, let json) = try c.call(timeoutMs: 5000, { .stats(requestID: $0) }) else { return [:] }
        return (try JSONSerialization.jsonObject(with: Data(json)) as? [String: Any]) ?? [:]
    }

    func status(_ id: TaskID) throws -> [String: Any] {
        let c = try client()
        defer { c.close() }
        guard case .status(_, let json) = try c.call(timeoutMs: 5000, { .status(requestID: $0, id: id) }) else { return [:] }
        return (try JSONSerialization.jsonObject(with: Data(json)) as? [String: Any]) ?? [:]
    }

    /// Waits until a task reaches `state`.
    func waitForState(_ id: TaskID, _ state: String, timeout: TimeInterval = 30) throws {
        _ = try eventually(timeout: timeout, "task \(id) to be \(state) (now \((try? status(id)["state"]) ?? "?"))") {
            (try status(id)["state"] as? String) == state ? true : nil
        }
    }

    /// Runs the CLI to completion; returns (status, stdout, stderr).
    func cli(_ arguments: [String], stdin: String? = nil, timeout: TimeInterval = 60) throws -> (status: Int32, out: String, err: String) {
        counter += 1
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Cluster.binary)
        p.arguments = arguments
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = stdin == nil ? FileHandle.nullDevice : inp
        try p.run()
        if let stdin {
            inp.fileHandleForWriting.write(Data(stdin.utf8))
            try inp.fileHandleForWriting.close()
        }
        let outData = Locked(Data()), errData = Locked(Data())
        let group = DispatchGroup()
        for (pipe, sink) in [(out, outData), (err, errData)] {
            group.enter()
            DispatchQueue.global().async {
                let d = pipe.fileHandleForReading.readDataToEndOfFile()
                sink.set(d)
                group.leave()
            }
        }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        group.wait()
        return (p.terminationStatus, String(decoding: outData.get(), as: UTF8.self), String(decoding: errData.get(), as: UTF8.self))
    }

    /// A SUB socket on the broker's events, subscribed to `topic` and known to
    /// be receiving (it waits for the first stats message to prove the subscription is live).
    func subscribe(_ topics: [String]) throws -> ZMQSocket {
        let sub = try context.socket(.sub)
        try sub.connect(events)
        for t in topics + ["stats"] { try sub.subscribe(t) }
        _ = try eventually("first stats event") { () -> Bool? in
            guard let m = try sub.receive(dontWait: true) else { return nil }
            return m.first == Array("stats".utf8) ? true : nil
        }
        return sub
    }

    func tearDown(failed: Bool) {
        for p in processes.reversed() { p.stop() }
        // A test that fails by throwing is only counted after tearDown, hence the variable.
        if failed || ProcessInfo.processInfo.environment["CONVEYOR_KEEP_TEST_OUTPUT"] != nil {
            print("kept test output in \(directory.path)")
        } else {
            try? FileManager.default.removeItem(at: directory)
        }
    }
}

final class Locked<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func get() -> T { lock.lock(); defer { lock.unlock() }; return value }
    func set(_ v: T) { lock.lock(); value = v; lock.unlock() }
}

/// Base class: a fresh cluster per test, torn down even when the test fails.
class ClusterTestCase: XCTestCase {
    var cluster: Cluster!

    override func setUpWithError() throws {
        cluster = try Cluster()
    }

    override func tearDown() {
        cluster?.tearDown(failed: (testRun?.failureCount ?? 0) > 0)
        cluster = nil
        super.tearDown()
    }

    func submit(_ client: BrokerClient, type: String = "t", priority: Priority = .normal, payload: String = "",
                options: (inout TaskSpec) -> Void = { _ in }) throws -> TaskID {
        var spec = TaskSpec(type: type, priority: priority, payload: Array(payload.utf8))
        options(&spec)
        let reply = try client.call { .submit(requestID: $0, spec: spec) }
        guard case .accepted(_, let id, _, _) = reply else {
            throw TimedOut(description: "submission not accepted: \(reply)")
        }
        return id
    }
}
