import CZeroMQ

/// Everything a socket is made with, in one value: its type and options, and
/// its security (CURVE) as one field. Every socket in Conveyor is made by
/// `ZMQContext.socket(_:)` from a profile, so the options that matter — linger,
/// high-water marks, the message-size cap, ROUTER_MANDATORY, IMMEDIATE,
/// reconnect backoff, CURVE keys and the ZAP domain — are set in one place,
/// before any bind or connect, instead of differently at each call site.
public struct SocketProfile: Sendable {
    /// How the socket authenticates (ZeroMQ's security mechanisms).
    public enum Security: Sendable, Equatable {
        /// NULL mechanism: no authentication, no encryption.
        case none
        /// A CURVE server: clients must know `publicKey`; the ZAP handler of
        /// the context decides who gets in, under `zapDomain`.
        case curveServer(secretKey: String, zapDomain: String)
        /// A CURVE client of the server whose public key is `serverKey`.
        case curveClient(publicKey: String, secretKey: String, serverKey: String)
    }

    public var type: ZMQSocketType
    public var security: Security = .none
    public var lingerMs: Int32 = 0
    public var sendHighWaterMark: Int32?
    public var receiveHighWaterMark: Int32?
    public var maxMessageSize: Int64?
    public var routerMandatory = false
    public var immediate = false
    public var reconnect: (intervalMs: Int32, maxMs: Int32)?
    public var subscriptions: [[UInt8]] = []

    public init(_ type: ZMQSocketType, security: Security = .none) {
        self.type = type
        self.security = security
    }

    /// True for CURVE, either side.
    public var isSecure: Bool { security != .none }

    func apply(to s: ZMQSocket) throws(ZMQError) {
        try s.setLinger(ms: lingerMs)
        if let n = sendHighWaterMark { try s.setSendHighWaterMark(n) }
        if let n = receiveHighWaterMark { try s.setReceiveHighWaterMark(n) }
        if let n = maxMessageSize { try s.setMaxMessageSize(n) }
        if routerMandatory { try s.setRouterMandatory() }
        if immediate { try s.setImmediate() }
        if let r = reconnect { try s.setReconnectInterval(ms: r.intervalMs, maxMs: r.maxMs) }
        switch security {
        case .none:
            break
        case .curveServer(let secret, let domain):
            try s.setOption(ZMQ_CURVE_SERVER, 1)
            try s.setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(secret.utf8))
            try s.setOption(ZMQ_ZAP_DOMAIN, bytes: Array(domain.utf8))
        case .curveClient(let pub, let secret, let server):
            try s.setOption(ZMQ_CURVE_SERVERKEY, bytes: Array(server.utf8))
            try s.setOption(ZMQ_CURVE_PUBLICKEY, bytes: Array(pub.utf8))
            try s.setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(secret.utf8))
        }
        for prefix in subscriptions { try s.subscribe(prefix) }
    }
}

extension ZMQContext {
    /// A socket made from `profile`, with every option set before it is bound or connected.
    public func socket(_ profile: SocketProfile) throws(ZMQError) -> ZMQSocket {
        let s = try socket(profile.type)
        do { try profile.apply(to: s) } catch {
            s.close()
            throw error
        }
        return s
    }
}
