import ConveyorProtocol
/// Settings of one gateway instance (the CLI fills them from flags and environment).
public struct GatewayConfig: Sendable {
    public var host = "127.0.0.1"
    /// 0: an ephemeral port.
    public var port = 8001
    /// Accepted bearer tokens, bare (every scope). Empty: authentication is
    /// off (the CLI warns). `tokens`, when set, replaces them.
    public var apiTokens: [String] = []
    /// Named, scoped tokens (`CONVEYOR_API_TOKENS` in its full form, or `--tokens-file`).
    public var tokens: APITokens?
    /// `GET /api/queue/stats` needs a `read` token too (it is open by default,
    /// for the seed-compatible clients).
    public var privateStats = false
    /// Largest request body accepted (`CONVEYOR_MAX_PAYLOAD_BYTES`); larger is 413.
    public var maxPayloadBytes = Limits.defaultMaxPayloadBytes
    /// How long a request waits for the broker before answering 503.
    public var brokerTimeoutMs = 5000
    /// How often a live stream re-reads the task's status when no event came
    /// (covers events lost by PUB/SUB) and sends a keep-alive.
    public var streamPollMs = 5000
    /// Idle time after which a stream re-checks the broker; a stream ends when the
    /// task is final, when the client goes away, or after `streamMaxFailures`
    /// consecutive failed status checks.
    public var streamMaxFailures = 6

    public init() {}
}
