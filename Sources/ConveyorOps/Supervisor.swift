import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why: `conveyor up` is the whole system in one command, so it must behave
/// like a small init: keep every child running (restart with backoff, log why
/// it died), label their output, and on Ctrl-C or SIGTERM stop them in order,
/// each with its grace period, leaving nothing behind. A second signal forces.
///
/// One thread drives everything (`pump`): a `poll` over the children's output
/// pipes and a self-pipe the signal handlers write to, then `waitpid(WNOHANG)`
/// for each child and any restarts that are due. No state is shared across
/// threads except the self-pipe's file descriptor.
public final class Supervisor {
    /// Where output and the supervisor's own messages go (injected for tests).
    public struct Sinks {
        /// A child's line: (child name, line, came from stderr).
        public var output: (String, String, Bool) -> Void
        /// A message about the supervision itself (restarts, exits, shutdown).
        public var log: (String) -> Void
        public init(output: @escaping (String, String, Bool) -> Void, log: @escaping (String) -> Void) {
            self.output = output
            self.log = log
        }
    }

    private final class Child {
        var spec: ChildSpec
        var pid: pid_t = 0
        var startedAt = 0.0
        var restartAt: Double?
        var backoff = RestartBackoff()
        var readyLine: String?
        var restarts = 0
        var exits = 0
        var lastExit: ChildExit?
        init(spec: ChildSpec) { self.spec = spec }
    }

    /// One output pipe; outlives the child generation that wrote to it until EOF.
    private struct Stream {
        let fd: Int32
        let name: String
        let isStderr: Bool
        unowned let child: Child
        var buffer: [UInt8] = []
    }

    private var children: [Child] = []
    private var streams: [Stream] = []
    private let sinks: Sinks
    private let now: () -> Double
    private var signalPipe: (read: Int32, write: Int32) = (-1, -1)
    private var signalSources: [any DispatchSourceSignal] = []
    private var stopping = false
    /// SIGINT/SIGTERM received so far.
    public private(set) var stopRequests = 0

    public init(sinks: Sinks, now: @escaping () -> Double = Supervisor.monotonicSeconds) {
        self.sinks = sinks
        self.now = now
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC); _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
            signalPipe = (fds[0], fds[1])
        }
    }

    deinit {
        for s in signalSources { s.cancel() }
        for s in streams { close(s.fd) }
        if signalPipe.read >= 0 { close(signalPipe.read); close(signalPipe.write) }
    }

    public static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Routes SIGINT and SIGTERM to the loop (counted in `stopRequests`).
    public func installSignalHandlers() {
        let fd = signalPipe.write
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                var b: UInt8 = 1
                _ = write(fd, &b, 1)
            }
            source.resume()
            signalSources.append(source)
        }
    }

    /// Counts as a SIGINT/SIGTERM: safe from any thread (it only writes to the self-pipe).
    public func requestStop() {
        var b: UInt8 = 1
        _ = write(signalPipe.write, &b, 1)
    }

    // MARK: Children

    /// Starts a child now.
    public func start(_ spec: ChildSpec) throws(SupervisorError) {
        let c = Child(spec: spec)
        children.append(c)
        try spawn(c)
    }

    /// Replaces the arguments used from the next restart on.
    public func setArguments(_ name: String, _ arguments: [String]) {
        child(name)?.spec.arguments = arguments
    }

    public func pid(of name: String) -> pid_t? { child(name).flatMap { $0.pid > 0 ? $0.pid : nil } }
    /// Every child's current PID (children waiting to restart have none).
    public var pids: [String: pid_t] {
        var d: [String: pid_t] = [:]
        for c in children where c.pid > 0 { d[c.spec.name] = c.pid }
        return d
    }
    public var names: [String] { children.map(\.spec.name) }
    /// The ready line of the current generation, nil until it is printed.
    public func readyLine(of name: String) -> String? { child(name)?.readyLine }
    public func isReady(_ name: String) -> Bool {
        guard let c = child(name), c.pid > 0 else { return false }
        return c.spec.readyMarker == nil || c.readyLine != nil
    }
    public func restarts(of name: String) -> Int { child(name)?.restarts ?? 0 }

    private func child(_ name: String) -> Child? { children.first { $0.spec.name == name } }

    private func spawn(_ c: Child) throws(SupervisorError) {
        Supervisor.closeInheritedDescriptorsOnExec()
        var out: [Int32] = [-1, -1], err: [Int32] = [-1, -1]
        guard pipe(&out) == 0 else { throw .spawnFailed(name: c.spec.name, errno: errno) }
        guard pipe(&err) == 0 else {
            close(out[0]); close(out[1])
            throw .spawnFailed(name: c.spec.name, errno: errno)
        }
        // Only the child's 1 and 2 (dup2'ed) survive exec; our ends never leak into other children.
        for fd in out + err { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        posix_spawn_file_actions_adddup2(&actions, err[1], 2)

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Own process group: the terminal's Ctrl-C reaches only us, and we stop children in order.
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        posix_spawnattr_setpgroup(&attr, 0)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT, SIGCHLD] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attr, &mask)

        var env = Supervisor.currentEnvironment()
        for (k, v) in c.spec.environment { env[k] = v }
        let argv: [UnsafeMutablePointer<CChar>?] = ([c.spec.executable] + c.spec.arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in argv { free(p) }; for p in envp { free(p) } }

        var pid: pid_t = 0
        let rc = posix_spawn(&pid, c.spec.executable, &actions, &attr, argv, envp)
        close(out[1]); close(err[1])
        guard rc == 0 else {
            close(out[0]); close(err[0])
            throw .spawnFailed(name: c.spec.name, errno: rc)
        }
        for fd in [out[0], err[0]] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        streams.append(Stream(fd: out[0], name: c.spec.name, isStderr: false, child: c))
        streams.append(Stream(fd: err[0], name: c.spec.name, isStderr: true, child: c))
        c.pid = pid
        c.startedAt = now()
        c.readyLine = nil
        c.restartAt = nil
    }

    /// Nothing but 0-2 reaches a child: a descriptor our own parent gave us (a process
    /// monitor's socket, say) must not live on in an orphaned grandchild.
    static func closeInheritedDescriptorsOnExec() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for n in names {
            guard let fd = Int32(n), fd > 2 else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 && flags & FD_CLOEXEC == 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }

    static func currentEnvironment() -> [String: String] {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return env
    }

    // MARK: The loop

    /// One turn: waits up to `timeoutMs` for output or a signal, forwards
    /// output, reaps exited children and starts the restarts that are due.
    public func pump(timeoutMs: Int32 = 100) {
        var pfds = [pollfd(fd: signalPipe.read, events: Int16(POLLIN), revents: 0)]
        pfds += streams.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        let n = poll(&pfds, nfds_t(pfds.count), timeoutMs)
        if n > 0 {
            if pfds[0].revents != 0 {
                var buf = [UInt8](repeating: 0, count: 64)
                while true {
                    let r = read(signalPipe.read, &buf, buf.count)
                    if r <= 0 { break }
                    stopRequests += r
                }
            }
            var closed: [Int32] = []
            for (i, p) in pfds.enumerated().dropFirst() where p.revents != 0 {
                if !readStream(at: i - 1) { closed.append(p.fd) }
            }
            if !closed.isEmpty { streams.removeAll { closed.contains($0.fd) } }
        }
        reap()
        if !stopping {
            let t = now()
            for c in children where c.pid == 0 {
                guard let at = c.restartAt, at <= t else { continue }
                do {
                    try spawn(c)
                    c.restarts += 1
                    sinks.log("\(c.spec.name) restarted (pid \(c.pid), restart \(c.restarts))")
                } catch {
                    let d = c.backoff.delay(startedAt: t, exitedAt: t)
                    c.restartAt = t + d
                    sinks.log("\(c.spec.name) could not be restarted (\(error)); next try in \(Supervisor.seconds(d))")
                }
            }
        }
    }

    /// Reads what is there; false at end of file (the stream is closed).
    private func readStream(at i: Int) -> Bool {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let r = read(streams[i].fd, &buf, buf.count)
            if r > 0 {
                streams[i].buffer += buf[0..<r]
                emitLines(at: i, final: false)
                continue
            }
            if r < 0 && (errno == EAGAIN || errno == EINTR) { return true }
            emitLines(at: i, final: true)
            close(streams[i].fd)
            return false
        }
    }

    private func emitLines(at i: Int, final: Bool) {
        while let nl = streams[i].buffer.firstIndex(of: UInt8(ascii: "\n")) {
            let line = String(decoding: streams[i].buffer[..<nl], as: UTF8.self)
            streams[i].buffer.removeSubrange(...nl)
            deliver(line, streams[i])
        }
        if final && !streams[i].buffer.isEmpty {
            deliver(String(decoding: streams[i].buffer, as: UTF8.self), streams[i])
            streams[i].buffer.removeAll()
        }
    }

    private func deliver(_ line: String, _ s: Stream) {
        if !s.isStderr, let marker = s.child.spec.readyMarker, s.child.readyLine == nil, line.hasPrefix(marker) {
            s.child.readyLine = line
        }
        sinks.output(s.name, line, s.isStderr)
    }

    private func reap() {
        for c in children where c.pid > 0 {
            var status: Int32 = 0
            let r = waitpid(c.pid, &status, WNOHANG)
            guard r == c.pid || (r < 0 && errno == ECHILD) else { continue }
            let exit = r == c.pid ? ChildExit(waitStatus: status) : .status(-1)
            exited(c, exit)
        }
    }

    private func exited(_ c: Child, _ exit: ChildExit) {
        let pid = c.pid
        c.pid = 0
        c.exits += 1
        c.lastExit = exit
        c.readyLine = nil
        if stopping {
            sinks.log("\(c.spec.name) (pid \(pid)) stopped: \(exit)")
            return
        }
        let t = now()
        let d = c.backoff.delay(startedAt: c.startedAt, exitedAt: t)
        c.restartAt = t + d
        sinks.log("\(c.spec.name) (pid \(pid)) exited unexpectedly: \(exit); restarting in \(Supervisor.seconds(d))")
    }

    static func seconds(_ d: Double) -> String {
        d == d.rounded() ? "\(Int(d)) s" : "\((d * 10).rounded() / 10) s"
    }

    /// Pumps until `condition` holds. Throws `.stopRequested` on a signal,
    /// `.exited` when one of `abortOnExit` exits, `.timedOut` after `timeout` s.
    public func run(timeout: Double, what: String, abortOnExit: [String] = [],
                    until condition: () -> Bool) throws(SupervisorError) {
        let deadline = now() + timeout
        let baseline = Dictionary(uniqueKeysWithValues: abortOnExit.compactMap { n in child(n).map { (n, $0.exits) } })
        while true {
            if stopRequests > 0 { throw .stopRequested }
            for (n, count) in baseline {
                if let c = child(n), c.exits > count { throw .exited(name: n, c.lastExit ?? .status(-1)) }
            }
            if condition() { return }
            if now() > deadline { throw .timedOut(what) }
            pump()
        }
    }

    /// Pumps (restarting what dies) until SIGINT or SIGTERM.
    public func runUntilStopRequested() {
        while stopRequests == 0 { pump(timeoutMs: 250) }
    }

    /// Stops the children group by group (`order`, then any not named): SIGTERM,
    /// up to each one's grace period, then SIGKILL. A further SIGINT/SIGTERM
    /// during this forces: SIGKILL to everything left. Returns false if forced.
    /// Every child has been reaped when it returns.
    @discardableResult
    public func shutdown(order: [[String]]) -> Bool {
        stopping = true
        for c in children { c.restartAt = nil }
        let signalsAtStart = stopRequests
        var groups = order.map { names in names.compactMap { child($0) } }
        let named = Set(order.joined())
        groups.append(children.filter { !named.contains($0.spec.name) })
        var forced = false
        for group in groups where !forced {
            let alive = group.filter { $0.pid > 0 }
            guard !alive.isEmpty else { continue }
            for c in alive {
                sinks.log("stopping \(c.spec.name) (pid \(c.pid))")
                kill(c.pid, SIGTERM)
            }
            let deadline = now() + (alive.map(\.spec.graceSeconds).max() ?? 10)
            while alive.contains(where: { $0.pid > 0 }) {
                if stopRequests > signalsAtStart { forced = true; break }
                if now() > deadline {
                    for c in alive where c.pid > 0 {
                        sinks.log("\(c.spec.name) (pid \(c.pid)) did not stop within \(Supervisor.seconds(c.spec.graceSeconds)): SIGKILL")
                        kill(c.pid, SIGKILL)
                    }
                    break
                }
                pump(timeoutMs: 50)
            }
            killAndReap(alive)
        }
        if forced {
            sinks.log("second signal: killing every child")
            killAndReap(children)
        }
        // Forward what is still buffered; a grandchild may hold a pipe open, so bounded.
        let drainUntil = now() + 1
        while !streams.isEmpty && now() < drainUntil { pump(timeoutMs: 50) }
        for s in streams { close(s.fd) }
        streams.removeAll()
        return !forced
    }

    private func killAndReap(_ list: [Child]) {
        for c in list where c.pid > 0 {
            kill(c.pid, SIGKILL)
            var status: Int32 = 0
            var r: pid_t
            repeat { r = waitpid(c.pid, &status, 0) } while r < 0 && errno == EINTR
            exited(c, r == c.pid ? ChildExit(waitStatus: status) : .signal(SIGKILL))
        }
    }
}
