import ArgumentParser
import ConveyorBroker
import ConveyorCore
import ConveyorProtocol
import ConveyorJournal
import ConveyorProtocol
import ConveyorTransport
import Foundation
import ZeroMQ

struct BrokerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "Run the broker: the priority queue, dispatch to workers, the event stream.",
        discussion: "Prints one line 'conveyor broker ready clients=… workers=… events=…' on stdout once bound (use port * or 0 for an ephemeral port)."
    )

    @Option(help: "Client ROUTER endpoint (env CONVEYOR_CLIENTS_ENDPOINT).") var clients: String?
    @Option(help: "Worker ROUTER endpoint (env CONVEYOR_WORKERS_ENDPOINT).") var workers: String?
    @Option(help: "Event XPUB endpoint (env CONVEYOR_EVENTS_ENDPOINT).") var events: String?
    @Option(help: "Tasks running at once across all workers, 1-100000 (env MAX_CONCURRENT_ANALYSIS_TASKS, default 3). A warning is logged when the workers' total capacity exceeds it.") var maxRunning: Int?
    @Option(help: "Queued tasks before submissions are rejected queue_full, 0-100000000 (env ANALYSIS_QUEUE_MAX_SIZE, default 100; 0 rejects every submission but delayed ones, with a warning).") var maxQueue: Int?
    @Option(help: "Default task timeout in seconds, 1-604800 (env ANALYSIS_TASK_TIMEOUT, default 3600).") var taskTimeout: Int?
    @Option(help: "Dispatches a task may lose with dying workers before it fails worker_lost, 1-1000 (env CONVEYOR_MAX_DELIVERIES, default 3).") var maxDeliveries: Int?
    @Option(help: "RETURNs a task may make before it fails returned_too_often, 1-10000 (env CONVEYOR_MAX_RETURNS, default 100).") var maxReturns: Int?
    @Option(help: "The most tasks one worker may run at once, whatever its READY asks; larger asks are capped with a warning, 1-1024 (env CONVEYOR_MAX_WORKER_CAPACITY, default 64).")
    var maxWorkerCapacity: Int?
    @Option(help: "Task types that may have queued tasks at once; a submission of one more type is rejected too_many_types, 1-1000000 (env CONVEYOR_MAX_TYPES, default 10000).")
    var maxTypes: Int?
    @Option(help: "Finished tasks kept in memory for STATUS and deduplication, 0-10000000; older ones are read from the journal (env CONVEYOR_MAX_FINISHED, default 100000).")
    var maxFinished: Int?
    @Option(help: "Comma-separated task types to accept; others are rejected unknown_type (env CONVEYOR_TASK_TYPES; default any).") var types: String?
    @Option(help: "Largest payload in bytes, 0-268435456 (env CONVEYOR_MAX_PAYLOAD_BYTES, default 10485760).") var maxPayload: Int?
    @Option(help: "Journal directory (env CONVEYOR_DATA_DIR, default ./data).") var dataDir: String?
    @Option(help: "Where the journal is: sqlite:PATH (a file; default DATA_DIR/conveyor-journal.sqlite) or postgres://USER@HOST:PORT/DB[?schema=NAME], password from PGPASSWORD or .pgpass (env CONVEYOR_JOURNAL).")
    var journal: String?
    @Option(help: "Seconds the shared journal's lease lasts unless renewed: how long a dead active broker keeps the standby waiting, 1-300 (env CONVEYOR_LEASE_TTL, default 5; PostgreSQL journals).")
    var leaseTTL: Double?
    @Option(help: "The client endpoint a standby names in not_leader replies, e.g. tcp://10.0.0.5:5555 (env CONVEYOR_ADVERTISE, default the --clients endpoint as bound).")
    var advertise: String?
    @Option(help: "fsync (default), batch or none (env CONVEYOR_DURABILITY).") var durability: String?
    @Option(help: "Seconds finished tasks keep their results, 1-31536000 (env CONVEYOR_RESULT_TTL, default 86400).") var resultTTL: Int64?
    @Option(help: "Per-type concurrency across the pool, e.g. youtube=2,pdf=3 (env CONVEYOR_TYPE_CONCURRENCY).") var typeConcurrency: String?
    @Option(help: "Per-type dispatch rate limits over a sliding window, e.g. youtube=15/min,pdf=2/s (units /s, /min, /h; env CONVEYOR_RATE_LIMITS).")
    var rateLimit: String?
    @Option(help: "Per-type cost budgets over a sliding window of the units workers report, e.g. youtube=1000000/min (env CONVEYOR_COST_LIMITS).")
    var costLimit: String?
    @Option(help: "Starvation control: a queued task counts one level higher for every this many seconds it waits 0.001-31536000 (env CONVEYOR_AGING; default off = strict priority).")
    var aging: Double?
    @Option(help: "Seconds a type is held after a worker's RETRY_LATER that names no delay, 0-86400 (env CONVEYOR_HOLD_DEFAULT, default 30).")
    var holdDefault: Double?
    @Option(help: "CURVE key directory: broker.key_secret and the allowlists clients/, workers/, subscribers/, admins/ (env CONVEYOR_CURVE_DIR). Required for non-loopback endpoints unless --insecure.")
    var curveDir: String?
    @Flag(help: "Allow binding non-loopback endpoints without CURVE (plaintext on the network).") var insecure = false
    @Flag(help: "Start even if the journal is behind its high-water mark (it lost acknowledged tasks: truncated, -wal lost, an old backup restored); logged loudly, and the mark is reset (env CONVEYOR_ACCEPT_JOURNAL_LOSS=1).")
    var acceptJournalLoss = false
    @OptionGroup var heartbeat: HeartbeatOptions
    @OptionGroup var logging: LoggingOptions

    /// Flags over environment variables; every parse error is a usage error naming the flag.
    func policyConfig() throws -> PolicyConfig {
        var p = PolicyConfig()
        do {
            if let text = typeConcurrency ?? env("CONVEYOR_TYPE_CONCURRENCY") { p.typeConcurrency = try PolicyConfig.parseConcurrency(text) }
            if let text = rateLimit ?? env("CONVEYOR_RATE_LIMITS") { p.rateLimits = try PolicyConfig.parseWindows(text, what: "rate limit") }
            if let text = costLimit ?? env("CONVEYOR_COST_LIMITS") { p.costLimits = try PolicyConfig.parseWindows(text, what: "cost limit") }
        } catch {
            throw ValidationError("\(error)")
        }
        if let a = try seconds(aging, "CONVEYOR_AGING", "--aging", range: 0.001...31_536_000) { p.agingUs = Int64(a * 1_000_000) }
        if let h = try seconds(holdDefault, "CONVEYOR_HOLD_DEFAULT", "--hold-default", range: 0...86_400) { p.defaultHoldMs = Int64(h * 1000) }
        return p
    }

    private func seconds(_ flag: Double?, _ envName: String, _ name: String, range: ClosedRange<Double>) throws -> Double? {
        guard let v = flag ?? env(envName).map({ Double($0) ?? .nan }) else { return nil }
        guard v.isFinite, range.contains(v) else { throw ValidationError("\(name) must be seconds in \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    func run() throws {
        var config = BrokerConfig()
        config.clientsEndpoint = try validateEndpoint(clients ?? env("CONVEYOR_CLIENTS_ENDPOINT") ?? config.clientsEndpoint, "--clients")
        config.workersEndpoint = try validateEndpoint(workers ?? env("CONVEYOR_WORKERS_ENDPOINT") ?? config.workersEndpoint, "--workers")
        config.eventsEndpoint = try validateEndpoint(events ?? env("CONVEYOR_EVENTS_ENDPOINT") ?? config.eventsEndpoint, "--events")
        var s = SchedulerConfig()
        s.maxRunning = try setting(maxRunning, "MAX_CONCURRENT_ANALYSIS_TASKS", 3, range: 1...100_000)
        s.maxQueue = try setting(maxQueue, "ANALYSIS_QUEUE_MAX_SIZE", 100, range: 0...100_000_000)
        s.defaultTimeoutMs = UInt32(try setting(taskTimeout, "ANALYSIS_TASK_TIMEOUT", 3600, range: 1...604_800)) * 1000
        s.maxDeliveries = UInt16(try setting(maxDeliveries, "CONVEYOR_MAX_DELIVERIES", 3, range: 1...1000))
        s.maxReturns = try setting(maxReturns, "CONVEYOR_MAX_RETURNS", 100, range: 1...10_000)
        s.maxWorkerCapacity = try setting(maxWorkerCapacity, "CONVEYOR_MAX_WORKER_CAPACITY", 64, range: 1...1024)
        s.maxTypes = try setting(maxTypes, "CONVEYOR_MAX_TYPES", 10_000, range: 1...1_000_000)
        s.maxFinishedInMemory = try setting(maxFinished, "CONVEYOR_MAX_FINISHED", 100_000, range: 0...10_000_000)
        s.maxPayloadBytes = try setting(maxPayload, "CONVEYOR_MAX_PAYLOAD_BYTES", PayloadLimits.defaultMaxPayloadBytes,
                                        range: 0...PayloadLimits.maxConfigurablePayloadBytes)
        s.resultTTLSeconds = try setting(resultTTL, "CONVEYOR_RESULT_TTL", 86_400, range: 1...31_536_000)
        s.heartbeatIntervalMs = try heartbeat.interval
        s.heartbeatLiveness = try heartbeat.liveness
        if let list = types ?? env("CONVEYOR_TASK_TYPES") {
            let set = Set(list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
            guard !set.isEmpty else { throw ValidationError("--types needs at least one type") }
            s.allowedTypes = set
        }
        s.policy = try policyConfig()
        config.scheduler = s
        config.journal.dataDirectory = dataDir ?? env("CONVEYOR_DATA_DIR") ?? "./data"
        // Not given: the SQLite file in --data-dir, as always.
        let location = try JournalLocation(journal ?? env("CONVEYOR_JOURNAL"))
            ?? .sqlite(directory: config.journal.dataDirectory, fileName: config.journal.fileName)
        if case .sqlite(let dir, let name) = location {
            config.journal.dataDirectory = dir
            config.journal.fileName = name
        }
        if let ttl = try seconds(leaseTTL, "CONVEYOR_LEASE_TTL", "--lease-ttl", range: 1...300) { config.leaseTTLMs = Int64(ttl * 1000) }
        if let a = advertise ?? env("CONVEYOR_ADVERTISE") { config.advertiseEndpoint = try validateEndpoint(a, "--advertise") }
        let mode = durability ?? env("CONVEYOR_DURABILITY") ?? "fsync"
        guard let d = JournalConfig.Durability(rawValue: mode) else {
            throw ValidationError("--durability must be fsync, batch or none, got '\(mode)'")
        }
        config.journal.durability = d
        config.journal.acceptJournalLoss = try acceptJournalLoss || boolSetting("CONVEYOR_ACCEPT_JOURNAL_LOSS", "--accept-journal-loss")
        config.curveDirectory = curveDir ?? env("CONVEYOR_CURVE_DIR")
        if config.curveDirectory == nil && !insecure {
            // Safe by default: plaintext only where traffic cannot leave the machine.
            for (ep, flag) in [(config.clientsEndpoint, "--clients"), (config.workersEndpoint, "--workers"), (config.eventsEndpoint, "--events")]
            where !EndpointRule.isLocal(ep) {
                writeErr("conveyor: " + EndpointRule.refusal(ep, flag: flag))
                throw ExitCode(2)
            }
        }

        let logger = try logging.bootstrap("conveyor.broker")
        if s.maxQueue == 0 {
            logger.warning("--max-queue is 0 (ANALYSIS_QUEUE_MAX_SIZE): the broker rejects every submission (queue_full) except delayed ones")
        }
        let context = ZMQContext()
        let journal: Journal?
        do {
            journal = try location.open(config.journal, logger: logger)
        } catch {
            logger.critical("cannot open journal: \(error)")
            throw ExitCode(1)
        }
        if let j = journal?.backend as? SQLiteJournal {
            if let loss = j.acceptedLoss {
                logger.critical("JOURNAL LOSS ACCEPTED: \(loss); acknowledged tasks missing from it are gone, the high-water mark is reset to this journal (generation \(j.generation))")
            } else if config.journal.acceptJournalLoss {
                logger.warning("--accept-journal-loss given, but the journal was not behind its high-water mark: nothing was lost")
            }
            if let notice = j.markNotice { logger.notice("\(notice)") }
        }
        let broker = Broker(config: config, context: context, journal: journal, logger: logger)
        let bound: (clients: String, workers: String, events: String)
        do { bound = try broker.start() } catch {
            logger.critical("cannot start broker: \(error)")
            throw ExitCode((error as? BrokerError)?.exitCode ?? 1)
        }
        emit("conveyor broker ready clients=\(bound.clients) workers=\(bound.workers) events=\(bound.events)")
        onTerminationSignal { broker.requestStop() }
        onSignal(SIGHUP) { broker.requestKeyReload() }
        do { try broker.run() } catch let e as BrokerError {
            logger.critical("broker stopped: \(e)")
            context.terminate()
            throw ExitCode(e.exitCode)
        } catch {
            logger.critical("broker loop failed: \(error)")
            throw ExitCode(1)
        }
        context.terminate() // lets the final replies and DISCONNECTs leave
    }
}

/// A yes/no environment variable: 1/true/yes or 0/false/no; anything else is a usage error.
private func boolSetting(_ name: String, _ flag: String) throws -> Bool {
    guard let v = env(name) else { return false }
    switch v.lowercased() {
    case "1", "true", "yes", "on": return true
    case "0", "false", "no", "off": return false
    default: throw ValidationError("\(name) (\(flag)) must be 1 or 0, got '\(v)'")
    }
}
