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
public final class BrokerClient {
    public let endpoint: String
    private let socket: ZMQSocket
    private var counter: UInt64 = 0
    private var notifications: [ClientReply] = []
    private var replies: [[UInt8]: ClientReply] = [:]

    public init(context: ZMQContext, endpoint: String, security: SocketProfile.Security = .none) throws {
        self.endpoint = endpoint
        socket = try context.socket(SocketRoles.clientDealer(security: security))
        try socket.connect(endpoint)
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

    /// Sends a request and waits for its reply.
    public func call(timeoutMs: Int = 5000, _ make: ([UInt8]) -> ClientRequest) throws -> ClientReply {
        let rid = nextRequestID()
        try send(make(rid))
        let deadline = nowMs() + Int64(timeoutMs)
        while true {
            if let r = replies.removeValue(forKey: rid) { return r }
            let left = deadline - nowMs()
            guard left > 0, let reply = try receive(timeoutMs: Int(left)) else {
                throw ClientError.timeout(endpoint: endpoint, ms: timeoutMs)
            }
            if let id = reply.requestID {
                if id == rid { return reply }
                replies[id] = reply
            } else {
                notifications.append(reply)
            }
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
