import ArgumentParser
import ConveyorGateway
import Foundation

/// `conveyor token new NAME --scopes submit+read`: a fresh random token and
/// the tokens-file line for it, so the gateway's file never holds a secret.
struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "HTTP API tokens for the gateway.", subcommands: [New.self])

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "new",
            abstract: "Print a new token (stdout, line 1) and its tokens-file line (line 2: 'name scopes sha256').",
            discussion: "Append line 2 to the gateway's --tokens-file; give line 1 to the caller (Authorization: Bearer TOKEN). Scopes: submit, read, admin."
        )
        @Argument(help: "The token's name, recorded as the owner of the tasks it submits.") var name: String
        @Option(help: "Scopes joined with +: submit, read, admin (default submit+read).") var scopes: String = "submit+read"

        func validate() throws {
            do {
                try APITokens.checkName(name, "NAME")
                _ = try APITokens.scopes(scopes, "--scopes")
            } catch { throw ValidationError("\(error)") }
        }

        func run() throws {
            var bytes = [UInt8](repeating: 0, count: 32)
            var rng = SystemRandomNumberGenerator()
            for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
            let token = "cvy_" + APITokens.hexString(bytes)
            emit(token)
            emit("\(name) \(scopes) \(APITokens.hexString(APITokens.sha256(token)))")
        }
    }
}
