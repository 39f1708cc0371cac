import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A thread-safe queue whose owner waits on it in the same `zmq_poll` as its
/// sockets: `post` appends and writes a byte to a pipe that `ZMQPoller` watches.
///
/// This is how other threads (handler threads, Swift concurrency tasks) hand
/// work to the one thread that owns a socket, without ever touching the socket.
public final class Mailbox<Message: Sendable>: Sendable {
    private let queue = Mutex<[Message]>([])
    private let readFD: Int32
    private let writeFD: Int32

    public init() {
        var fds: [Int32] = [0, 0]
        // A pipe only fails when the process is out of descriptors.
        guard pipe(&fds) == 0 else { fatalError("pipe() failed: errno \(errno)") }
        readFD = fds[0]
        writeFD = fds[1]
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    }

    deinit {
        _ = close(readFD)
        _ = close(writeFD)
    }

    /// The descriptor to add to a `ZMQPoller`.
    public var pollFD: Int32 { readFD }

    public func post(_ message: Message) {
        let wasEmpty = queue.withLock { q in
            q.append(message)
            return q.count == 1
        }
        if wasEmpty {
            var b: UInt8 = 1
            _ = write(writeFD, &b, 1) // EAGAIN means a wake-up is already pending
        }
    }

    /// Takes everything posted so far (owner thread only).
    public func drain() -> [Message] {
        var buf = [UInt8](repeating: 0, count: 64)
        while read(readFD, &buf, buf.count) > 0 {}
        return queue.withLock { q in
            let out = q
            q.removeAll(keepingCapacity: true)
            return out
        }
    }
}
