import ArgumentParser
import ConveyorCore
import ConveyorWorker
import Foundation
import ZeroMQ

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker that executes tasks from the broker.",
        discussion: """
        With --exec, each task runs `/bin/sh -c CMD`: payload on stdin, TASK_ID, TASK_TYPE, TASK_PRIORITY, \
        TASK_ATTEMPT in the environment, progress as lines "PERCENT MESSAGE" on fd 3, stdout is the result, \
        exit 0 is success. --builtin runs an in-process handler (echo, noop, or sleep:MS) for benchmarks and demos.
        """
    )

    @Option(help: "The broker's worker endpoint, or a comma-separated list of an active and standby brokers' (env CONVEYOR_WORKERS_ENDPOINT, default tcp://127.0.0.1:5556).") var broker: String?
    @Option(help: "A stable name (env CONVEYOR_WORKER_NAME, default: host-pid).") var name: String?
    @Option(help: "Comma-separated task types to accept (env CONVEYOR_WORKER_TYPES, default: any).") var types: String?
    @Option(help: "Tasks this worker runs at once, 1-1024 (env CONVEYOR_WORKER_CONCURRENCY, default 1).") var concurrency: Int?
    @Option(help: "Shell command to run per task (env CONVEYOR_WORKER_EXEC).") var exec: String?
    @Option(help: "In-process handler instead of --exec: echo, noop, sleep:MS.") var builtin: String?
    @Option(help: "Seconds between SIGTERM and SIGKILL when a task is stopped, and for running tasks on shutdown, >= 0 (env CONVEYOR_WORKER_GRACE, default 5).")
    var grace: Double?
    @Option(help: "Exit after this many tasks.") var maxTasks: Int?
    @OptionGroup var curve: CurveClientOptions
    @OptionGroup var heartbeat: HeartbeatOptions
    @OptionGroup var logging: LoggingOptions

    /// A flag wins over its environment variable; `--builtin` wins over CONVEYOR_WORKER_EXEC.
    private var command: String? { exec ?? (builtin == nil ? env("CONVEYOR_WORKER_EXEC") : nil) }

    func validate() throws {
        guard (command == nil) != (builtin == nil) else { throw ValidationError("give exactly one of --exec CMD or --builtin NAME") }
    }

    func run() throws {
        let concurrency = try setting(self.concurrency, "CONVEYOR_WORKER_CONCURRENCY", 1, range: 1...1024)
        let grace = try self.grace ?? env("CONVEYOR_WORKER_GRACE").map { text in
            guard let g = Double(text) else { throw ValidationError("CONVEYOR_WORKER_GRACE='\(text)' must be seconds >= 0") }
            return g
        } ?? 5
        guard grace >= 0, grace.isFinite else { throw ValidationError("--grace must be >= 0") }
        let exec = command
        let name = self.name ?? env("CONVEYOR_WORKER_NAME")
        let types = self.types ?? env("CONVEYOR_WORKER_TYPES")
        let endpoints = try validateEndpoints(broker ?? env("CONVEYOR_WORKERS_ENDPOINT") ?? "tcp://127.0.0.1:5556", "--broker")
        let handler: any TaskHandler
        if let exec {
            handler = ExecHandler(command: exec, graceSeconds: grace)
        } else {
            guard let b = BuiltinHandler(builtin ?? "") else { throw ValidationError("unknown --builtin '\(builtin ?? "")': use echo, noop or sleep:MS") }
            handler = b
        }
        var opts = Worker.Options(brokerEndpoints: endpoints, name: name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())")
        opts.security = try curve.security
        opts.types = (types ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        opts.concurrency = concurrency
        opts.heartbeatIntervalMs = try heartbeat.interval
        opts.heartbeatLiveness = try heartbeat.liveness
        opts.graceMs = Int64(grace * 1000)
        opts.maxTasks = maxTasks
        let logger = try logging.bootstrap("conveyor.worker")
        let context = ZMQContext()
        let worker = Worker(options: opts, handler: handler, context: context, logger: logger)
        onTerminationSignal { worker.requestStop() }
        try worker.run()
        context.terminate() // flushes the last DONE/RETURN/DISCONNECT before exit
    }
}

/// Handlers that need no child process: for benchmarks, demos and tests.
struct BuiltinHandler: TaskHandler {
    enum Kind { case echo, noop, sleep(ms: Int) }
    let kind: Kind

    init?(_ name: String) {
        switch name {
        case "echo": kind = .echo
        case "noop": kind = .noop
        default:
            guard name.hasPrefix("sleep:"), let ms = Int(name.dropFirst(6)), ms >= 0 else { return nil }
            kind = .sleep(ms: ms)
        }
    }

    func handle(_ task: WorkerTask, context: TaskContext) throws -> [UInt8] {
        switch kind {
        case .noop: return []
        case .echo: return task.payload
        case .sleep(let ms):
            context.progress(0, "sleeping \(ms) ms")
            var left = ms
            while left > 0 && !context.isCancelled {
                usleep(useconds_t(min(left, 20) * 1000))
                left -= 20
            }
            context.progress(100, "done")
            return task.payload
        }
    }
}
