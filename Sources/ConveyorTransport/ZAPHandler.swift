import Foundation
import Logging
import Synchronization
import ZeroMQ

/// The ZeroMQ Authentication Protocol handler (RFC 27) for one context: every
/// CURVE handshake on a socket of that context is decided here, against the
/// allowlist of the socket's ZAP domain (= its `PeerRole`). An accepted peer's
/// `User-Id` is its public key (Z85), which every message it sends then
/// carries, so the broker knows whose message it is.
///
/// It must run before any CURVE server socket binds: with no handler bound,
/// libzmq lets any client that knows the server's public key in. `start()`
/// returns only once its socket is bound. It owns its socket on its own thread.
public final class ZAPHandler: @unchecked Sendable {
    public static let endpoint = "inproc://zeromq.zap.01"

    private let context: ZMQContext
    private let directory: CurveDirectory
    private let logger: Logger
    private let control = Mailbox<Bool>()
    private let failures = Atomic<Int>(0)
    private var thread: Thread?

    /// Handshakes refused since start.
    public var authFailures: Int { failures.load(ordering: .relaxed) }

    public init(context: ZMQContext, directory: CurveDirectory, logger: Logger) {
        self.context = context
        self.directory = directory
        self.logger = logger
    }

    /// Binds the handler's socket and starts answering. Throws if it cannot bind.
    public func start() throws {
        let ready = DispatchSemaphore(value: 0)
        let result = Mutex<ZMQError?>(nil)
        let t = Thread { [self] in
            let socket: ZMQSocket
            do {
                socket = try context.socket(SocketProfile(.rep))
                try socket.bind(Self.endpoint)
            } catch let e as ZMQError {
                result.withLock { $0 = e }
                ready.signal()
                return
            } catch {
                ready.signal()
                return
            }
            ready.signal()
            serve(socket)
            socket.close()
        }
        t.name = "conveyor-zap"
        thread = t
        t.start()
        ready.wait()
        if let e = result.withLock({ $0 }) { throw e }
    }

    public func stop() { control.post(true) }

    private func serve(_ socket: ZMQSocket) {
        var poller = ZMQPoller()
        let iSocket = poller.add(socket)
        let iControl = poller.add(fd: control.pollFD)
        while true {
            guard let ready = try? poller.poll(timeoutMs: 1000) else { return }
            if ready[iControl], control.drain().contains(true) { return }
            guard ready[iSocket] else { continue }
            do {
                guard let request = try socket.receive(dontWait: true) else { continue }
                try socket.send(answer(request))
            } catch {
                if error.isTerminated { return }
            }
        }
    }

    /// One ZAP reply: `version, request_id, status_code, status_text, user_id, metadata`.
    func answer(_ f: [[UInt8]]) -> [[UInt8]] {
        let version = Array("1.0".utf8)
        guard f.count >= 6, f[0] == version else {
            failures.add(1, ordering: .relaxed)
            return [version, f.count > 1 ? f[1] : [], Array("500".utf8), Array("malformed ZAP request".utf8), [], []]
        }
        let requestID = f[1], domain = String(decoding: f[2], as: UTF8.self)
        let address = String(decoding: f[3], as: UTF8.self), mechanism = String(decoding: f[5], as: UTF8.self)
        func deny(_ why: String) -> [[UInt8]] {
            failures.add(1, ordering: .relaxed)
            logger.warning("connection refused", metadata: ["endpoint": "\(domain)", "from": "\(address)", "reason": "\(why)"])
            return [version, requestID, Array("400".utf8), Array(why.utf8), [], []]
        }
        guard mechanism == "CURVE" else { return deny("mechanism \(mechanism) is not allowed") }
        guard let role = PeerRole(rawValue: domain) else { return deny("unknown ZAP domain '\(domain)'") }
        guard f.count == 7, f[6].count == 32, let key = ZMQCurve.z85Encode(f[6]) else { return deny("bad CURVE credentials") }
        guard directory.permits(key, as: role) else { return deny("key \(key) is not allowed on the \(role.rawValue) endpoint") }
        return [version, requestID, Array("200".utf8), Array("OK".utf8), Array(key.utf8), []]
    }
}
