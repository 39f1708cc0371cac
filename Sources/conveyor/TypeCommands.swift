import ArgumentParser
import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import ZeroMQ

/// `conveyor pause TYPE` / `conveyor resume TYPE`: an operator stops a task
/// type from being dispatched (say, while its API is down) without refusing
/// submissions; running tasks finish. Journaled, so it survives a restart.
struct PauseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Stop dispatching a task type (submissions are still accepted; running tasks finish).")
    @OptionGroup var target: BrokerEndpointOption
    @Argument(help: "Task type.") var type: String
    func validate() throws { try validateType(type) }
    func run() throws { try typeControl(target, .pause, type) }
}

struct ResumeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Dispatch a paused task type again.")
    @OptionGroup var target: BrokerEndpointOption
    @Argument(help: "Task type.") var type: String
    func validate() throws { try validateType(type) }
    func run() throws { try typeControl(target, .resume, type) }
}

private func validateType(_ type: String) throws {
    guard isValidTaskType(type) else { throw ValidationError("'\(type)' is not a task type (1-64 characters of [A-Za-z0-9_.:-])") }
}

/// Prints the broker's answer, e.g. `{"type":"pdf","paused":true,"changed":true}`.
private func typeControl(_ target: BrokerEndpointOption, _ action: ClientRequest.TypeAction, _ type: String) throws {
    let client = try target.client()
    let reply = try brokerCall(client) { .type(requestID: $0, action: action, type: type) }
    try failOnError(reply)
    guard case .type(_, let body) = reply else { throw ExitCode(1) }
    emit(String(decoding: body, as: UTF8.self))
}
