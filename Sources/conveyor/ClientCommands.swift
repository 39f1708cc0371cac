import ArgumentParser
import ConveyorClient
import ConveyorCore
import ConveyorOps
import ConveyorProtocol
import Foundation
import ConveyorTransport
import ZeroMQ

func writeErr(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

/// Calls the broker, turning transport failures into a one-line error and exit status 1.
func brokerCall(_ client: BrokerClient, timeoutMs: Int = 5000, _ make: ([UInt8]) -> ClientRequest) throws -> ClientReply {
    do { return try client.call(timeoutMs: timeoutMs, make) } catch {
        writeErr("conveyor: \(error)")
        throw ExitCode(1)
    }
}

func failOnError(_ reply: ClientReply) throws {
    if case .error(_, let code, let message) = reply {
        writeErr("conveyor: \(code): \(message)")
        throw ExitCode(1)
    }
    if case .notLeader(_, _, let message, let leader) = reply {
        // Only standbys answered (a list of brokers found no active one, or one standby was asked).
        writeErr("conveyor: \(ErrorCode.notLeader.rawValue): \(message)" + (leader.isEmpty ? "" : "; try --broker \(leader)"))
        throw ExitCode(1)
    }
}

struct SubmitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Submit a task (prints its id), or a batch of JSON lines.",
        discussion: """
        --batch FILE reads JSON lines {"type":…, "priority":…, "payload":…, "timeout":…} and prints one line per \
        input line, in order: the task id or 'rejected CODE MESSAGE'. Exit 0 when all were accepted, 1 otherwise.
        """
    )

    @OptionGroup var target: BrokerEndpointOption
    @Option(help: "Task type.") var type: String?
    @Option(help: "low|normal|high|urgent or 0-3 (default normal).") var priority: Priority = .normal
    @Option(help: "Seconds before the task times out (default: the broker's).") var timeout: Int?
    @Option(help: "Payload text.") var payload: String?
    @Option(help: "Read the payload from a file (- for stdin).") var payloadFile: String?
    @Option(help: "Failed or timed-out attempts allowed (retries with backoff).") var maxAttempts: Int?
    @Option(help: "Idempotency key: resubmitting with the same key returns the same task.") var idempotencyKey: String?
    @Option(help: "Seconds to wait before the task becomes due.") var delay: Double?
    @Option(help: "JSON lines file of tasks to submit (- for stdin).") var batch: String?
    @Flag(help: "Wait for the outcome; print only the result on stdout (on a terminal, a live progress bar on stderr).") var wait = false
    @Flag(name: [.short, .long], help: "Print only the result (with --wait) or the task id: no progress, no task id on stderr.") var quiet = false

    func validate() throws {
        if batch == nil {
            guard let type else { throw ValidationError("--type is required (or --batch FILE)") }
            guard isValidTaskType(type) else { throw ValidationError("--type '\(type)' must be 1-64 characters of [A-Za-z0-9_.:-]") }
        }
        if payload != nil && payloadFile != nil { throw ValidationError("give --payload or --payload-file, not both") }
        if let timeout, !(1...604_800).contains(timeout) { throw ValidationError("--timeout must be 1...604800 seconds") }
        if let maxAttempts, !(1...100).contains(maxAttempts) { throw ValidationError("--max-attempts must be 1...100") }
        if let delay, delay < 0 { throw ValidationError("--delay must be >= 0") }
        if batch != nil && wait { throw ValidationError("--wait does not combine with --batch") }
    }

    func run() throws {
        let client = try target.client()
        if let batch { return try runBatch(client, batch) }
        var body: [UInt8] = Array((payload ?? "").utf8)
        if let f = payloadFile {
            guard let data = f == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: f) else {
                throw ValidationError("cannot read --payload-file \(f)")
            }
            body = Array(data)
        }
        var spec = TaskSpec(type: type ?? "", priority: priority, payload: body, timeoutMs: timeout.map { UInt32($0 * 1000) })
        if let m = maxAttempts { spec.maxAttempts = UInt16(m) }
        spec.idempotencyKey = idempotencyKey
        spec.delayMs = delay.map { Int64($0 * 1000) }
        let reply = try brokerCall(client) { .submit(requestID: $0, spec: spec) }
        let id: TaskID
        switch reply {
        case .accepted(_, let tid, _, _): id = tid
        case .rejected(_, let code, let message):
            writeErr("rejected \(code) \(message)")
            throw ExitCode(1)
        default:
            try failOnError(reply)
            throw ExitCode(1)
        }
        guard wait else {
            emit(id.description)
            return
        }
        let started = Date()
        // A terminal gets one line redrawn in place; pipes and files get plain lines.
        let live = !quiet && isatty(STDERR_FILENO) == 1
        var lastPercent: Int?, lastMessage = "queued"
        func redraw() {
            let cols = Int(terminalSize(STDERR_FILENO)?.columns ?? 80)
            FileHandle.standardError.write(Data(("\r\u{1B}[2K" + ProgressLine.render(percent: lastPercent, message: lastMessage,
                                                                                    elapsed: Date().timeIntervalSince(started), width: cols - 1)).utf8))
        }
        let finish = { (state: String, body: [UInt8]) throws in
            if live {
                let detail = state == "succeeded" ? "" : String(decoding: body, as: UTF8.self)
                FileHandle.standardError.write(Data(("\r\u{1B}[2K" + ProgressLine.final(state: state, elapsed: Date().timeIntervalSince(started), detail: detail) + "\n").utf8))
            }
            try self.finish(state: state, body: body, reported: live)
        }
        if !quiet { writeErr(id.description) }
        if live { redraw() }
        while true {
            guard let n = try client.nextNotification(timeoutMs: 1000) else {
                if live { redraw() }
                // Still connected? The outcome may have raced our connection; ask.
                let s = try brokerCall(client) { .status(requestID: $0, id: id) }
                if case .status(_, let json) = s, let obj = try? JSONSerialization.jsonObject(with: Data(json)) as? [String: Any],
                   let state = obj["state"] as? String, ["succeeded", "failed", "timed_out", "cancelled"].contains(state) {
                    return try finish(state, Array(((obj["result"] ?? obj["error"]) as? String ?? "").utf8))
                }
                continue
            }
            switch n {
            case .progress(let tid, let p, let m) where tid == id:
                if live {
                    lastPercent = p.map { Int($0) }
                    lastMessage = m
                    redraw()
                } else if !quiet {
                    writeErr("progress \(p.map { "\($0)%" } ?? "") \(m)")
                }
            case .finished(let tid, let state, let body) where tid == id:
                return try finish(state, body)
            default: continue
            }
        }
    }

    /// - Parameter reported: the live line already showed the final state.
    private func finish(state: String, body: [UInt8], reported: Bool) throws {
        if state == "succeeded" {
            FileHandle.standardOutput.write(Data(body))
            return
        }
        if !reported { writeErr("\(state) \(String(decoding: body, as: UTF8.self))") }
        throw ExitCode(1)
    }

    private func runBatch(_ client: BrokerClient, _ path: String) throws {
        guard let data = path == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read --batch \(path)")
        }
        var lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        // Parse everything first, then pipeline the submissions and print in input order.
        var outputs = [String?](repeating: nil, count: lines.count)
        var pending: [[UInt8]: Int] = [:]
        for (i, line) in lines.enumerated() {
            switch BatchLine.parse(line) {
            case .failure(let e): outputs[i] = "rejected bad_request \(e.message)"
            case .success(let spec):
                let rid = client.nextRequestID()
                try client.send(.submit(requestID: rid, spec: spec))
                pending[rid] = i
            }
        }
        var deadline = Date().addingTimeInterval(30)
        while !pending.isEmpty {
            guard let reply = try client.receive(timeoutMs: 1000) else {
                if Date() > deadline {
                    writeErr("conveyor: no reply from the broker at \(client.endpoint) for \(pending.count) submissions")
                    for (_, i) in pending { outputs[i] = "rejected timeout no reply from broker" }
                    break
                }
                continue
            }
            deadline = Date().addingTimeInterval(30)
            guard let rid = reply.requestID, let i = pending.removeValue(forKey: rid) else { continue }
            switch reply {
            case .accepted(_, let id, _, _): outputs[i] = id.description
            case .rejected(_, let code, let message), .error(_, let code, let message): outputs[i] = "rejected \(code) \(message)"
            default: outputs[i] = "rejected bad_reply unexpected reply"
            }
        }
        var allOK = true
        for o in outputs {
            let line = o ?? "rejected timeout no reply from broker"
            if line.hasPrefix("rejected") { allOK = false }
            emit(line)
        }
        if !allOK { throw ExitCode(1) }
    }
}

/// One line of a `--batch` file.
struct BatchError: Error { let message: String }

enum BatchLine {
    static func parse(_ line: String) -> Result<TaskSpec, BatchError> {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            return .failure(BatchError(message: "line is not a JSON object"))
        }
        guard let type = obj["type"] as? String, isValidTaskType(type) else { return .failure(BatchError(message: "missing or invalid \"type\"")) }
        var priority = Priority.normal
        if let p = obj["priority"] {
            if let n = p as? Int, let v = Priority(rawValue: UInt8(clamping: n)), (0...3).contains(n) { priority = v }
            else if let s = p as? String, let v = Priority(parsing: s) { priority = v }
            else { return .failure(BatchError(message: "invalid \"priority\": use 0-3 or low|normal|high|urgent")) }
        }
        var payload: [UInt8] = []
        if let p = obj["payload"] {
            if let s = p as? String { payload = Array(s.utf8) }
            else if !(p is NSNull), let d = try? JSONSerialization.data(withJSONObject: p, options: [.fragmentsAllowed]) { payload = Array(d) }
        }
        var spec = TaskSpec(type: type, priority: priority, payload: payload)
        if let t = obj["timeout"] ?? obj["timeout_s"] {
            guard let n = t as? Int, (1...604_800).contains(n) else { return .failure(BatchError(message: "invalid \"timeout\": seconds 1-604800")) }
            spec.timeoutMs = UInt32(n * 1000)
        }
        return .success(spec)
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show a task's state.")
    @OptionGroup var target: BrokerEndpointOption
    @Argument(help: "Task id (16 hex digits).") var taskID: String
    @Flag(help: "Print the broker's JSON object.") var json = false

    func validate() throws { guard TaskID(taskID) != nil else { throw ValidationError("'\(taskID)' is not a task id (16 hex digits)") } }

    func run() throws {
        let client = try target.client()
        guard let id = TaskID(taskID) else { throw ExitCode(2) }
        let reply = try brokerCall(client) { .status(requestID: $0, id: id) }
        try failOnError(reply)
        guard case .status(_, let body) = reply else { throw ExitCode(1) }
        if json {
            emit(String(decoding: body, as: UTF8.self))
        } else if let obj = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] {
            for k in ["task_id", "state", "type", "priority", "attempt", "queue_position", "worker", "created_at", "started_at", "finished_at", "result", "error"] {
                if let v = obj[k], !(v is NSNull) { emit("\(k): \(v)") }
            }
        }
    }
}

struct CancelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel a queued or running task.")
    @OptionGroup var target: BrokerEndpointOption
    @Argument(help: "Task id.") var taskID: String

    func validate() throws { guard TaskID(taskID) != nil else { throw ValidationError("'\(taskID)' is not a task id (16 hex digits)") } }

    func run() throws {
        let client = try target.client()
        guard let id = TaskID(taskID) else { throw ExitCode(2) }
        let reply = try brokerCall(client) { .cancel(requestID: $0, id: id) }
        try failOnError(reply)
        if case .cancelled(_, let tid, let previous) = reply { emit("cancelled \(tid) (was \(previous))") }
    }
}

struct EventsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events", abstract: "Print the broker's events as JSON lines.")
    @Option(help: "The event endpoint (env CONVEYOR_EVENTS_ENDPOINT, default tcp://127.0.0.1:5557).") var events: String?
    @Option(help: "Topic prefix: stats, task., task.failed, worker. … (default: all).") var topic: String = ""
    @Option(help: "Exit after this many events.") var count: Int?
    @OptionGroup var curve: CurveClientOptions

    func run() throws {
        let endpoint = try validateEndpoint(events ?? env("CONVEYOR_EVENTS_ENDPOINT") ?? "tcp://127.0.0.1:5557", "--events")
        let sub = try ZMQContext().socket(SocketRoles.subscriber(security: try curve.security, topics: [topic]))
        try sub.connect(endpoint)
        var seen = 0
        while count.map({ seen < $0 }) ?? true {
            guard let frames = try sub.receive(), frames.count == 2 else { continue }
            // Each line: the event's JSON with its topic added, so `jq` can filter.
            var line = frames[1]
            if line.first == UInt8(ascii: "{") {
                line = Array("{\"topic\":\"\(String(decoding: frames[0], as: UTF8.self))\",".utf8) + line.dropFirst()
            }
            emit(String(decoding: line, as: UTF8.self))
            seen += 1
        }
    }
}

struct DeadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead", abstract: "Dead letters: tasks that failed their last attempt.",
        subcommands: [List.self, Retry.self, Purge.self], defaultSubcommand: List.self
    )

    struct List: ParsableCommand {
        @OptionGroup var target: BrokerEndpointOption
        @Option(help: "At most this many.") var limit: Int = 100
        func run() throws {
            let client = try target.client()
            let reply = try brokerCall(client) { .dead(requestID: $0, action: .list(limit: limit)) }
            try failOnError(reply)
            if case .dead(_, let body) = reply { emit(String(decoding: body, as: UTF8.self)) }
        }
    }

    struct Retry: ParsableCommand {
        @OptionGroup var target: BrokerEndpointOption
        @Argument var taskID: String
        func validate() throws { guard TaskID(taskID) != nil else { throw ValidationError("'\(taskID)' is not a task id") } }
        func run() throws {
            let client = try target.client()
            guard let id = TaskID(taskID) else { throw ExitCode(2) }
            let reply = try brokerCall(client) { .dead(requestID: $0, action: .retry(id)) }
            try failOnError(reply)
            emit("retried \(id)")
        }
    }

    struct Purge: ParsableCommand {
        @OptionGroup var target: BrokerEndpointOption
        @Argument(help: "A task id, or nothing to purge all.") var taskID: String?
        func validate() throws { if let t = taskID, TaskID(t) == nil { throw ValidationError("'\(t)' is not a task id") } }
        func run() throws {
            let client = try target.client()
            let id = taskID.flatMap { TaskID($0) }
            let reply = try brokerCall(client) { .dead(requestID: $0, action: .purge(id)) }
            try failOnError(reply)
            if case .dead(_, let body) = reply { emit(String(decoding: body, as: UTF8.self)) }
        }
    }
}
