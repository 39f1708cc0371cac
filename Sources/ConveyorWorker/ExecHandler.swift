import ConveyorCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs a shell command per task: the `conveyor worker --exec CMD` handler.
///
/// The payload goes to stdin; `TASK_ID`, `TASK_TYPE`, `TASK_PRIORITY` (0–3),
/// `TASK_ATTEMPT` and `CONVEYOR_PROGRESS_FD=3` are in the environment; lines
/// "PERCENT MESSAGE" written to fd 3 are progress reports; stdout is the
/// result; exit status 0 is success, anything else a failure carrying the
/// last 4 KiB of stderr. The command runs in its own process group, so a
/// cancel or timeout stops everything it started: SIGTERM to the whole group,
/// then SIGKILL after `grace`.
public struct ExecHandler: TaskHandler {
    public let command: String
    public let graceMs: Int
    public let maxResultBytes: Int

    public init(command: String, graceSeconds: Double = 5, maxResultBytes: Int = 10 * 1024 * 1024) {
        self.command = command
        self.graceMs = Int(graceSeconds * 1000)
        self.maxResultBytes = maxResultBytes
    }

    public func handle(_ task: WorkerTask, context: TaskContext) throws -> [UInt8] {
        var env = ProcessInfo.processInfo.environment
        env["TASK_ID"] = task.id.description
        env["TASK_TYPE"] = task.type
        env["TASK_PRIORITY"] = String(task.priority.rawValue)
        env["TASK_ATTEMPT"] = String(task.attempt)
        env["TASK_TIMEOUT_MS"] = String(task.timeoutMs)
        env["CONVEYOR_PROGRESS_FD"] = "3"
        let child = try ChildProcess.spawn(["/bin/sh", "-c", command], environment: env)
        context.onCancel { _ in child.signalGroup(SIGTERM) }

        var stdinData = task.payload[...]
        var result: [UInt8] = []
        var stderrTail: [UInt8] = []
        var progressLine: [UInt8] = []
        var retryAfter: Double?
        var killAt: Int64?
        var exitStatus: Int32?
        var exitedAt: Int64?
        var buffer = [UInt8](repeating: 0, count: 65536)

        if stdinData.isEmpty { child.closeStdin() }
        while true {
            let now = monotonicMs()
            if exitStatus == nil { exitStatus = child.reap() ; if exitStatus != nil { exitedAt = now } }
            if context.isCancelled && killAt == nil { killAt = now + Int64(graceMs) }
            if let k = killAt, now >= k { child.signalGroup(SIGKILL) }
            // Done once the shell has exited and its pipes are drained (or
            // 200 ms later, if something it left behind still holds them).
            if let e = exitedAt, child.outputsClosed || now - e > 200 { break }

            var fds: [pollfd] = []
            if let fd = child.stdinFD, !stdinData.isEmpty { fds.append(pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)) }
            for fd in child.readFDs { fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
            _ = poll(&fds, nfds_t(fds.count), 50)
            for p in fds where p.revents != 0 {
                if p.fd == child.stdinFD {
                    let n = stdinData.withUnsafeBytes { write(p.fd, $0.baseAddress, min($0.count, 65536)) }
                    if n > 0 { stdinData = stdinData.dropFirst(n) }
                    if n < 0 && errno != EAGAIN && errno != EINTR { stdinData = [] }
                    if stdinData.isEmpty { child.closeStdin() }
                    continue
                }
                let n = read(p.fd, &buffer, buffer.count)
                if n <= 0 {
                    if n == 0 || (errno != EAGAIN && errno != EINTR) { child.closeRead(p.fd) }
                    continue
                }
                let chunk = buffer[0..<n]
                switch p.fd {
                case child.stdoutFD:
                    if result.count < maxResultBytes { result.append(contentsOf: chunk.prefix(maxResultBytes - result.count)) }
                case child.stderrFD:
                    stderrTail.append(contentsOf: chunk)
                    if stderrTail.count > 8192 { stderrTail.removeFirst(stderrTail.count - 4096) }
                default:
                    progressLine.append(contentsOf: chunk)
                    while let nl = progressLine.firstIndex(of: 10) {
                        reportProgress(Array(progressLine[..<nl]), context, retryAfter: &retryAfter)
                        progressLine.removeFirst(nl + 1)
                    }
                }
            }
        }
        child.signalGroup(SIGKILL) // anything the command left running
        child.closeAll()
        if let reason = context.cancelReason { throw TaskFailure(reason) }
        let status = exitStatus ?? -1
        // EX_TEMPFAIL: the API the command calls said "rate limited".
        if status == Self.retryLaterStatus { throw RetryLater(afterSeconds: retryAfter) }
        guard status == 0 else {
            let tail = String(decoding: stderrTail.suffix(4096), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw TaskFailure(tail.isEmpty ? "command exited with status \(status)" : tail)
        }
        return result
    }

    /// Exit status 75 (EX_TEMPFAIL) means "rate limited: retry later".
    public static let retryLaterStatus: Int32 = 75

    /// One fd-3 line: `PERCENT MESSAGE`, a bare message, `cost N` (units
    /// used) or `retry-after S` (seconds, for an exit with status 75).
    private func reportProgress(_ line: [UInt8], _ context: TaskContext, retryAfter: inout Double?) {
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        let parts = text.split(separator: " ", maxSplits: 1)
        if parts.count == 2, parts[0] == "cost", let n = Int64(parts[1].trimmingCharacters(in: .whitespaces)) {
            context.reportCost(n)
        } else if parts.count == 2, parts[0] == "retry-after", let s = Double(parts[1].trimmingCharacters(in: .whitespaces)), s.isFinite, s >= 0 {
            retryAfter = s
        } else if let first = parts.first, let p = UInt8(first), p <= 100 {
            context.progress(p, parts.count > 1 ? String(parts[1]) : "")
        } else if !text.isEmpty {
            context.progress(nil, text)
        }
    }
}

func monotonicMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// A child process in its own process group with pipes on fds 0–3.
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    private(set) var stdinFD: Int32?
    let stdoutFD: Int32
    let stderrFD: Int32
    let progressFD: Int32
    private(set) var readFDs: [Int32]

    private init(pid: pid_t, stdin: Int32, stdout: Int32, stderr: Int32, progress: Int32) {
        self.pid = pid
        stdinFD = stdin
        stdoutFD = stdout
        stderrFD = stderr
        progressFD = progress
        readFDs = [stdout, stderr, progress]
    }

    var outputsClosed: Bool { readFDs.isEmpty }

    static func spawn(_ argv: [String], environment: [String: String]) throws -> ChildProcess {
        // A command that exits without reading its payload closes our stdin
        // pipe: the write must fail with EPIPE, not kill the worker with SIGPIPE.
        // (The child gets SIGPIPE back as default through setsigdefault below.)
        signal(SIGPIPE, SIG_IGN)
        var pipes: [[Int32]] = []
        for _ in 0..<4 {
            var p: [Int32] = [0, 0]
            guard pipe(&p) == 0 else { throw TaskFailure("pipe() failed: errno \(errno)") }
            pipes.append(p)
        }
        // Parent ends: write end of stdin, read ends of the rest; non-blocking, close-on-exec.
        let parentEnds = [pipes[0][1], pipes[1][0], pipes[2][0], pipes[3][0]]
        for fd in parentEnds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipes[0][0], 0)
        posix_spawn_file_actions_adddup2(&actions, pipes[1][1], 1)
        posix_spawn_file_actions_adddup2(&actions, pipes[2][1], 2)
        posix_spawn_file_actions_adddup2(&actions, pipes[3][1], 3)
        for p in pipes { for fd in p { posix_spawn_file_actions_addclose(&actions, fd) } }

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGTERM)
        sigaddset(&defaults, SIGINT)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigmask(&attr, &noSignals)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attr, cArgs, cEnv)
        for fd in [pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1]] { close(fd) }
        guard rc == 0 else {
            for fd in parentEnds { close(fd) }
            throw TaskFailure("cannot start \(argv[0]): errno \(rc)")
        }
        return ChildProcess(pid: pid, stdin: pipes[0][1], stdout: pipes[1][0], stderr: pipes[2][0], progress: pipes[3][0])
    }

    /// Exit status once the shell has exited (128+N for signal N), else nil.
    func reap() -> Int32? {
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        guard r == pid else { return nil }
        let sig = status & 0x7f
        return sig == 0 ? (status >> 8) & 0xff : 128 + sig
    }

    func signalGroup(_ sig: Int32) { kill(-pid, sig) }

    func closeStdin() {
        if let fd = stdinFD { close(fd) }
        stdinFD = nil
    }

    func closeRead(_ fd: Int32) {
        close(fd)
        readFDs.removeAll { $0 == fd }
    }

    func closeAll() {
        closeStdin()
        for fd in readFDs { close(fd) }
        readFDs = []
    }
}
