import ZeroMQ

/// The broker's XPUB socket. XPUB tells us which topic prefixes anyone has
/// subscribed to, so events nobody wants are never encoded: publishing costs
/// nothing until a dashboard connects.
final class EventPublisher {
    let socket: ZMQSocket
    private var prefixes: Set<[UInt8]> = []

    init(socket: ZMQSocket) {
        self.socket = socket
    }

    /// Reads subscription changes (`\x01prefix` / `\x00prefix`) waiting on the socket.
    func readSubscriptions() {
        for _ in 0..<1000 {
            guard let msg = try? socket.receive(dontWait: true), let frame = msg.first, let op = frame.first else { return }
            let prefix = Array(frame.dropFirst())
            if op == 1 { prefixes.insert(prefix) } else if op == 0 { prefixes.remove(prefix) }
        }
    }

    /// Whether any subscriber's prefix matches `topic`.
    func wants(_ topic: String) -> Bool {
        if prefixes.isEmpty { return false }
        let t = Array(topic.utf8)
        return prefixes.contains { p in p.count <= t.count && t.starts(with: p) }
    }

    func publish(_ topic: String, _ json: [UInt8]) {
        // PUB never blocks: at the high-water mark libzmq drops for that subscriber.
        _ = try? socket.send([Array(topic.utf8), json], dontWait: true)
    }
}
