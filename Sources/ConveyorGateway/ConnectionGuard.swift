import Synchronization

/// The gateway's count of open HTTP connections and the limits it applies.
///
/// Why: each connection holds a file descriptor, and a gateway that runs out of
/// them cannot accept, cannot answer `/healthz`, and can take libzmq (which aborts
/// when it cannot make a socket) down with it. So the gateway keeps a reserve:
/// beyond `shedAbove` open connections every request is answered 503 with
/// `Retry-After` (`LoadSheddingMiddleware`), and at `acceptCap` it stops accepting
/// altogether (Hummingbird's `MaximumAvailableConnections`: further connections
/// wait in the kernel's backlog, which costs no descriptor), `reserve` below the
/// descriptor limit.
public final class ConnectionGuard: Sendable {
    /// Descriptors kept for the broker connection, the journal of logs, the
    /// listening socket and whatever else the process opens.
    public static let reserve = 128
    /// Requests on connections beyond this many open ones are answered 503.
    public let shedAbove: Int
    /// No connection is accepted while this many are open.
    public let acceptCap: Int
    /// How long a new connection may take to send its first request head.
    public let firstRequestTimeoutSeconds: Double
    private let openCount = Atomic<Int>(0)
    private let shedCount = Atomic<Int>(0)

    /// `descriptorLimit`: the soft `RLIMIT_NOFILE` (after `FileDescriptorLimit.raiseSoftToHard()`).
    /// `maxConnections`: an explicit shedding threshold (`--max-connections`); it is
    /// capped below the accept cap so that shedding always comes first.
    public init(descriptorLimit: Int, maxConnections: Int?, firstRequestTimeoutSeconds: Double) {
        let cap = max(16, descriptorLimit - Self.reserve)
        acceptCap = cap
        let derived = max(8, cap - Self.reserve)
        shedAbove = min(maxConnections ?? derived, cap - 1)
        self.firstRequestTimeoutSeconds = firstRequestTimeoutSeconds
    }

    /// Connections open now.
    public var open: Int { openCount.load(ordering: .relaxed) }
    /// Requests answered 503 by load shedding so far.
    public var shed: Int { shedCount.load(ordering: .relaxed) }
    /// True when a request now should be shed.
    public var isOverloaded: Bool { open > shedAbove }

    func opened() { openCount.add(1, ordering: .relaxed) }
    func closed() { openCount.subtract(1, ordering: .relaxed) }
    func countShed() { shedCount.add(1, ordering: .relaxed) }
}
