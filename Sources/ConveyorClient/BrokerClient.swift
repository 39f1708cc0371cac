import ConveyorCore
import ConveyorProtocol
import ConveyorTransport
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// Why a client call did not get an answer.
public enum ClientError: Error, CustomStringConvertible, Sendable {
    /// The broker did not answer in time (down, or overloaded).
    case timeout(endpoint: String, ms: Int)
    /// Nothing could be queued: with ZMQ_IMMEDIATE that means no connection to the broker.
    case notConnected(endpoint: String)
    case protocolError(ProtocolError)
    case transport(ZMQError)

    public var description: String {
        switch self {
        case .timeout(let e, let ms): "no reply from the broker at \(e) within \(ms) ms"
        case .notConnected(let e): "not connected to the broker at \(e)"
        case .protocolError(let p): "broker sent a malformed reply: \(p)"
        case .transport(let z): "\(z)"
        }
    }
}

/// A blocking client of the broker's client protocol, for one thread (the CLI,
/// tests, benchmarks). Replies are matched to requests by request id; PROGRESS
/// and FINISHED notifications that arrive meanwhile are kept for `nextNotification`.
/// Given an active and standby brokers, `call` follows `not_leader` and moves
/// on after silence (`BrokerEndpoints`).
public final class BrokerClient {
    /// The endpoint in use.
    public var endpoint: String { endpoints.current }
    public private(set) var endpoints: BrokerEndpoints
    private let context: ZMQContext
    private let security: SocketProfile.Security
    private var socket: ZMQSocket
    private var counter: UInt64 = 0
    private var notifications: [ClientReply] = []
    private var replies: [[UInt8]: ClientReply] = [:]

    public convenience init(context: ZMQContext, endpoint: String, security: SocketProfile.Security = .none) throws {
        try self.init(context: context, endpoints: BrokerEndpoints([endpoint]), security: security)
    }

    public init(context: ZMQContext, endpoints: BrokerEndpoints, security: SocketProfile.Security = .none) throws {
        self.endpoints = endpoints
        self.context = context
        self.security = security
        socket = try context.socket(SocketRoles.clientDealer(security: security))
        try socket.connect(endpoints.current)
    }

    /// A new socket on `endpoint` (the old one's queued messages are dropped: linger 0).
    private func reconnect(to endpoint: String) throws {
        try? socket.setLinger(ms: 0)
        socket.close()
        do {
            socket = try context.socket(SocketRoles.clientDealer(security: security))
            try socket.connect(endpoint)
        } catch let e as ZMQError { throw ClientError.transport(e) }
    }

    public func close() { socket.close() }

    public func nextRequestID() -> [UInt8] {
        counter += 1
        return Array(String(counter, radix: 36).utf8)
    }

    /// Sends without waiting (pipelining); pair with `receive`.
    public func send(_ request: ClientRequest) throws {
        do { try socket.send(request.encode()) } catch { throw ClientError.transport(error) }
    }

    /// One message from the broker, or nil after `timeoutMs`.
    public func receive(timeoutMs: Int) throws -> ClientReply? {
        var poller = ZMQPoller()
        poller.add(socket)
        do {
            if let frames = try socket.receive(dontWait: true) { return try decode(frames) }
            guard try poller.poll(timeoutMs: timeoutMs)[0], let frames = try socket.receive(dontWait: true) else { return nil }
            return try decode(frames)
        } catch let e as ZMQError { throw ClientError.transport(e) }
    }

    private func decode(_ frames: [[UInt8]]) throws -> ClientReply {
        do { return try ClientReply.decode(frames) } catch { throw ClientError.protocolError(error) }
    }

    /// Sends a request and waits for its reply. With several brokers, a
    /// `not_leader` or `failoverAfterMs` of silence sends it again to the next
    /// (same request id; submissions carry an idempotency key, so a resend
    /// never doubles a task); `timeoutMs` bounds the whole call.
    public func call(timeoutMs: Int = 5000, _ make: ([UInt8]) -> ClientRequest) throws -> ClientReply {
        let rid = nextRequestID()
        let request = endpoints.keyed(make(rid))
        try send(request)
        let deadline = nowMs() + Int64(timeoutMs)
        var resendAt = endpoints.failsOver ? nowMs() + Int64(BrokerEndpoints.failoverAfterMs) : Int64.max
        var lastLeaderHint: ClientReply?
        while true {
            let reply: ClientReply
            if let r = replies.removeValue(forKey: rid) {
                reply = r
            } else {
                let now = nowMs()
                guard now < deadline else {
                    if let hint = lastLeaderHint { return hint } // only standbys answered: say so
                    throw ClientError.timeout(endpoint: endpoint, ms: timeoutMs)
                }
                if now >= resendAt {
                    try reconnect(to: endpoints.next())
                    try send(request)
                    resendAt = now + Int64(BrokerEndpoints.failoverAfterMs)
                    continue
                }
                guard let r = try receive(timeoutMs: Int(min(deadline, resendAt) - now)) else { continue }
                guard let id = r.requestID else {
                    notifications.append(r)
                    continue
                }
                guard id == rid else {
                    replies[id] = r
                    continue
                }
                reply = r
            }
            // One broker only: the answer is the caller's (§9.7: a single-endpoint client does not fail over).
            guard case .notLeader(_, _, _, let leader) = reply, endpoints.failsOver else { return reply }
            // A standby answered: go where it points, and ask again.
            lastLeaderHint = reply
            let (next, pause) = endpoints.notLeader(leader: leader)
            if pause > 0 { usleep(UInt32(min(Int64(pause), max(0, deadline - nowMs())) * 1000)) }
            try reconnect(to: next)
            try send(request)
            resendAt = endpoints.failsOver ? nowMs() + Int64(BrokerEndpoints.failoverAfterMs) : deadline
        }
    }

    /// The next PROGRESS or FINISHED for a task this connection submitted.
    public func nextNotification(timeoutMs: Int) throws -> ClientReply? {
        if !notifications.isEmpty { return notifications.removeFirst() }
        let deadline = nowMs() + Int64(timeoutMs)
        while true {
            let left = deadline - nowMs()
            guard left > 0, let reply = try receive(timeoutMs: Int(left)) else { return nil }
            if let id = reply.requestID { replies[id] = reply } else { return reply }
        }
    }
}

func nowMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
