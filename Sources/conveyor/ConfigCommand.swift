import ArgumentParser
import ConveyorProtocol
import Foundation

/// Why: with flags, environment, a `.env` file and defaults all in play, an
/// operator needs one answer to "what will this host's commands use, and
/// where did that come from?" — with secrets never printed.
struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Show the effective settings: each environment variable, its value and its source.",
        discussion: """
        Sources: env (the process environment), file (the .env file: ./.env, --env-file FILE or \
        CONVEYOR_ENV_FILE), default. A flag given to a command overrides all of these for that command, so \
        this shows what a command gets without flags (CONVEYOR_ENV_FILE itself shows source flag when \
        --env-file named it). Secrets (API tokens) are masked. --json prints one object keyed by variable \
        name, each {"value": …, "source": …} (value null: unset, the feature is off or unrestricted).
        """
    )

    @Flag(help: "One JSON object keyed by environment variable name.") var json = false

    func run() throws {
        let all = Settings.effective()
        if json {
            var w = JSONWriter()
            for e in all {
                w.beginObject(e.setting.env)
                w.field("value", e.shown)
                w.field("source", e.source.rawValue)
                w.endObject()
            }
            emit(String(decoding: w.finish(), as: UTF8.self))
            return
        }
        let width = all.map(\.setting.env.count).max() ?? 0
        for e in all {
            let name = e.setting.env.padding(toLength: width, withPad: " ", startingAt: 0)
            let value = e.shown ?? "(unset)"
            emit("\(name)  \(value.padding(toLength: max(value.count, 24), withPad: " ", startingAt: 0))  \(e.source.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0))  \(e.setting.help)")
        }
    }
}
