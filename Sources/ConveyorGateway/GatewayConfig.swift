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
    /// The broker's payload limit (`--max-payload`, `CONVEYOR_MAX_PAYLOAD_BYTES`,
    /// the same setting the broker reads). Request bodies above it, and task
    /// payloads above it once built (an upload grows by a third in base64), are
    /// answered 413 without reaching the broker.
    public var maxPayloadBytes = PayloadLimits.defaultMaxPayloadBytes
    /// How long a request waits for the broker before answering 503.
    public var brokerTimeoutMs = 5000
    /// How often a live stream re-reads the task's status when no event came
    /// (covers events lost by PUB/SUB) and sends a keep-alive.
    public var streamPollMs = 5000
    /// Idle time after which a stream re-checks the broker; a stream ends when the
    /// task is final, when the client goes away, or after `streamMaxFailures`
    /// consecutive failed status checks.
    public var streamMaxFailures = 6

    // MARK: Connection limits

    /// A connection with no request in progress for this long is closed, and so
    /// is a new one whose first request head has not arrived by then (`--idle-timeout`).
    public var idleTimeoutSeconds = 60.0
    /// A new connection whose first request head has not arrived after this long
    /// (or `idleTimeoutSeconds`, if shorter) is closed: silent and slow-header
    /// connections must not hold descriptors for a full idle timeout.
    public var requestHeadTimeoutSeconds = 10.0
    /// Requests on connections beyond this many open ones are answered 503
    /// (`--max-connections`). nil: derived from the file-descriptor limit.
    public var maxConnections: Int?
    /// Largest request head: one header field, and all of them together.
    public var maxHeaderBytes = 64 * 1024
    /// Most header fields in one request.
    public var maxHeaderCount = 100

    // MARK: Host check

    /// With no tokens configured, the `Host` names (besides the listening
    /// address, `localhost`, `127.0.0.1` and `[::1]`) requests may carry
    /// (`--allowed-hosts`); `*` accepts any. Against DNS rebinding.
    public var allowedHosts: [String] = []

    public init() {}
}
