import ZeroMQ

/// The profile of every socket Conveyor opens, one per role. Call sites ask
/// for a role; the options each role needs are decided here and nowhere else.
public enum SocketRoles {
    /// Queued messages a socket holds per peer before sends fail (ROUTER) or block.
    public static let highWaterMark: Int32 = 100_000

    /// The broker's ROUTER for clients or workers: fails sends to vanished peers
    /// (ROUTER_MANDATORY) and drops peers that send oversized frames.
    public static func brokerRouter(maxMessageSize: Int64, security: SocketProfile.Security) -> SocketProfile {
        var p = SocketProfile(.router, security: security)
        p.routerMandatory = true
        p.maxMessageSize = maxMessageSize
        p.sendHighWaterMark = highWaterMark
        p.receiveHighWaterMark = highWaterMark
        return p
    }

    /// The broker's event XPUB (and the gateway's republisher).
    public static func eventPublisher(security: SocketProfile.Security) -> SocketProfile {
        var p = SocketProfile(.xpub, security: security)
        p.sendHighWaterMark = highWaterMark
        return p
    }

    /// The largest frame a worker or client accepts from the broker.
    public static let peerMaxMessageSize: Int64 = 64 * 1024 * 1024

    /// A worker's DEALER to the broker: a new one per connection (spec §8.3).
    public static func workerDealer(security: SocketProfile.Security) -> SocketProfile {
        var p = SocketProfile(.dealer, security: security)
        p.maxMessageSize = peerMaxMessageSize
        p.sendHighWaterMark = highWaterMark
        p.receiveHighWaterMark = highWaterMark
        return p
    }

    /// A client's DEALER to the broker. `immediate`: sends fail at once while
    /// the broker is unreachable instead of queueing for a reconnect (the
    /// gateway answers 503 fast).
    public static func clientDealer(security: SocketProfile.Security, immediate: Bool = false,
                                    maxMessageSize: Int64 = peerMaxMessageSize) -> SocketProfile {
        var p = SocketProfile(.dealer, security: security)
        p.immediate = immediate
        p.maxMessageSize = maxMessageSize
        p.sendHighWaterMark = highWaterMark
        p.receiveHighWaterMark = highWaterMark
        if immediate { p.reconnect = (100, 1000) }
        return p
    }

    /// A SUB on an event stream.
    public static func subscriber(security: SocketProfile.Security, topics: [String] = [],
                                  maxMessageSize: Int64 = peerMaxMessageSize) -> SocketProfile {
        var p = SocketProfile(.sub, security: security)
        p.receiveHighWaterMark = highWaterMark
        p.maxMessageSize = maxMessageSize
        p.reconnect = (100, 1000)
        p.subscriptions = topics.map { Array($0.utf8) }
        return p
    }
}
