import CZeroMQ
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum ZMQSocketType: Int32, Sendable {
    case pair = 0, pub = 1, sub = 2, req = 3, rep = 4, dealer = 5, router = 6
    case pull = 7, push = 8, xpub = 9, xsub = 10
}

/// A ZeroMQ socket. Not thread-safe, by libzmq's rules: it must be used only by
/// the thread that owns it, so this type is deliberately not `Sendable`.
///
/// Frames are `[UInt8]`: message bodies are copied out of `zmq_msg_t` once, so
/// nothing here outlives libzmq's buffers.
public final class ZMQSocket {
    private var handle: UnsafeMutableRawPointer?
    public let type: ZMQSocketType
    /// Keeps the context alive: zmq_ctx_term blocks until every socket is closed.
    private let context: ZMQContext

    init(context: ZMQContext, type: ZMQSocketType) throws(ZMQError) {
        guard let s = zmq_socket(context.handle, type.rawValue) else { throw .last("zmq_socket") }
        handle = s
        self.type = type
        self.context = context
        // libzmq lingers forever by default, which hangs zmq_ctx_term on exit.
        try setOption(ZMQ_LINGER, Int32(0))
    }

    deinit { close() }

    /// Closes the socket; pending outgoing messages are dropped (linger 0 unless changed).
    public func close() {
        if let h = handle {
            zmq_close(h)
            handle = nil
        }
    }

    private var h: UnsafeMutableRawPointer {
        get throws(ZMQError) {
            guard let h = handle else { throw ZMQError(errno: ENOTSOCK, operation: "closed socket") }
            return h
        }
    }

    // MARK: Options

    public func setOption(_ option: Int32, _ value: Int32) throws(ZMQError) {
        var v = value
        if zmq_setsockopt(try h, option, &v, MemoryLayout<Int32>.size) != 0 { throw .last("zmq_setsockopt(\(option))") }
    }

    public func setOption(_ option: Int32, int64 value: Int64) throws(ZMQError) {
        var v = value
        if zmq_setsockopt(try h, option, &v, MemoryLayout<Int64>.size) != 0 { throw .last("zmq_setsockopt(\(option))") }
    }

    public func setOption(_ option: Int32, bytes: [UInt8]) throws(ZMQError) {
        let hh = try h
        let rc = bytes.withUnsafeBytes { zmq_setsockopt(hh, option, $0.baseAddress, $0.count) }
        if rc != 0 { throw .last("zmq_setsockopt(\(option))") }
    }

    public func getInt32(_ option: Int32) throws(ZMQError) -> Int32 {
        var v: Int32 = 0
        var size = MemoryLayout<Int32>.size
        if zmq_getsockopt(try h, option, &v, &size) != 0 { throw .last("zmq_getsockopt(\(option))") }
        return v
    }

    /// ROUTER only: fail sends to unknown peers with EHOSTUNREACH instead of
    /// dropping them silently.
    public func setRouterMandatory(_ on: Bool = true) throws(ZMQError) { try setOption(ZMQ_ROUTER_MANDATORY, on ? 1 : 0) }
    /// Caps the size of any inbound message; larger ones disconnect the peer.
    public func setMaxMessageSize(_ bytes: Int64) throws(ZMQError) { try setOption(ZMQ_MAXMSGSIZE, int64: bytes) }
    public func setSendHighWaterMark(_ n: Int32) throws(ZMQError) { try setOption(ZMQ_SNDHWM, n) }
    public func setReceiveHighWaterMark(_ n: Int32) throws(ZMQError) { try setOption(ZMQ_RCVHWM, n) }
    public func setSendTimeout(ms: Int32) throws(ZMQError) { try setOption(ZMQ_SNDTIMEO, ms) }
    public func setLinger(ms: Int32) throws(ZMQError) { try setOption(ZMQ_LINGER, ms) }
    public func setRoutingID(_ id: [UInt8]) throws(ZMQError) { try setOption(ZMQ_ROUTING_ID, bytes: id) }
    /// Queues messages only on completed connections, so a send while the peer is
    /// unreachable fails at once (EAGAIN) instead of waiting for a reconnect.
    public func setImmediate(_ on: Bool = true) throws(ZMQError) { try setOption(ZMQ_IMMEDIATE, on ? 1 : 0) }
    public func subscribe(_ prefix: [UInt8]) throws(ZMQError) { try setOption(ZMQ_SUBSCRIBE, bytes: prefix) }
    public func subscribe(_ prefix: String) throws(ZMQError) { try subscribe(Array(prefix.utf8)) }
    public func unsubscribe(_ prefix: [UInt8]) throws(ZMQError) { try setOption(ZMQ_UNSUBSCRIBE, bytes: prefix) }
    public func unsubscribe(_ prefix: String) throws(ZMQError) { try unsubscribe(Array(prefix.utf8)) }
    /// Makes `reconnect` attempts start fast and back off, as a worker should.
    public func setReconnectInterval(ms: Int32, maxMs: Int32) throws(ZMQError) {
        try setOption(ZMQ_RECONNECT_IVL, ms)
        try setOption(ZMQ_RECONNECT_IVL_MAX, maxMs)
    }

    // MARK: Endpoints

    public func bind(_ endpoint: String) throws(ZMQError) {
        if zmq_bind(try h, endpoint) != 0 { throw .last("zmq_bind(\(endpoint))") }
    }

    public func connect(_ endpoint: String) throws(ZMQError) {
        if zmq_connect(try h, endpoint) != 0 { throw .last("zmq_connect(\(endpoint))") }
    }

    /// The endpoint actually bound, which resolves `tcp://127.0.0.1:*` to a port.
    public func lastEndpoint() throws(ZMQError) -> String {
        var buffer = [CChar](repeating: 0, count: 512)
        var size = buffer.count
        if zmq_getsockopt(try h, ZMQ_LAST_ENDPOINT, &buffer, &size) != 0 { throw .last("zmq_getsockopt(LAST_ENDPOINT)") }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: Messages

    /// Sends a multipart message. Returns false if it would block (`dontWait`)
    /// and nothing was sent. Throws on other errors; on a ROUTER with
    /// ROUTER_MANDATORY, an unknown peer fails the first (identity) frame with
    /// EHOSTUNREACH and no further frame is sent.
    @discardableResult
    public func send(_ frames: [[UInt8]], dontWait: Bool = false) throws(ZMQError) -> Bool {
        let hh = try h
        let base: Int32 = dontWait ? ZMQ_DONTWAIT : 0
        for (i, frame) in frames.enumerated() {
            let flags = base | (i < frames.count - 1 ? ZMQ_SNDMORE : 0)
            while true {
                let rc = frame.withUnsafeBytes { zmq_send(hh, $0.baseAddress, $0.count, flags) }
                if rc >= 0 { break }
                let err = ZMQError.last("zmq_send")
                if err.isInterrupted { continue }
                // libzmq sends multipart messages atomically: once the first
                // frame is accepted, later frames do not fail with EAGAIN.
                if err.isAgain && i == 0 { return false }
                throw err
            }
        }
        return true
    }

    /// Receives one whole multipart message, or nil if none is waiting (`dontWait`).
    public func receive(dontWait: Bool = false) throws(ZMQError) -> [[UInt8]]? {
        try receive(dontWait: dontWait, userID: nil)
    }

    /// Like `receive`, and also reads the message's ZAP `User-Id` property:
    /// who the ZAP handler said the peer is (the same for every message of a
    /// connection). Empty when the socket has no security mechanism.
    public func receiveWithUserID(dontWait: Bool = false) throws(ZMQError) -> (frames: [[UInt8]], userID: String)? {
        var user = ""
        guard let frames = try receive(dontWait: dontWait, userID: &user) else { return nil }
        return (frames, user)
    }

    private func receive(dontWait: Bool, userID: UnsafeMutablePointer<String>?) throws(ZMQError) -> [[UInt8]]? {
        let hh = try h
        var frames: [[UInt8]] = []
        var msg = zmq_msg_t()
        zmq_msg_init(&msg)
        defer { zmq_msg_close(&msg) }
        while true {
            let flags: Int32 = (dontWait && frames.isEmpty) ? ZMQ_DONTWAIT : 0
            let rc = zmq_msg_recv(&msg, hh, flags)
            if rc < 0 {
                let err = ZMQError.last("zmq_msg_recv")
                if err.isInterrupted { continue }
                if err.isAgain && frames.isEmpty { return nil }
                throw err
            }
            // The first frame that carries it (a ROUTER's identity frame does too).
            if let userID, userID.pointee.isEmpty, let v = zmq_msg_gets(&msg, "User-Id") { userID.pointee = String(cString: v) }
            let size = zmq_msg_size(&msg)
            if size == 0 {
                frames.append([])
            } else {
                let data = zmq_msg_data(&msg)!
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            }
            // Read `more` before the message is reused or closed.
            if zmq_msg_more(&msg) == 0 { break }
        }
        return frames
    }

    /// For `ZMQPoller`.
    var rawHandle: UnsafeMutableRawPointer? { handle }
}

extension ZMQSocket {
    /// Hands up to `limit` waiting messages to `body` without blocking, so a
    /// poll loop can empty a socket yet bound the time spent on it. Throws
    /// only real errors (such as ETERM), never "nothing waiting".
    public func receiveWaiting(limit: Int, _ body: ([[UInt8]]) -> Void) throws(ZMQError) {
        for _ in 0..<limit {
            guard let frames = try receive(dontWait: true) else { return }
            body(frames)
        }
    }

    /// `receiveWaiting` with each message's ZAP `User-Id` (see `receiveWithUserID`).
    public func receiveWaitingWithUserID(limit: Int, _ body: ([[UInt8]], String) -> Void) throws(ZMQError) {
        for _ in 0..<limit {
            guard let m = try receiveWithUserID(dontWait: true) else { return }
            body(m.frames, m.userID)
        }
    }
}
