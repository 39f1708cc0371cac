import Foundation
import Synchronization

/// Turns signals into calls on an ordinary thread.
///
/// Why not `DispatchSource` with `SIG_IGN`: on Linux a process-directed signal
/// goes to any thread that does not block it — a ZeroMQ I/O thread, say — and
/// with the disposition `SIG_IGN` that thread drops it before libdispatch's
/// signalfd sees it. A broker that got SIGTERM right after start sometimes
/// never stopped. A real handler runs on whichever thread takes the signal, and
/// writes the signal number to a pipe; one thread reads the pipe and calls the
/// bodies. Handlers, unlike a blocked mask, are reset by exec, so the children
/// of `conveyor up` and `--exec` handlers get the default dispositions.
final class SignalRelay: Sendable {
    static let shared = SignalRelay()

    private let bodies = Mutex<[Int32: [@Sendable () -> Void]]>([:])
    private let readFD: Int32

    private init() {
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) != 0 { fds = [-1, -1] }
        readFD = fds[0]
        signalRelayWriteFD = fds[1]
        if fds[1] >= 0 { _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK) }
        let fd = readFD
        let thread = Thread { [self] in
            var byte: UInt8 = 0
            while fd >= 0 {
                let n = read(fd, &byte, 1)
                if n == 1 {
                    for body in bodies.withLock({ $0[Int32(byte)] ?? [] }) { body() }
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
        thread.name = "conveyor-signals"
        thread.start()
    }

    func on(_ sig: Int32, _ body: @escaping @Sendable () -> Void) {
        let first = bodies.withLock { b -> Bool in
            b[sig, default: []].append(body)
            return b[sig]?.count == 1
        }
        guard first else { return }
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { sig in
            // Async-signal-safe: one write(2) to a non-blocking pipe.
            var byte = UInt8(truncatingIfNeeded: sig)
            _ = write(signalRelayWriteFD, &byte, 1)
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = SA_RESTART
        sigaction(sig, &action, nil)
    }
}

/// The pipe the handler writes to: a global, because a C signal handler captures nothing.
nonisolated(unsafe) private var signalRelayWriteFD: Int32 = -1
