/// Why: `Supervisor` starts, restarts and stops children by description, so
/// the command that builds the system (`conveyor up`) says *what* runs and the
/// supervisor owns *how*. A value type, so a restart re-reads the current
/// arguments (the broker's ephemeral ports pinned once it has bound them).
public struct ChildSpec: Sendable {
    /// Unique; prefixes every output line (`[worker-1] …`) and every log line about it.
    public var name: String
    public var executable: String
    public var arguments: [String]
    /// Added to (or replacing in) the supervisor's own environment.
    public var environment: [String: String]
    /// A stdout line starting with this means the child is serving; nil: ready once started.
    public var readyMarker: String?
    /// Seconds between SIGTERM and SIGKILL at shutdown.
    public var graceSeconds: Double

    public init(name: String, executable: String, arguments: [String], environment: [String: String] = [:],
                readyMarker: String? = nil, graceSeconds: Double = 10) {
        self.name = name
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.readyMarker = readyMarker
        self.graceSeconds = graceSeconds
    }
}

/// How a child ended, as `waitpid` reports it.
public enum ChildExit: Sendable, Equatable, CustomStringConvertible {
    case status(Int32)
    case signal(Int32)

    /// Decodes a `waitpid` status word (the W* macros are not visible to Swift).
    public init(waitStatus s: Int32) {
        if s & 0x7f == 0 { self = .status((s >> 8) & 0xff) } else { self = .signal(s & 0x7f) }
    }

    public var description: String {
        switch self {
        case .status(let c): return "exit status \(c)"
        case .signal(let s): return "signal \(s)\(ChildExit.signalNames[s].map { " (SIG\($0))" } ?? "")"
        }
    }

    static let signalNames: [Int32: String] = [1: "HUP", 2: "INT", 3: "QUIT", 6: "ABRT", 9: "KILL", 11: "SEGV", 13: "PIPE", 15: "TERM"]
}

/// What can go wrong while the supervisor waits for its children.
public enum SupervisorError: Error, Sendable, Equatable, CustomStringConvertible {
    case stopRequested
    case exited(name: String, ChildExit)
    case timedOut(String)
    case spawnFailed(name: String, errno: Int32)

    public var description: String {
        switch self {
        case .stopRequested: return "stop requested"
        case .exited(let n, let e): return "\(n) exited (\(e)) before it was ready"
        case .timedOut(let what): return "timed out waiting for \(what)"
        case .spawnFailed(let n, let e): return "cannot start \(n): errno \(e)"
        }
    }
}
