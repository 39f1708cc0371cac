import ArgumentParser
import ConveyorProtocol
import Foundation

/// `conveyor`: one executable for every role, so operators install one file.
struct Conveyor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conveyor",
        abstract: "A priority task queue over ZeroMQ: broker, workers, HTTP gateway and clients.",
        discussion: """
        Settings come from flags, then environment variables, then a .env file (./.env, or --env-file FILE, \
        or env CONVEYOR_ENV_FILE; KEY=VALUE lines), then defaults; `conveyor config` shows the effective ones. \
        --env-file FILE may be given before or after the subcommand. -V / --version prints the version.
        """,
        version: ConveyorVersion.current,
        subcommands: [
            BrokerCommand.self, WorkerCommand.self, GatewayCommand.self, UpCommand.self,
            SubmitCommand.self, StatusCommand.self, CancelCommand.self, StatsCommand.self,
            EventsCommand.self, DeadCommand.self, PauseCommand.self, ResumeCommand.self, TasksCommand.self,
            ConfigCommand.self, KeygenCommand.self, TokenCommand.self, BenchCommand.self, JournalCommand.self,
        ]
    )
}

@main
enum Main {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        switch StartupEnvironment.load(arguments: arguments) {
        case .failure(let e):
            FileHandle.standardError.write(Data("conveyor: \(e)\n".utf8))
            exit(2)
        case .success(let (startup, rest)):
            StartupEnvironment.current = startup
            arguments = rest
        }
        if arguments == ["--version"] || arguments == ["-V"] {
            print(ConveyorVersion.current)
            exit(0)
        }
        do {
            var command = try Conveyor.parseAsRoot(arguments)
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
