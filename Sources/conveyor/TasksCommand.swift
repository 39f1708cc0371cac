import ArgumentParser
import ConveyorClient
import ConveyorProtocol
import Foundation
import ZeroMQ

/// Why: "what is running and what is waiting?" is the first question in an
/// incident; the broker answers it with TASKS (running, then queued in
/// dispatch order), and this lists it filtered, as a table or as JSON.
struct TasksCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tasks",
        abstract: "List running and queued tasks (from the broker's TASKS).",
        discussion: """
        Only running and queued tasks are listed (that is what the broker keeps in order); running tasks \
        first, then queued ones in dispatch order. For failed or timed-out tasks use `conveyor dead list` \
        (dead letters) and `conveyor status ID` for any single task. --json prints one JSON array of the \
        broker's task objects.
        """
    )

    enum State: String, ExpressibleByArgument, CaseIterable { case running, queued }

    @OptionGroup var target: BrokerEndpointOption
    @Option(help: "running or queued (default both).") var state: State?
    @Option(help: "Only tasks of this type.") var type: String?
    @Option(help: "At most this many tasks, 1-10000 (default 100).") var limit: Int = 100
    @Flag(help: "One JSON array of task objects.") var json = false

    func validate() throws {
        guard (1...10_000).contains(limit) else { throw ValidationError("--limit must be 1...10000") }
    }

    func run() throws {
        let client = try target.client()
        // With a filter, ask for more so that --limit counts matching tasks.
        let ask = (type == nil && state == nil) ? limit : min(10_000, max(limit, 1000))
        let reply = try brokerCall(client) { .tasks(requestID: $0, limit: ask) }
        try failOnError(reply)
        guard case .tasks(_, let body) = reply,
              let obj = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { throw ExitCode(1) }
        let tasks = Array(Self.filter(obj, state: state, type: type).prefix(limit))
        if json {
            let data = (try? JSONSerialization.data(withJSONObject: tasks, options: [.sortedKeys])) ?? Data("[]".utf8)
            emit(String(decoding: data, as: UTF8.self))
            return
        }
        emit(Self.tableHeader)
        for t in tasks { emit(Self.tableRow(t)) }
    }

    static func filter(_ obj: [String: Any], state: State?, type: String?) -> [[String: Any]] {
        var out: [[String: Any]] = []
        if state != .queued { out += obj["running"] as? [[String: Any]] ?? [] }
        if state != .running { out += obj["queued"] as? [[String: Any]] ?? [] }
        if let type { out = out.filter { $0["type"] as? String == type } }
        return out
    }

    static let tableHeader = "TASK              STATE     TYPE            PRIORITY  POS   WORKER / WAITING FOR  PROGRESS"

    static func tableRow(_ t: [String: Any]) -> String {
        func col(_ s: String, _ w: Int) -> String { s.count >= w ? String(s.prefix(w - 1)) + " " : s.padding(toLength: w, withPad: " ", startingAt: 0) }
        let state = t["state"] as? String ?? ""
        let pos = (t["queue_position"] as? Int).map(String.init) ?? "–"
        let who = state == "running" ? (t["worker"] as? String ?? "") : (t["waiting_for"] as? String ?? "").replacingOccurrences(of: "_", with: " ")
        var progress = ""
        if let p = t["progress"] as? [String: Any] {
            progress = [(p["percent"] as? Int).map { "\($0)%" }, p["message"] as? String].compactMap { $0 }.joined(separator: " ")
        }
        return col(t["task_id"] as? String ?? "", 18) + col(state, 10) + col(t["type"] as? String ?? "", 16)
            + col(t["priority"] as? String ?? "", 10) + col(pos, 6) + col(who, 22) + progress
    }
}
