import CZeroMQ
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A libzmq failure, carried as its errno so callers branch on the value
/// (EAGAIN, EINTR, EHOSTUNREACH, ETERM) and never on message text.
public struct ZMQError: Error, Equatable, CustomStringConvertible, Sendable {
    public let errno: Int32
    public let operation: String

    public init(errno: Int32, operation: String) {
        self.errno = errno
        self.operation = operation
    }

    /// Captures `zmq_errno()` right after a failed call.
    static func last(_ operation: String) -> ZMQError {
        ZMQError(errno: czmq_errno(), operation: operation)
    }

    /// An ETERM error, for code that reports "the context is gone" itself.
    public static func terminated(_ operation: String) -> ZMQError { ZMQError(errno: ETERM, operation: operation) }

    /// The operation would block (non-blocking send/receive, or a high-water mark).
    public var isAgain: Bool { errno == EAGAIN }
    /// A signal interrupted the call; it is safe to retry.
    public var isInterrupted: Bool { errno == EINTR }
    /// ROUTER_MANDATORY: the routing id names no connected peer.
    public var isHostUnreachable: Bool { errno == EHOSTUNREACH }
    /// The context was terminated: the owning thread must close its sockets and stop.
    public var isTerminated: Bool { errno == ETERM }

    public var description: String {
        "\(operation): \(String(cString: zmq_strerror(errno))) (errno \(errno))"
    }
}
