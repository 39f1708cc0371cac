import CZeroMQ
import Synchronization

/// Owns libzmq's I/O threads. Thread-safe, unlike sockets: create one per
/// process and hand it to every thread that opens sockets.
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    public init(ioThreads: Int32 = 1) {
        // zmq_ctx_new only fails on resource exhaustion (out of file descriptors),
        // which leaves nothing sensible to continue with.
        guard let ctx = zmq_ctx_new() else { fatalError("zmq_ctx_new failed: out of resources") }
        handle = ctx
        zmq_ctx_set(ctx, ZMQ_IO_THREADS, ioThreads)
    }

    /// Makes every blocking call on this context's sockets fail with ETERM so
    /// that owning threads can notice and close their sockets.
    public func shutdown() {
        zmq_ctx_shutdown(handle)
    }

    private let terminated = Mutex(false)

    /// Waits until every socket is closed and their lingering messages are
    /// sent (or their linger expires), then frees the context. Call it before
    /// a process exits: exiting with the context alive drops whatever libzmq's
    /// I/O thread has not yet written, such as a worker's last DONE.
    public func terminate() {
        let first = terminated.withLock { t in
            defer { t = true }
            return !t
        }
        guard first else { return }
        while zmq_ctx_term(handle) != 0 && czmq_errno() == EINTR {}
    }

    deinit { terminate() }

    public func socket(_ type: ZMQSocketType) throws(ZMQError) -> ZMQSocket {
        try ZMQSocket(context: self, type: type)
    }

    /// libzmq's version, e.g. (4, 3, 4).
    public static var version: (major: Int32, minor: Int32, patch: Int32) {
        var a: Int32 = 0, b: Int32 = 0, c: Int32 = 0
        zmq_version(&a, &b, &c)
        return (a, b, c)
    }
}
