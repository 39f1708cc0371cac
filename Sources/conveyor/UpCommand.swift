import ArgumentParser
import ConveyorTransport
import ConveyorClient
import ConveyorOps
import ConveyorProtocol
import Foundation
import ZeroMQ

/// Why: the embedded default — the whole system (broker, gateway, a worker
/// pool per task type) in one command that stays up: `Supervisor` restarts a
/// child that dies, with backoff, while the others keep serving, and stops
/// everything in order on Ctrl-C or SIGTERM. This type only decides *what*
/// runs (endpoints, handlers, pools) and when the system counts as ready.
struct UpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Run a broker, the HTTP gateway and worker pools as supervised children (Ctrl-C stops all).",
        discussion: """
        Workers: by default one pool per task type with the real handlers — types document, pdf and youtube \
        run `python3 DIR/document.py` (pdf.py, youtube.py) — where DIR is --handlers, else \
        CONVEYOR_HANDLERS_DIR, else the first ops/handlers directory found walking up from the conveyor \
        binary's directory. A missing directory (or no python3) falls back to the demo workers with a warning. \
        --exec CMD runs one pool of --workers workers that take every type with CMD; --demo runs the demo \
        (progress reports, then the payload echoed).

        Once every child is ready it prints one line 'conveyor up ready gateway=http://HOST:PORT clients=EP \
        workers=EP events=EP', the dashboard URL and a curl command that submits a task. Port * (or 0) in an \
        endpoint or --http-port picks a free port; the ports chosen are kept across restarts. A child that \
        exits is restarted after 1 s, doubling to 30 s, back to 1 s after 60 s up; each restart is logged \
        with its exit status or signal. Output lines are prefixed with the child's name ([worker-1] …). \
        Ctrl-C or SIGTERM stops the gateway, then the workers, then the broker (SIGTERM, 10 s grace, then \
        SIGKILL) and exits 0; a second Ctrl-C kills everything at once (exit 130).
        """
    )

    @Option(help: "Workers per pool, 1-64 (env CONVEYOR_UP_WORKERS, default 2).") var workers: Int?
    @Option(help: "Directory with document.py, pdf.py, youtube.py (env CONVEYOR_HANDLERS_DIR; default: ops/handlers above the binary).")
    var handlers: String?
    @Option(help: "One pool for every task type running this shell command per task, instead of the handlers.") var exec: String?
    @Flag(help: "Run the demo workers (report progress, echo the payload) instead of the handlers.") var demo = false
    @Option(help: "Journal directory (env CONVEYOR_DATA_DIR, default ./data).") var dataDir: String?
    @Option(help: "Broker client endpoint (env CONVEYOR_CLIENTS_ENDPOINT, default tcp://127.0.0.1:5555).") var clients: String?
    @Option(name: .customLong("workers-endpoint"), help: "Broker worker endpoint (env CONVEYOR_WORKERS_ENDPOINT, default tcp://127.0.0.1:5556).")
    var workersEndpoint: String?
    @Option(help: "Broker event endpoint (env CONVEYOR_EVENTS_ENDPOINT, default tcp://127.0.0.1:5557).") var events: String?
    @Option(help: "Gateway listen address (env CONVEYOR_GATEWAY_HOST, default 127.0.0.1).") var httpHost: String?
    @Option(help: "Gateway port, 0-65535, * or 0 = a free one (env CONVEYOR_GATEWAY_PORT, default 8001).") var httpPort: String?
    @Option(help: ArgumentHelp("Old name of --http-port.", visibility: .hidden)) var port: Int?
    @Option(help: "The gateway republishes events here, 'off' for none (env CONVEYOR_EVENTS_OUT, default tcp://127.0.0.1:5558).")
    var eventsOut: String?
    @Flag(help: "Do not start the HTTP gateway.") var noGateway = false
    @Flag(help: "Run the ZeroMQ side in plaintext instead of CURVE with the key set in DATA_DIR/keys.") var noCurve = false

    static let demoCommand = "echo \"10 started $TASK_TYPE\" >&3; sleep 1; echo \"60 working\" >&3; sleep 1; printf 'processed %s: ' \"$TASK_TYPE\"; cat"
    static let handlerTypes = ["document", "pdf", "youtube"]

    /// One group of identical workers.
    struct Pool {
        let prefix: String
        let types: String?
        let command: String
    }

    func run() throws {
        let count = try setting(workers, "CONVEYOR_UP_WORKERS", 2, range: 1...64)
        let clientsEP = try validateEndpoint(clients ?? env("CONVEYOR_CLIENTS_ENDPOINT") ?? "tcp://127.0.0.1:5555", "--clients")
        let workersEP = try validateEndpoint(workersEndpoint ?? env("CONVEYOR_WORKERS_ENDPOINT") ?? "tcp://127.0.0.1:5556", "--workers-endpoint")
        let eventsEP = try validateEndpoint(events ?? env("CONVEYOR_EVENTS_ENDPOINT") ?? "tcp://127.0.0.1:5557", "--events")
        let host = httpHost ?? env("CONVEYOR_GATEWAY_HOST") ?? "127.0.0.1"
        let portText = httpPort ?? port.map(String.init) ?? env("CONVEYOR_GATEWAY_PORT") ?? "8001"
        guard let httpPortNumber = portText == "*" ? 0 : Int(portText), (0...65535).contains(httpPortNumber) else {
            throw ValidationError("--http-port must be 0-65535 or *, got '\(portText)'")
        }
        let outText = eventsOut ?? env("CONVEYOR_EVENTS_OUT") ?? "tcp://127.0.0.1:5558"
        let eventsOutEP = outText == "off" ? nil : try validateEndpoint(outText, "--events-out")
        let dataDirectory = dataDir ?? env("CONVEYOR_DATA_DIR") ?? "./data"
        if demo && exec != nil { throw ValidationError("give --demo or --exec, not both") }

        // The embedded default is the secure path: a key set made on first run.
        let keys: UpKeys? = noCurve ? nil : try UpKeys.ensure(directory: dataDirectory + "/keys")
        let me = Self.executablePath()
        let pools = choosePools(executable: me)
        let workerNames = pools.flatMap { p in (1...count).map { "\(p.prefix)-\($0)" } }

        let out = FileHandle.standardOutput, err = FileHandle.standardError
        let supervisor = Supervisor(sinks: .init(
            output: { name, line, isErr in (isErr ? err : out).write(Data("[\(name)] \(line)\n".utf8)) },
            log: { line in err.write(Data("conveyor up: \(line)\n".utf8)) }
        ))
        supervisor.installSignalHandlers()
        // Children read the same .env file (an --env-file given to us included), never a different ./.env.
        var childEnv: [String: String] = [:]
        if let f = StartupEnvironment.current.envFile { childEnv["CONVEYOR_ENV_FILE"] = URL(fileURLWithPath: f).standardizedFileURL.path }

        var brokerArgs = ["broker", "--clients", clientsEP, "--workers", workersEP, "--events", eventsEP, "--data-dir", dataDirectory]
        if let keys { brokerArgs += ["--curve-dir", keys.directory] }
        if env("MAX_CONCURRENT_ANALYSIS_TASKS") == nil {
            // Room for every worker slot unless the operator capped it.
            brokerArgs += ["--max-running", "\(max(3, workerNames.count))"]
        }
        let ready: (gateway: String, clients: String, workers: String, events: String)
        do {
            try supervisor.start(ChildSpec(name: "broker", executable: me, arguments: brokerArgs, environment: childEnv,
                                           readyMarker: "conveyor broker ready"))
            try supervisor.run(timeout: 60, what: "the broker's ready line", abortOnExit: ["broker"]) {
                supervisor.readyLine(of: "broker") != nil
            }
            let bound = Self.fields(supervisor.readyLine(of: "broker") ?? "")
            let (c, w, e) = (bound["clients"] ?? clientsEP, bound["workers"] ?? workersEP, bound["events"] ?? eventsEP)
            // A restarted broker binds the ports it got the first time, so children can reconnect.
            supervisor.setArguments("broker", ["broker", "--clients", c, "--workers", w, "--events", e, "--data-dir", dataDirectory]
                                    + Array(brokerArgs.dropFirst(9)))
            for pool in pools {
                for i in 1...count {
                    var args = ["worker", "--broker", Self.connectable(w), "--name", "\(pool.prefix)-\(i)", "--exec", pool.command]
                        + (keys?.flags("worker") ?? [])
                    if let t = pool.types { args += ["--types", t] }
                    try supervisor.start(ChildSpec(name: "\(pool.prefix)-\(i)", executable: me, arguments: args, environment: childEnv,
                                                   graceSeconds: 10))
                }
            }
            var gatewayURL = "none"
            if !noGateway {
                var args = ["gateway", "--host", host, "--port", "\(httpPortNumber)", "--broker", Self.connectable(c), "--events", Self.connectable(e)]
                    + (keys?.flags("gateway") ?? [])
                if let eventsOutEP { args += ["--events-out", eventsOutEP] }
                try supervisor.start(ChildSpec(name: "gateway", executable: me, arguments: args, environment: childEnv,
                                               readyMarker: "conveyor gateway ready"))
                try supervisor.run(timeout: 60, what: "the gateway's ready line", abortOnExit: ["gateway"]) {
                    supervisor.readyLine(of: "gateway") != nil
                }
                let line = supervisor.readyLine(of: "gateway") ?? ""
                gatewayURL = line.split(separator: " ").first { $0.hasPrefix("http://") }.map(String.init) ?? "http://\(host):\(httpPortNumber)"
                var pinned = args
                if let colon = gatewayURL.lastIndex(of: ":"), let p = pinned.firstIndex(of: "--port") {
                    pinned[p + 1] = String(gatewayURL[gatewayURL.index(after: colon)...])
                }
                if let o = pinned.firstIndex(of: "--events-out"), let bound = Self.fields(line)["events-out"] { pinned[o + 1] = bound }
                supervisor.setArguments("gateway", pinned)
            }
            try waitForWorkers(supervisor, clients: Self.connectable(c), expected: workerNames.count, curveKeys: try keys?.clientKeys("cli"))
            ready = (gatewayURL, c, w, e)
        } catch SupervisorError.stopRequested {
            supervisor.shutdown(order: [["gateway"], workerNames, ["broker"]])
            emit("conveyor up: stopped")
            return
        } catch {
            err.write(Data("conveyor up: \(error); stopping\n".utf8))
            supervisor.shutdown(order: [["gateway"], workerNames, ["broker"]])
            throw ExitCode(1)
        }

        if let keys {
            emit("conveyor up keys: CURVE on; clients use --curve-key \(keys.secret("cli")) --curve-server-key \(keys.brokerKey)")
        }
        emit("conveyor up ready gateway=\(ready.gateway) clients=\(ready.clients) workers=\(ready.workers) events=\(ready.events)")
        if ready.gateway != "none" {
            let base = ready.gateway.replacingOccurrences(of: "//0.0.0.0:", with: "//127.0.0.1:")
            emit("dashboard: \(base)/")
            let auth = env("CONVEYOR_API_TOKENS") == nil ? "" : " -H 'Authorization: Bearer YOUR_TOKEN'"
            let body = pools.first?.types == "document" || pools.first?.types == nil
                ? #"{"type":"document","payload":{"text":"Conveyor runs slow jobs in priority order. It survives restarts."}}"#
                : #"{"type":"\#(pools.first?.types ?? "document")","payload":"hello"}"#
            emit("submit a task: curl -s -X POST \(base)/api/tasks -H 'Content-Type: application/json'\(auth) -d '\(body)'")
        }
        emit("conveyor up pids " + supervisor.names.compactMap { n in supervisor.pid(of: n).map { "\(n)=\($0)" } }.joined(separator: " "))
        emit("\(workerNames.count) workers (\(pools.map { "\($0.prefix): \($0.types ?? "any type")" }.joined(separator: "; "))). Ctrl-C stops all.")

        supervisor.runUntilStopRequested()
        let clean = supervisor.shutdown(order: [["gateway"], workerNames, ["broker"]])
        emit("conveyor up: stopped")
        if !clean { throw ExitCode(130) }
    }

    /// The handler pools, or one pool for --exec / --demo / the fallback.
    func choosePools(executable: String) -> [Pool] {
        if demo { return [Pool(prefix: "worker", types: nil, command: Self.demoCommand)] }
        if let exec { return [Pool(prefix: "worker", types: nil, command: exec)] }
        let explicit = handlers ?? env("CONVEYOR_HANDLERS_DIR")
        let dir = explicit ?? Self.findHandlers(from: URL(fileURLWithPath: executable).deletingLastPathComponent())
        let warn = { (why: String) in
            FileHandle.standardError.write(Data("conveyor up: warning: \(why); running the demo workers instead (--handlers DIR, --exec CMD or --demo to choose)\n".utf8))
        }
        guard let dir else {
            warn("no ops/handlers directory found above \(executable)")
            return [Pool(prefix: "worker", types: nil, command: Self.demoCommand)]
        }
        let found = Self.handlerTypes.filter { FileManager.default.isReadableFile(atPath: "\(dir)/\($0).py") }
        guard !found.isEmpty else {
            warn("handlers directory \(dir) is missing or has none of \(Self.handlerTypes.map { "\($0).py" }.joined(separator: ", "))")
            return [Pool(prefix: "worker", types: nil, command: Self.demoCommand)]
        }
        guard Self.onPath("python3") else {
            warn("python3 is not on PATH (the handlers need it)")
            return [Pool(prefix: "worker", types: nil, command: Self.demoCommand)]
        }
        let abs = URL(fileURLWithPath: dir).standardizedFileURL.path
        return found.map { Pool(prefix: "worker-\($0)", types: $0, command: "python3 \(Self.shellQuote("\(abs)/\($0).py"))") }
    }

    /// Waits until the broker counts every worker (the workers say READY, nothing on stdout).
    private func waitForWorkers(_ supervisor: Supervisor, clients: String, expected: Int, curveKeys: CurveClientKeys? = nil) throws {
        let client = try BrokerClient(context: ZMQContext(), endpoint: clients, security: try curveKeys?.security ?? .none)
        defer { client.close() }
        var nextProbe = 0.0
        try supervisor.run(timeout: 60, what: "\(expected) workers to register", abortOnExit: ["broker"]) {
            let now = Supervisor.monotonicSeconds()
            guard now >= nextProbe else { return false }
            nextProbe = now + 0.2
            guard case .stats(_, let json)? = try? client.call(timeoutMs: 1000, { .stats(requestID: $0) }),
                  let obj = try? JSONSerialization.jsonObject(with: Data(json)) as? [String: Any] else { return false }
            return (obj["workers_connected"] as? Int ?? 0) >= expected
        }
    }

    /// `key=value` words of a ready line.
    static func fields(_ line: String) -> [String: String] {
        var d: [String: String] = [:]
        for part in line.split(separator: " ") {
            guard let eq = part.firstIndex(of: "=") else { continue }
            d[String(part[..<eq])] = String(part[part.index(after: eq)...])
        }
        return d
    }

    /// A bound endpoint as a peer on this host connects to it (a wildcard address means loopback).
    static func connectable(_ ep: String) -> String {
        ep.replacingOccurrences(of: "tcp://0.0.0.0:", with: "tcp://127.0.0.1:").replacingOccurrences(of: "tcp://*:", with: "tcp://127.0.0.1:")
    }

    /// The first `ops/handlers` directory in `start` or one of its ancestors.
    static func findHandlers(from start: URL) -> String? {
        var dir = start.standardizedFileURL
        while true {
            let candidate = dir.appendingPathComponent("ops/handlers").path
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDir), isDir.boolValue { return candidate }
            let parent = dir.deletingLastPathComponent()
            if parent.path == dir.path { return nil }
            dir = parent
        }
    }

    static func executablePath() -> String {
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return exe }
        let a0 = CommandLine.arguments[0]
        return a0.contains("/") ? URL(fileURLWithPath: a0).standardizedFileURL.path : a0
    }

    static func onPath(_ name: String) -> Bool {
        (env("PATH") ?? "/usr/bin:/bin").split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(name)") }
    }

    static func shellQuote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
}
