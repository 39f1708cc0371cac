import ConveyorOps
import Foundation

/// Why: the precedence flag > environment > `.env` file > default must hold
/// for every subcommand without touching each one. The commands already
/// resolve `flag ?? env(…) ?? default`; so before any parsing, the `.env`
/// file's variables are put into the process environment *where it does not
/// already have them*. This value records what was loaded (for `conveyor
/// config`), and is built once on the main thread before anything else runs.
struct StartupEnvironment: Sendable {
    /// The file that was read, if any.
    var envFile: String?
    var envFileSource: Settings.Source = .default
    /// Variables the file supplied (not already in the environment).
    var fromFile: [String: String] = [:]

    nonisolated(unsafe) static var current = StartupEnvironment()

    enum LoadError: Error, CustomStringConvertible {
        case unreadable(String)
        case malformed(DotEnv.ParseError)
        case missingArgument

        var description: String {
            switch self {
            case .unreadable(let f): return "cannot read env file \(f)"
            case .malformed(let e): return "\(e)"
            case .missingArgument: return "--env-file needs a FILE"
            }
        }
    }

    /// Removes `--env-file FILE` / `--env-file=FILE` from the arguments (it is
    /// global, before or after the subcommand), loads the file, and returns
    /// the arguments left for the command parser.
    static func load(arguments: [String]) -> Result<(StartupEnvironment, [String]), LoadError> {
        var rest: [String] = []
        var flagFile: String?
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a == "--" { rest += arguments[i...]; break }
            if a == "--env-file" {
                guard i + 1 < arguments.count else { return .failure(.missingArgument) }
                flagFile = arguments[i + 1]
                i += 2
                continue
            }
            if a.hasPrefix("--env-file=") {
                flagFile = String(a.dropFirst("--env-file=".count))
                i += 1
                continue
            }
            rest.append(a)
            i += 1
        }
        var startup = StartupEnvironment()
        let path: String
        if let flagFile {
            path = flagFile
            startup.envFileSource = .flag
        } else if let e = env("CONVEYOR_ENV_FILE") {
            path = e
            startup.envFileSource = .env
        } else {
            // The default file is optional; a named one must exist.
            guard FileManager.default.fileExists(atPath: ".env") else { return .success((startup, rest)) }
            path = ".env"
        }
        guard let data = FileManager.default.contents(atPath: path) else { return .failure(.unreadable(path)) }
        switch DotEnv.parse(String(decoding: data, as: UTF8.self), file: path) {
        case .failure(let e):
            return .failure(.malformed(e))
        case .success(let entries):
            startup.envFile = path
            // Decided before any is set, so a key repeated in the file takes its last value.
            let inEnvironment = Set(entries.map(\.key).filter { env($0) != nil })
            for e in entries where !inEnvironment.contains(e.key) {
                setenv(e.key, e.value, 1)
                startup.fromFile[e.key] = e.value
            }
        }
        return .success((startup, rest))
    }
}
