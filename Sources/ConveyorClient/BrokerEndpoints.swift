import ConveyorCore
import ConveyorProtocol
#if canImport(Glibc)
import Glibc
#endif

/// The brokers a client may talk to — one, or an active and its standbys —
/// and the rules for moving between them (spec §9.7, the client side of the
/// zguide's Binary Star): follow `not_leader` to the broker it names, move
/// down the list (a ring) on silence, and resend what was not answered.
///
/// Why a value type of its own: the blocking `BrokerClient` and the gateway's
/// `AsyncBrokerClient` must fail over the same way; they own sockets, this
/// owns the decisions.
public struct BrokerEndpoints: Sendable, Equatable {
    public let list: [String]
    /// The endpoint in use (may be a leader outside `list`, named by a standby).
    public private(set) var current: String
    /// The position in `list` that "next" counts from.
    private var index = 0

    /// How long a request may go unanswered before a client with several
    /// endpoints tries the next one (never more than the call's own timeout).
    public static let failoverAfterMs = 2000
    /// The pause before trying the next endpoint after a `not_leader` that named nobody.
    public static let unknownLeaderPauseMs = 250

    public init(_ list: [String]) {
        self.list = list.isEmpty ? ["tcp://127.0.0.1:5555"] : list
        current = self.list[0]
    }

    /// Comma-separated, as `--broker` and `CONVEYOR_BROKER` take them.
    public init(parsing text: String) {
        self.init(text.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
    }

    /// Several brokers: failover, and automatic idempotency keys, are on.
    public var failsOver: Bool { list.count > 1 }

    /// Where to go after a `not_leader`: the named leader (unless it is the
    /// broker that just answered), else the next endpoint after a pause.
    public mutating func notLeader(leader: String) -> (endpoint: String, pauseMs: Int) {
        if !leader.isEmpty && leader != current {
            current = leader
            if let i = list.firstIndex(of: leader) { index = i }
            return (leader, 0)
        }
        return (next(), Self.unknownLeaderPauseMs)
    }

    /// Where to go after silence: the next endpoint of the ring.
    public mutating func next() -> String {
        index = (index + 1) % list.count
        current = list[index]
        return current
    }

    /// The request with an idempotency key on every submission that has none,
    /// when resending to another broker is possible: a failover must never
    /// double a task.
    public func keyed(_ request: ClientRequest) -> ClientRequest {
        guard failsOver else { return request }
        switch request {
        case .submit(let rid, var spec) where spec.idempotencyKey == nil:
            spec.idempotencyKey = Self.randomKey()
            return .submit(requestID: rid, spec: spec)
        case .submitBatch(let rid, let specs) where specs.contains { $0.idempotencyKey == nil }:
            return .submitBatch(requestID: rid, specs: specs.map {
                var s = $0
                if s.idempotencyKey == nil { s.idempotencyKey = Self.randomKey() }
                return s
            })
        default:
            return request
        }
    }

    /// 128 random bits in hex.
    static func randomKey() -> String {
        var g = SystemRandomNumberGenerator()
        func hex16(_ v: UInt64) -> String {
            let h = String(v, radix: 16)
            return String(repeating: "0", count: 16 - h.count) + h
        }
        return hex16(g.next()) + hex16(g.next())
    }
}
