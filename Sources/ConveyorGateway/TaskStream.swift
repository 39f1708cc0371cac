import ConveyorClient
import ConveyorCore
import ConveyorProtocol

/// One message of a task's live stream: the same JSON object goes out as an SSE
/// `event:`/`data:` pair or as a WebSocket text message, and always carries an
/// `event` member (`status`, `queued`, `started`, `progress`, `retrying`,
/// `reassigned`, `result`, `error`).
public struct StreamMessage: Sendable, Equatable {
    public let event: String
    public let json: [UInt8]

    /// The SSE wire form: `event: NAME\ndata: JSON\n\n`.
    public var sse: [UInt8] { Array("event: \(event)\ndata: ".utf8) + json + [10, 10] }
}

/// The live view of one task, shared by the SSE and WebSocket routes.
///
/// Why this shape: it subscribes to the task's events *before* reading its
/// status, so nothing that happens in between is missed; it starts with the
/// status (so a stream opened on a finished task answers at once), relays the
/// broker's task events as they come, and on the final event reads the status
/// again to send the result or error — events carry no results. Because PUB/SUB
/// may drop events, it also re-reads the status whenever the stream has been
/// quiet for `streamPollMs`, which bounds how long a lost final event can delay
/// the end of the stream.
public struct TaskStream: Sendable {
    public let id: TaskID
    /// The status object when the stream was opened.
    public let initialStatus: [UInt8]
    let updates: AsyncStream<TaskUpdate>
    let gateway: Gateway

    /// Subscribes and reads the status. Throws `APIError` (404 unknown task, 503
    /// broker unavailable) before anything has been sent, so routes can answer
    /// with a plain HTTP error.
    static func open(_ id: TaskID, gateway: Gateway) async throws -> TaskStream {
        let updates = gateway.transport.updates(for: id)
        let status = try await gateway.fetchStatus(id)
        return TaskStream(id: id, initialStatus: status, updates: updates, gateway: gateway)
    }

    enum Input: Sendable {
        case update(TaskUpdate)
        case tick
        case ended
    }

    /// Sends messages until the outcome has been sent (then returns), the client
    /// goes away (`send` throws), or the broker stays unreachable.
    /// `idle` is called when nothing was sent for a poll interval (SSE sends a
    /// keep-alive comment there, which also detects a departed client).
    public func run(send: (StreamMessage) async throws -> Void, idle: () async throws -> Void = {}) async throws {
        try await send(Self.message("status", initialStatus))
        if let outcome = Self.outcome(initialStatus) {
            try await send(outcome)
            return
        }
        let (inputs, sink) = AsyncStream<Input>.makeStream(bufferingPolicy: .bufferingNewest(512))
        let updates = self.updates
        let pollMs = gateway.config.streamPollMs
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await u in updates { sink.yield(.update(u)) }
                sink.yield(.ended)
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(pollMs))
                    sink.yield(.tick)
                }
            }
            defer { group.cancelAll() }
            var failures = 0
            loop: for await input in inputs {
                switch input {
                case .ended:
                    break loop
                case .tick:
                    try await idle()
                    do {
                        let s = try await gateway.fetchStatus(id)
                        failures = 0
                        if let outcome = Self.outcome(s) {
                            try await send(outcome)
                            break loop
                        }
                    } catch let e as APIError where e.status == .notFound {
                        try await send(StreamMessage(event: "error", json: e.json))
                        break loop
                    } catch is CancellationError {
                        throw CancellationError()
                    } catch {
                        failures += 1
                        if failures >= gateway.config.streamMaxFailures {
                            let e = (error as? APIError) ?? APIError.brokerUnavailable(error, endpoint: gateway.transport.brokerEndpoint)
                            try await send(StreamMessage(event: "error", json: e.json))
                            break loop
                        }
                    }
                case .update(.finished):
                    if try await finish(send) { break loop }
                case .update(.event(let e)):
                    let name = String(e.topicString.dropFirst("task.".count))
                    if ["succeeded", "failed", "timed_out", "cancelled"].contains(name) {
                        if try await finish(send) { break loop }
                    } else if !name.isEmpty && name != "dead" {
                        try await send(StreamMessage(event: name, json: e.json))
                    }
                }
            }
        }
    }

    /// Reads the final status and sends the outcome. False when the broker does
    /// not show a final state yet (keep streaming; a tick will retry).
    private func finish(_ send: (StreamMessage) async throws -> Void) async throws -> Bool {
        do {
            let s = try await gateway.fetchStatus(id)
            guard let outcome = Self.outcome(s) else { return false }
            try await send(outcome)
            return true
        } catch let e as APIError where e.status == .notFound {
            try await send(StreamMessage(event: "error", json: e.json))
            return true
        } catch let e as APIError {
            // The broker went away between the event and the status read.
            try await send(StreamMessage(event: "error", json: e.json))
            return true
        }
    }

    /// `result` (succeeded) or `error` (failed, timed_out, cancelled) for a final
    /// status; nil while the task is still live.
    static func outcome(_ status: [UInt8]) -> StreamMessage? {
        guard let v = try? JSONValue.parse(status), let state = v["state"]?.stringValue,
              let s = TaskState(rawValue: state), s.isFinal else { return nil }
        return message(s == .succeeded ? "result" : "error", status)
    }

    /// The object with `"event": NAME` as its first member.
    static func message(_ event: String, _ object: [UInt8]) -> StreamMessage {
        var w = JSONWriter(capacity: 32)
        w.field("event", event)
        var head = w.finish()
        head.removeLast() // the closing brace
        var body = object.drop { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        if body.first == UInt8(ascii: "{") { body = body.dropFirst() } else { return StreamMessage(event: event, json: head + [UInt8(ascii: "}")]) }
        let rest = body.drop { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        if rest.first == UInt8(ascii: "}") { return StreamMessage(event: event, json: head + Array(rest)) }
        return StreamMessage(event: event, json: head + [UInt8(ascii: ",")] + Array(body))
    }
}
