import ArgumentParser
import Foundation

/// `conveyor`: one executable for every role, so operators install one file.
struct Conveyor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conveyor",
        abstract: "A priority task queue over ZeroMQ: broker, workers, HTTP gateway and clients.",
        subcommands: [
            BrokerCommand.self, WorkerCommand.self, GatewayCommand.self, UpCommand.self,
            SubmitCommand.self, StatusCommand.self, CancelCommand.self, StatsCommand.self,
            EventsCommand.self, DeadCommand.self, PauseCommand.self, ResumeCommand.self, KeygenCommand.self, TokenCommand.self, BenchCommand.self,
        ]
    )
}

@main
enum Main {
    static func main() {
        do {
            var command = try Conveyor.parseAsRoot()
            try command.run()
        } catch {
            let code = Conveyor.exitCode(for: error)
            if code == .validationFailure {
                // Usage errors: one line, exit status 2 (the shell convention).
                let text = Conveyor.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
                FileHandle.standardError.write(Data("conveyor: \(text)\n".utf8))
                exit(2)
            }
            Conveyor.exit(withError: error)
        }
    }
}
