import ArgumentParser
import ConveyorClient
import ConveyorOps
import ConveyorProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import ZeroMQ

/// Why: the broker's STATS is the health of the system. Once it is a JSON
/// object (scripts), lines of `key: value` (logs, pipes), or — on a terminal
/// with --watch — a live full-screen view like `top` with rates from
/// successive samples and the running tasks from TASKS.
struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Show the broker's stats (--watch: live).",
        discussion: """
        --watch on a terminal is a full-screen view (queue per priority, workers busy/idle, rates per second, \
        dispatch latency percentiles, per-type figures, running tasks with progress, the next queued tasks); \
        q quits. --watch off a terminal prints a block of key: value lines per refresh; --json --watch prints \
        one JSON object per line.
        """
    )
    @OptionGroup var target: BrokerEndpointOption
    @Flag(help: "JSON: one object (with --watch, one per line).") var json = false
    @Flag(help: "Refresh until interrupted (q quits the full-screen view).") var watch = false
    @Option(help: "Seconds between refreshes with --watch, 0.1-3600 (default 1).") var interval: Double = 1

    func validate() throws {
        guard interval >= 0.1, interval <= 3600 else { throw ValidationError("--interval must be 0.1...3600 seconds") }
    }

    func run() throws {
        let client = try target.client()
        if watch && !json && isatty(STDOUT_FILENO) == 1 { return try fullScreen(client) }
        repeat {
            let body = try fetch(client) { .stats(requestID: $0) }
            if json {
                emit(String(decoding: body, as: UTF8.self))
            } else if let obj = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] {
                for k in obj.keys.sorted() { emit("\(k): \(obj[k] ?? "")") }
                if watch { emit("") }
            }
            if watch { Thread.sleep(forTimeInterval: interval) }
        } while watch
    }

    private func fetch(_ client: BrokerClient, _ make: ([UInt8]) -> ClientRequest) throws -> [UInt8] {
        let reply = try brokerCall(client, make)
        try failOnError(reply)
        switch reply {
        case .stats(_, let body), .tasks(_, let body): return body
        default: throw ExitCode(1)
        }
    }

    private func fullScreen(_ client: BrokerClient) throws {
        let screen = TerminalScreen()
        onTerminationSignal {
            screen.restore()
            Glibc.exit(0)
        }
        screen.enter()
        defer { screen.restore() }
        var previous: StatsView.Sample?
        while true {
            let stats = try fetch(client) { .stats(requestID: $0) }
            let tasks = try fetch(client) { .tasks(requestID: $0, limit: 20) }
            let size = terminalSize(STDOUT_FILENO) ?? (rows: 40, columns: 100)
            guard let s = try? JSONSerialization.jsonObject(with: Data(stats)) as? [String: Any] else { throw ExitCode(1) }
            let t = try? JSONSerialization.jsonObject(with: Data(tasks)) as? [String: Any]
            let sample = StatsView.Sample(stats: s, at: Supervisor.monotonicSeconds())
            let view = StatsView(title: client.endpoint, width: size.columns, height: size.rows)
            screen.draw(view.render(current: sample, previous: previous, tasks: t))
            previous = sample
            // Keys are read while waiting for the next refresh.
            let until = Date().addingTimeInterval(interval)
            while Date() < until {
                let left = Int32(max(1, until.timeIntervalSinceNow * 1000))
                if let k = screen.key(timeoutMs: left), k == UInt8(ascii: "q") || k == UInt8(ascii: "Q") { return }
            }
        }
    }
}
