import ArgumentParser
import ConveyorCore
import Foundation
import Logging
import ConveyorClient
import ZeroMQ

/// Flag > environment variable > default, as the README's table says.
func env(_ name: String) -> String? {
    guard let v = ProcessInfo.processInfo.environment[name], !v.isEmpty else { return nil }
    return v
}

/// Reads an integer from a flag or an environment variable, rejecting junk with a usage error.
func setting<T: FixedWidthInteger>(_ flag: T?, _ envName: String, _ fallback: T, range: ClosedRange<T>) throws -> T {
    if let flag {
        guard range.contains(flag) else { throw ValidationError("value \(flag) is out of range \(range)") }
        return flag
    }
    guard let text = env(envName) else { return fallback }
    guard let v = T(text.trimmingCharacters(in: .whitespaces)), range.contains(v) else {
        throw ValidationError("\(envName)='\(text)' must be an integer in \(range)")
    }
    return v
}

/// ZeroMQ endpoints we accept: tcp://host:port (port may be `*`), ipc://path, inproc://name.
func validateEndpoint(_ e: String, _ what: String) throws -> String {
    if e.hasPrefix("ipc://") || e.hasPrefix("inproc://") { return e }
    guard e.hasPrefix("tcp://"), let colon = e.lastIndex(of: ":"), colon > e.index(e.startIndex, offsetBy: 6) else {
        throw ValidationError("\(what) '\(e)' is not a ZeroMQ endpoint like tcp://127.0.0.1:5555")
    }
    let port = e[e.index(after: colon)...]
    guard port == "*" || (UInt16(port) != nil && UInt16(port)! > 0) || port == "0" else {
        throw ValidationError("\(what) '\(e)' has an invalid port '\(port)'")
    }
    return port == "0" ? String(e[..<colon]) + ":*" : e
}

/// A comma-separated list of endpoints (an active broker and its standbys), each validated.
func validateEndpoints(_ text: String, _ what: String) throws -> [String] {
    let parts = text.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
    guard !parts.isEmpty, !parts.contains(where: \.isEmpty) else {
        throw ValidationError("\(what) '\(text)' is not a comma-separated list of ZeroMQ endpoints")
    }
    return try parts.map { try validateEndpoint($0, what) }
}

struct LoggingOptions: ParsableArguments {
    @Option(name: .long, help: "trace, debug, info, notice, warning, error (env CONVEYOR_LOG_LEVEL).")
    var logLevel: String?

    func bootstrap(_ label: String) throws -> Logger {
        let text = logLevel ?? env("CONVEYOR_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw ValidationError("unknown log level '\(text)'")
        }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}

struct HeartbeatOptions: ParsableArguments {
    @Option(name: .long, help: "Heartbeat interval in milliseconds, 10-600000 (env CONVEYOR_HEARTBEAT_INTERVAL, default 1000).")
    var heartbeatInterval: Int64?
    @Option(name: .long, help: "Missed heartbeats before a peer is dead, 1-100 (env CONVEYOR_HEARTBEAT_LIVENESS, default 3).")
    var heartbeatLiveness: Int64?

    var interval: Int64 { get throws { try setting(heartbeatInterval, "CONVEYOR_HEARTBEAT_INTERVAL", 1000, range: 10...600_000) } }
    var liveness: Int64 { get throws { try setting(heartbeatLiveness, "CONVEYOR_HEARTBEAT_LIVENESS", 3, range: 1...100) } }
}

struct BrokerEndpointOption: ParsableArguments {
    @Option(name: .long, help: "The broker's client endpoint, or a comma-separated list of an active and standby brokers' (env CONVEYOR_BROKER, default tcp://127.0.0.1:5555).")
    var broker: String?
    @OptionGroup var curve: CurveClientOptions

    var endpoints: [String] { get throws { try validateEndpoints(broker ?? env("CONVEYOR_BROKER") ?? "tcp://127.0.0.1:5555", "--broker") } }
    /// The first endpoint (for messages and loopback checks).
    var endpoint: String { get throws { try endpoints[0] } }

    /// A client of the broker, with CURVE when keys are given.
    func client(_ context: ZMQContext = ZMQContext()) throws -> BrokerClient {
        try BrokerClient(context: context, endpoints: BrokerEndpoints(try endpoints), security: try curve.security)
    }
}

extension Priority: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
}

/// Runs `body` on every SIGINT/SIGTERM, off the signal handler.
func onTerminationSignal(_ body: @escaping @Sendable () -> Void) {
    SignalRelay.shared.on(SIGINT, body)
    SignalRelay.shared.on(SIGTERM, body)
}

/// Runs `body` on every `sig` (e.g. SIGHUP: reload), off the signal handler.
func onSignal(_ sig: Int32, _ body: @escaping @Sendable () -> Void) {
    SignalRelay.shared.on(sig, body)
}

/// Writes a line to stdout at once (unbuffered), so that pipes see it while we run.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
