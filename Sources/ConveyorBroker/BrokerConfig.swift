import ConveyorCore
import ConveyorJournal
import ConveyorTransport

/// Everything the broker process is told at start. The CLI fills it from
/// flags and environment variables.
public struct BrokerConfig: Sendable {
    public var clientsEndpoint = "tcp://127.0.0.1:5555"
    public var workersEndpoint = "tcp://127.0.0.1:5556"
    public var eventsEndpoint = "tcp://127.0.0.1:5557"
    public var scheduler = SchedulerConfig()
    /// How often the `stats` event is published.
    public var statsIntervalMs: Int64 = 1000
    public var journal: JournalConfig = .init()
    /// The CURVE key directory (`--curve-dir`): nil = plaintext (loopback only, or `--insecure`).
    public var curveDirectory: String?
    /// How often the allowlists are re-read for revocations (also on SIGHUP).
    public var allowlistReloadMs: Int64 = 5000
    /// How long the journal's lease lasts unless renewed (`--lease-ttl`): with
    /// a shared journal, how long a dead active broker keeps the standby waiting.
    public var leaseTTLMs: Int64 = 5000
    /// Where clients reach this broker (`--advertise`), for a standby to name
    /// in `not_leader`; nil = the client endpoint as bound.
    public var advertiseEndpoint: String?

    public init() {}
}
