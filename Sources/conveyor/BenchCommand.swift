import ArgumentParser
import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import Foundation
import Histogram
import ConveyorTransport
import ZeroMQ

/// Benchmarks with real processes on loopback: a broker and workers started
/// as children of this command, one client in this process. Every phase is
/// bounded in count and in time. Build with `-c release` for real figures.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure end-to-end throughput, dispatch latency and broker memory per queued task."
    )

    enum Phase: String, ExpressibleByArgument, CaseIterable { case throughput, latency, memory, all }

    @Option(help: "throughput, latency, memory or all.") var phase: Phase = .all
    @Option(help: "No-op tasks for the throughput phase.") var tasks = 200_000
    @Option(help: "Tasks in flight at once in the throughput phase.") var window = 4000
    @Option(help: "Worker processes.") var workers = 2
    @Option(help: "Concurrency of each worker.") var workerConcurrency = 16
    @Option(help: "Submissions per second in the latency phase.") var rate = 1000
    @Option(help: "Seconds of the latency phase.") var seconds = 10
    @Option(help: "Queued tasks in the memory phase.") var memoryTasks = 1_000_000
    @Option(help: "Broker durability for the throughput phase: none, batch or fsync.") var durability = "none"
    @Option(help: "Give up on any phase after this many seconds.") var limit = 300
    @Option(help: "Task types to spread the tasks over, round robin (noop0, noop1, …; 1 = the single type noop).") var types = 1
    @Option(help: "Throughput phase: measure, then submit and cancel this many distinct task types (junk0, junk1, …), then measure again on the same broker.")
    var junkTypes = 0
    @Option(help: "Extra broker flag, e.g. --broker-arg=--aging=60 (repeatable).") var brokerArg: [String] = []
    @Flag(help: "Run every connection with CURVE (a throwaway key set), to compare with plaintext.") var curve = false

    func run() throws {
        let runner = try BenchRunner(workers: workers, concurrency: workerConcurrency, limitSeconds: limit,
                                     types: max(1, types), brokerArgs: brokerArg, curve: curve)
        defer { runner.stopAll() }
        emit("conveyor bench: \(workers) workers x \(workerConcurrency), libzmq \(ZMQContext.version), \(ProcessInfo.processInfo.activeProcessorCount) cores"
             + (types > 1 ? ", \(types) task types" : "") + (curve ? ", CURVE" : "") + (brokerArg.isEmpty ? "" : ", broker \(brokerArg.joined(separator: " "))"))
        if phase == .throughput || phase == .all { try runner.throughput(tasks: tasks, window: window, durability: durability, junkTypes: junkTypes) }
        if phase == .latency || phase == .all { try runner.latency(rate: rate, seconds: seconds) }
        if phase == .memory || phase == .all { try runner.memory(tasks: memoryTasks) }
    }
}

final class BenchRunner {
    let binary: String
    let workers: Int
    let concurrency: Int
    let limit: Double
    let context = ZMQContext()
    let scratch: URL
    private var children: [Process] = []

    let types: Int
    let brokerArgs: [String]

    /// The type of the n-th task: round robin over `types`.
    func type(_ n: Int) -> String { types == 1 ? "noop" : "noop\(n % types)" }

    /// With CURVE: the key directory and the client's keys.
    private var curveDir: String?
    private var clientSecurity: SocketProfile.Security = .none

    init(workers: Int, concurrency: Int, limitSeconds: Int, types: Int = 1, brokerArgs: [String] = [], curve: Bool = false) throws {
        self.types = types
        self.brokerArgs = brokerArgs
        binary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        self.workers = workers
        self.concurrency = concurrency
        limit = Double(limitSeconds)
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("conveyor-bench-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        if curve {
            let dir = scratch.appendingPathComponent("keys").path
            _ = try CurveCertificate.generate().write(name: "broker", directory: dir)
            let client = try CurveCertificate.generate()
            _ = try client.write(name: "bench-client", directory: dir + "/own")
            _ = try CurveCertificate(publicKey: client.publicKey, secretKey: nil).writePublic(name: "bench-client", directory: dir + "/admins")
            let worker = try CurveCertificate.generate()
            _ = try worker.write(name: "bench-worker", directory: dir + "/own")
            _ = try CurveCertificate(publicKey: worker.publicKey, secretKey: nil).writePublic(name: "bench-worker", directory: dir + "/workers")
            curveDir = dir
            let server = try CurveCertificate.load(dir + "/broker.key")
            clientSecurity = .curveClient(publicKey: client.publicKey, secretKey: client.secretKey ?? "", serverKey: server.publicKey)
        }
    }

    func client(_ endpoint: String) throws -> BrokerClient {
        try BrokerClient(context: context, endpoint: endpoint, security: clientSecurity)
    }

    struct Broker {
        let process: Process
        let clients: String
        let workers: String
    }

    func startBroker(_ extra: [String]) throws -> Broker {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["broker", "--clients", "tcp://127.0.0.1:*", "--workers", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
                       "--log-level", "warning", "--max-queue", "2000000", "--max-running", "100000"] + extra + brokerArgs
            + (curveDir.map { ["--curve-dir", $0] } ?? [])
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        children.append(p)
        var line = Data()
        let deadline = Date().addingTimeInterval(30)
        while !line.contains(UInt8(ascii: "\n")) && Date() < deadline {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self)
        func field(_ name: String) throws -> String {
            guard let part = text.split(separator: " ").first(where: { $0.hasPrefix(name + "=") }) else {
                throw ValidationError("broker did not start: \(text)")
            }
            return String(part.dropFirst(name.count + 1)).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return Broker(process: p, clients: try field("clients"), workers: try field("workers"))
    }

    func startWorkers(_ b: Broker) throws {
        for i in 0..<workers {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = ["worker", "--broker", b.workers, "--name", "bench-\(i)", "--builtin", "noop",
                           "--concurrency", "\(concurrency)", "--log-level", "warning"]
                + (curveDir.map { ["--curve-key", $0 + "/own/bench-worker.key_secret", "--curve-server-key", $0 + "/broker.key"] } ?? [])
            try p.run()
            children.append(p)
        }
        let c = try client(b.clients)
        defer { c.close() }
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if case .stats(_, let j) = try c.call({ .stats(requestID: $0) }),
               let o = try JSONSerialization.jsonObject(with: Data(j)) as? [String: Any], (o["workers_connected"] as? Int) == workers { return }
            usleep(50_000)
        }
        throw ValidationError("workers did not register within 30 s")
    }

    func stop(_ b: Broker) {
        for p in children where p.isRunning { p.terminate() }
        for p in children { p.waitUntilExit() }
        children.removeAll()
    }

    func stopAll() {
        for p in children where p.isRunning { p.terminate() }
        for p in children { p.waitUntilExit() }
        try? FileManager.default.removeItem(at: scratch)
    }

    func stats(_ c: BrokerClient) throws -> [String: Any] {
        guard case .stats(_, let j) = try c.call({ .stats(requestID: $0) }) else { return [:] }
        return (try JSONSerialization.jsonObject(with: Data(j)) as? [String: Any]) ?? [:]
    }

    // MARK: Phases

    /// Pipelined no-op tasks: submit → worker → FINISHED back at the client.
    /// With `junkTypes`, the same broker is measured again after that many
    /// distinct types have been submitted and cancelled (dispatch cost must
    /// not depend on types that came and went).
    func throughput(tasks: Int, window: Int, durability: String, junkTypes: Int = 0) throws {
        let dir = scratch.appendingPathComponent("data-\(durability)").path
        let b = try startBroker(["--durability", durability, "--data-dir", dir])
        defer { stop(b) }
        try startWorkers(b)
        let c = try client(b.clients)
        defer { c.close() }
        let fresh = try measureThroughput(c, tasks: tasks, window: window, label: durability)
        guard junkTypes > 0 else { return }
        let rssBefore = rssBytes(b.process.processIdentifier)
        let junkStart = Date()
        let cancelled = try submitAndCancelJunk(c, count: junkTypes)
        let junkSecs = Date().timeIntervalSince(junkStart)
        let rssJunk = rssBytes(b.process.processIdentifier)
        let after = try measureThroughput(c, tasks: tasks, window: window, label: "\(durability), after \(junkTypes) junk types")
        emit(String(format: "junk types: %d distinct types submitted and cancelled (%d cancelled) in %.2f s; broker RSS %.1f -> %.1f MiB; "
                    + "throughput after them %.0f vs %.0f tasks/s fresh = %.1f%%",
                    junkTypes, cancelled, junkSecs, Double(rssBefore) / 1_048_576, Double(rssJunk) / 1_048_576,
                    after, fresh, 100 * after / max(1, fresh)))
    }

    /// Returns tasks per second.
    private func measureThroughput(_ c: BrokerClient, tasks: Int, window: Int, label: String) throws -> Double {
        let specs = (0..<types).map { TaskSpec(type: type($0), priority: .normal) }
        var submitted = 0, finished = 0, rejected = 0
        let start = Date()
        let deadline = start.addingTimeInterval(limit)
        while finished + rejected < tasks && Date() < deadline {
            while submitted < tasks && submitted - finished - rejected < window {
                try c.send(.submit(requestID: [], spec: specs[submitted % types]))
                submitted += 1
            }
            guard let r = try c.receive(timeoutMs: 1000) else { continue }
            switch r {
            case .finished: finished += 1
            case .rejected: rejected += 1
            default: break
            }
        }
        let secs = Date().timeIntervalSince(start)
        let s = try stats(c)
        emit(String(format: "throughput[%@]: %d tasks end to end in %.2f s = %.0f tasks/s (rejected %d, broker dispatch p50 %@ ms p99 %@ ms)",
                    label, finished, secs, Double(finished) / secs, rejected,
                    "\((s["dispatch_latency_ms"] as? [String: Any])?["p50"] ?? "?")", "\((s["dispatch_latency_ms"] as? [String: Any])?["p99"] ?? "?")"))
        return Double(finished) / secs
    }

    /// Pipelined: SUBMIT a task of type `junkN`, CANCEL it once ACCEPTED; at
    /// most `window` types are in flight, far under the broker's `--max-types`.
    /// (A worker may start one before its cancel arrives; it is cancelled running.)
    private func submitAndCancelJunk(_ c: BrokerClient, count: Int, window: Int = 1000) throws -> Int {
        defer { try? drainUntilPong(c) }
        var sent = 0, pending = 0, cancelled = 0
        let deadline = Date().addingTimeInterval(limit)
        while (sent < count || pending > 0) && Date() < deadline {
            while sent < count && pending < window {
                try c.send(.submit(requestID: [], spec: TaskSpec(type: "junk\(sent)", priority: Priority(rawValue: UInt8(sent % 4)) ?? .normal)))
                sent += 1
                pending += 1
            }
            guard let r = try c.receive(timeoutMs: 1000) else { continue }
            switch r {
            case .accepted(_, let id, _, _): try c.send(.cancel(requestID: [], id: id))
            case .rejected: pending -= 1
            case .cancelled: pending -= 1; cancelled += 1
            case .error: pending -= 1
            default: break
            }
        }
        return cancelled
    }

    /// Reads (and drops) what is still coming — the FINISHED of cancelled
    /// tasks follows their CANCELLED reply — until the answer to a PING.
    private func drainUntilPong(_ c: BrokerClient) throws {
        let rid = c.nextRequestID()
        try c.send(.ping(requestID: rid))
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if case .pong(let r)? = try c.receive(timeoutMs: 1000), r == rid { return }
        }
    }

    /// A fixed, moderate rate: dispatch latency as the broker measures it and
    /// end-to-end latency as the client sees it.
    func latency(rate: Int, seconds: Int) throws {
        let b = try startBroker(["--durability", "none"])
        defer { stop(b) }
        try startWorkers(b)
        let c = try client(b.clients)
        defer { c.close() }
        var e2e = Histogram<UInt64>(numberOfSignificantValueDigits: .three)
        let total = rate * seconds
        let interval = 1.0 / Double(rate)
        var sentAt: [TaskID: UInt64] = [:]
        var pendingSubmits: [[UInt8]: UInt64] = [:]
        var sent = 0, done = 0
        let start = Date()
        let deadline = start.addingTimeInterval(Double(seconds) + limit)
        while done < total && Date() < deadline {
            let due = start.addingTimeInterval(Double(sent) * interval)
            if sent < total && Date() >= due {
                let rid = c.nextRequestID()
                pendingSubmits[rid] = monoNs()
                try c.send(.submit(requestID: rid, spec: TaskSpec(type: type(Int(sent)))))
                sent += 1
                continue
            }
            let waitMs = sent < total ? max(0, Int(due.timeIntervalSinceNow * 1000)) : 1000
            guard let r = try c.receive(timeoutMs: waitMs) else { continue }
            switch r {
            case .accepted(let rid, let id, _, _):
                if let t = pendingSubmits.removeValue(forKey: rid) { sentAt[id] = t }
            case .finished(let id, _, _):
                if let t = sentAt.removeValue(forKey: id) { _ = e2e.record((monoNs() - t) / 1000) }
                done += 1
            default: break
            }
        }
        let s = try stats(c)
        let d = s["dispatch_latency_ms"] as? [String: Any] ?? [:]
        emit("latency at \(rate)/s for \(seconds) s: broker dispatch p50 \(d["p50"] ?? "?") ms, p99 \(d["p99"] ?? "?") ms, max \(d["max"] ?? "?") ms (\(d["count"] ?? "?") tasks)")
        emit(String(format: "latency at %d/s: end to end (submit -> FINISHED at client) p50 %.3f ms, p99 %.3f ms, max %.3f ms",
                    rate, Double(e2e.valueAtPercentile(50)) / 1000, Double(e2e.valueAtPercentile(99)) / 1000, Double(e2e.max) / 1000))
    }

    /// Broker RSS growth for `tasks` queued no-op tasks with empty payloads.
    func memory(tasks: Int) throws {
        let b = try startBroker(["--durability", "none"])
        defer { stop(b) }
        let c = try client(b.clients)
        defer { c.close() }
        _ = try stats(c)
        let before = rssBytes(b.process.processIdentifier)
        var sent = 0, acked = 0
        let deadline = Date().addingTimeInterval(limit)
        while acked < tasks && Date() < deadline {
            while sent < tasks && sent - acked < 5000 {
                try c.send(.submit(requestID: [], spec: TaskSpec(type: "noop", priority: Priority(rawValue: UInt8(sent % 4)) ?? .normal)))
                sent += 1
            }
            if let r = try c.receive(timeoutMs: 1000), case .accepted = r { acked += 1 }
        }
        let queued = try stats(c)["queue_size"] as? Int ?? 0
        let after = rssBytes(b.process.processIdentifier)
        emit(String(format: "memory: %d queued tasks, broker RSS %.1f MiB -> %.1f MiB = %.0f bytes per queued task",
                    queued, Double(before) / 1_048_576, Double(after) / 1_048_576, Double(after - before) / Double(max(1, queued))))
    }
}

func rssBytes(_ pid: Int32) -> Int {
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
    }
    return 0
}

func monoNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
