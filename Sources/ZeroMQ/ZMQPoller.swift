import CZeroMQ

/// Waits on several sockets (and plain file descriptors, such as a `Mailbox`'s
/// wake-up pipe) at once, as `zmq_poll` does. Built once per loop and reused.
public struct ZMQPoller {
    private var items: [zmq_pollitem_t] = []

    public init() {}

    /// Adds a socket polled for input; returns its index in `poll`'s result.
    @discardableResult
    public mutating func add(_ socket: ZMQSocket) -> Int {
        items.append(zmq_pollitem_t(socket: socket.rawHandle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0))
        return items.count - 1
    }

    /// Adds a file descriptor polled for input.
    @discardableResult
    public mutating func add(fd: Int32) -> Int {
        items.append(zmq_pollitem_t(socket: nil, fd: fd, events: Int16(ZMQ_POLLIN), revents: 0))
        return items.count - 1
    }

    /// Polls for up to `timeoutMs` (never pass -1 in a loop that has timers).
    /// Returns whether each item is readable; EINTR reads as "nothing ready".
    public mutating func poll(timeoutMs: Int) throws(ZMQError) -> [Bool] {
        let n = Int32(items.count)
        let rc = items.withUnsafeMutableBufferPointer { zmq_poll($0.baseAddress, n, timeoutMs) }
        if rc < 0 {
            let err = ZMQError.last("zmq_poll")
            if err.isInterrupted { return Array(repeating: false, count: items.count) }
            throw err
        }
        return items.map { ($0.revents & Int16(ZMQ_POLLIN)) != 0 }
    }
}
