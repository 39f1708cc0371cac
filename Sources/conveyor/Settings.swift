/// Why: one registry of every setting the binary reads from the environment —
/// its variable, default, and whether it is secret — so `conveyor config`
/// reports exactly what the commands use, and a new setting is added in one
/// place. The commands still read values through `env(…)`; the registry is
/// the catalogue, checked against the sources by `SettingsRegistryTests`.
struct Setting: Sendable {
    let env: String
    /// What a command uses when neither a flag, the environment nor the file sets it; nil: off / none / any.
    let defaultValue: String?
    /// Tokens and keys: `config` never prints the value.
    let secret: Bool
    let help: String

    init(_ env: String, _ defaultValue: String?, secret: Bool = false, _ help: String) {
        self.env = env
        self.defaultValue = defaultValue
        self.secret = secret
        self.help = help
    }
}

enum Settings {
    static let all: [Setting] = [
        // Broker.
        Setting("CONVEYOR_CLIENTS_ENDPOINT", "tcp://127.0.0.1:5555", "broker client ROUTER endpoint (broker --clients, up --clients)"),
        Setting("CONVEYOR_WORKERS_ENDPOINT", "tcp://127.0.0.1:5556", "broker worker ROUTER endpoint; workers connect here (broker --workers, worker --broker)"),
        Setting("CONVEYOR_EVENTS_ENDPOINT", "tcp://127.0.0.1:5557", "broker event XPUB endpoint (broker/gateway/events --events)"),
        Setting("MAX_CONCURRENT_ANALYSIS_TASKS", "3", "tasks running at once across all workers, 1-100000 (broker --max-running)"),
        Setting("ANALYSIS_QUEUE_MAX_SIZE", "100", "queued tasks before queue_full, 0-100000000 (broker --max-queue)"),
        Setting("ANALYSIS_TASK_TIMEOUT", "3600", "default task timeout in seconds, 1-604800 (broker --task-timeout)"),
        Setting("CONVEYOR_MAX_DELIVERIES", "3", "dispatches lost with dying workers before worker_lost, 1-1000 (broker --max-deliveries)"),
        Setting("CONVEYOR_MAX_RETURNS", "100", "RETURNs a task may make before it fails returned_too_often, 1-10000 (broker --max-returns)"),
        Setting("CONVEYOR_MAX_WORKER_CAPACITY", "64", "largest capacity a worker's READY gets, 1-1024; more is capped with a warning (broker --max-worker-capacity)"),
        Setting("CONVEYOR_MAX_TYPES", "10000", "task types with queued tasks at once before too_many_types, 1-1000000 (broker --max-types)"),
        Setting("CONVEYOR_MAX_FINISHED", "100000", "finished tasks kept in memory for STATUS and deduplication, 0-10000000; older ones are read from the journal (broker --max-finished)"),
        Setting("CONVEYOR_TASK_TYPES", nil, "accepted task types, comma-separated; unset: any (broker --types)"),
        Setting("CONVEYOR_MAX_PAYLOAD_BYTES", "10485760", "largest payload in bytes, 0-268435456 (broker --max-payload, gateway --max-payload)"),
        Setting("CONVEYOR_DATA_DIR", "./data", "journal directory (broker/up --data-dir)"),
        Setting("CONVEYOR_DURABILITY", "fsync", "fsync, batch or none (broker --durability)"),
        Setting("CONVEYOR_JOURNAL", nil, "journal backend: sqlite:PATH or postgres://USER@HOST:PORT/DB; unset: the SQLite file in CONVEYOR_DATA_DIR (broker --journal)"),
        Setting("CONVEYOR_LEASE_TTL", "5", "seconds a shared journal's lease lasts unless renewed, 1-300 (broker --lease-ttl)"),
        Setting("CONVEYOR_ADVERTISE", nil, "the client endpoint a standby names in not_leader; unset: --clients as bound (broker --advertise)"),
        Setting("CONVEYOR_RESULT_TTL", "86400", "seconds finished tasks keep results, 1-31536000 (broker --result-ttl)"),
        Setting("CONVEYOR_TYPE_CONCURRENCY", nil, "per-type concurrency, e.g. youtube=2,pdf=3 (broker --type-concurrency)"),
        Setting("CONVEYOR_RATE_LIMITS", nil, "per-type dispatch rate limits, e.g. youtube=15/min (broker --rate-limit)"),
        Setting("CONVEYOR_COST_LIMITS", nil, "per-type cost budgets, e.g. youtube=1000000/min (broker --cost-limit)"),
        Setting("CONVEYOR_AGING", nil, "seconds per priority level of aging; unset: strict priority (broker --aging)"),
        Setting("CONVEYOR_HOLD_DEFAULT", "30", "seconds a type is held after a 429 without a delay, 0-86400 (broker --hold-default)"),
        Setting("CONVEYOR_HEARTBEAT_INTERVAL", "1000", "heartbeat interval in ms, 10-600000 (--heartbeat-interval)"),
        Setting("CONVEYOR_HEARTBEAT_LIVENESS", "3", "missed heartbeats before a peer is dead, 1-100 (--heartbeat-liveness)"),
        Setting("CONVEYOR_LOG_LEVEL", "info", "trace, debug, info, notice, warning, error (--log-level)"),
        // Clients.
        Setting("CONVEYOR_BROKER", "tcp://127.0.0.1:5555", "the broker client endpoint that client commands and the gateway use (--broker)"),
        // Worker.
        Setting("CONVEYOR_WORKER_NAME", nil, "worker name; unset: host-pid (worker --name)"),
        Setting("CONVEYOR_WORKER_TYPES", nil, "task types a worker accepts; unset: any (worker --types)"),
        Setting("CONVEYOR_WORKER_CONCURRENCY", "1", "tasks a worker runs at once, 1-1024 (worker --concurrency)"),
        Setting("CONVEYOR_WORKER_EXEC", nil, "shell command a worker runs per task (worker --exec)"),
        Setting("CONVEYOR_WORKER_GRACE", "5", "seconds between SIGTERM and SIGKILL for a task, >= 0 (worker --grace)"),
        // Gateway.
        Setting("CONVEYOR_GATEWAY_HOST", "127.0.0.1", "gateway listen address (gateway --host, up --http-host)"),
        Setting("CONVEYOR_GATEWAY_PORT", "8001", "gateway port, 0-65535, 0 = ephemeral (gateway --port, up --http-port)"),
        Setting("CONVEYOR_EVENTS_OUT", nil, "republish the event stream on this XPUB endpoint (gateway --events-out)"),
        Setting("CONVEYOR_GATEWAY_TIMEOUT_MS", "5000", "ms before a silent broker means 503, 10-600000 (gateway --broker-timeout)"),
        Setting("CONVEYOR_API_TOKENS", nil, secret: true, "name:token:scope+scope or bare bearer tokens, comma-separated; unset: authentication off"),
        Setting("CONVEYOR_TOKENS_FILE", nil, "tokens file of 'name scope+scope sha256hex' lines (gateway --tokens-file)"),
        // CURVE.
        Setting("CONVEYOR_CURVE_DIR", nil, "CURVE key directory: broker.key_secret and allowlists (broker/gateway --curve-dir)"),
        Setting("CONVEYOR_CURVE_KEY", nil, "this program's NAME.key_secret (--curve-key)"),
        Setting("CONVEYOR_CURVE_SERVER_KEY", nil, "the broker's broker.key (--curve-server-key)"),
        Setting("CONVEYOR_RESOURCES", nil, "directory holding the dashboard; unset: conveyor_ConveyorGateway.resources next to the binary"),
        // conveyor up.
        Setting("CONVEYOR_UP_WORKERS", "2", "workers per pool that `conveyor up` starts, 1-64 (up --workers)"),
        Setting("CONVEYOR_HANDLERS_DIR", nil, "directory of document.py, pdf.py, youtube.py; unset: ops/handlers found above the binary (up --handlers)"),
        // Gateway hardening.
        Setting("CONVEYOR_IDLE_TIMEOUT", "60", "seconds before the gateway closes an idle HTTP connection, 1-86400 (gateway --idle-timeout)"),
        Setting("CONVEYOR_MAX_CONNECTIONS", nil, "open HTTP connections beyond which the gateway answers 503; unset: the open-file limit less 256 (gateway --max-connections)"),
        Setting("CONVEYOR_ALLOWED_HOSTS", nil, "Host names the gateway answers without tokens besides its own address and localhost; * for any (gateway --allowed-hosts)"),
        // Configuration itself.
        Setting("CONVEYOR_ENV_FILE", "./.env", "the .env file read at start-up (--env-file)"),
        // Journal integrity.
        Setting("CONVEYOR_ACCEPT_JOURNAL_LOSS", nil, "1: start even if the journal is behind its high-water mark, and reset the mark (broker --accept-journal-loss)"),
    ]

    /// Where a setting's effective value comes from.
    enum Source: String { case flag, env, file, `default` }

    struct Effective {
        let setting: Setting
        let value: String?
        let source: Source
        /// The value as it may be shown: secrets masked.
        var shown: String? {
            guard let value else { return nil }
            return setting.secret ? Settings.mask(value) : value
        }
    }

    static func mask(_ v: String) -> String {
        let n = v.split(separator: ",").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.count
        return n > 1 ? "****** (\(n) values)" : "******"
    }

    /// Environment, then the `.env` file (already merged into the environment
    /// at start-up, with a record of which variables it supplied), then defaults.
    static func effective(_ startup: StartupEnvironment = .current) -> [Effective] {
        all.map { s in
            if s.env == "CONVEYOR_ENV_FILE" {
                return Effective(setting: s, value: startup.envFile ?? "none", source: startup.envFileSource)
            }
            if let v = env(s.env) {
                return Effective(setting: s, value: v, source: startup.fromFile[s.env] != nil ? .file : .env)
            }
            return Effective(setting: s, value: s.defaultValue, source: .default)
        }
    }
}
