import ArgumentParser
import ConveyorTransport
import ZeroMQ

/// `--curve-key` / `--curve-server-key` for every program that connects to a
/// broker (or to a gateway's event republisher). Both or neither: one alone
/// is a usage error, as is a key file that does not parse or is too open.
struct CurveClientOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("This program's own CURVE key pair, a NAME.key_secret file (env CONVEYOR_CURVE_KEY).", valueName: "file"))
    var curveKey: String? // "" = plaintext
    @Option(name: .long, help: ArgumentHelp("The broker's public key, its broker.key file (env CONVEYOR_CURVE_SERVER_KEY).", valueName: "file"))
    var curveServerKey: String?

    /// The keys, or nil for plaintext.
    var keys: CurveClientKeys? {
        get throws {
            // An empty value means plaintext, even when the environment names keys.
            let own = (curveKey ?? env("CONVEYOR_CURVE_KEY")).flatMap { $0.isEmpty ? nil : $0 }
            let server = (curveServerKey ?? env("CONVEYOR_CURVE_SERVER_KEY")).flatMap { $0.isEmpty ? nil : $0 }
            switch (own, server) {
            case (nil, nil): return nil
            case (.some, nil): throw ValidationError("--curve-key needs --curve-server-key (the broker's broker.key)")
            case (nil, .some): throw ValidationError("--curve-server-key needs --curve-key (this program's NAME.key_secret)")
            case (.some(let o), .some(let s)):
                guard ZMQCurve.isAvailable else { throw ValidationError("this libzmq was built without CURVE") }
                do { return try CurveClientKeys.load(keyFile: o, serverKeyFile: s) } catch { throw ValidationError("\(error)") }
            }
        }
    }

    var security: SocketProfile.Security { get throws { try keys?.security ?? .none } }
}

/// `conveyor keygen NAME`: a key pair in the zcert format (NAME.key, NAME.key_secret).
struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Write a CURVE key pair: NAME.key (public) and NAME.key_secret (mode 0600); print the public key.",
        discussion: "Copy NAME.key into the broker's allowlist (DIR/clients, DIR/workers, DIR/subscribers or DIR/admins); keep NAME.key_secret on the peer's host."
    )
    @Argument(help: "The pair's name (file names NAME.key and NAME.key_secret).") var name: String
    @Option(help: "Directory to write into (default: the current directory).") var dir: String = "."

    func validate() throws {
        guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }), !name.hasPrefix(".") else {
            throw ValidationError("NAME must be 1-64 letters, digits, '-', '_' or '.', not starting with '.'")
        }
    }

    func run() throws {
        guard ZMQCurve.isAvailable else {
            writeErr("conveyor: this libzmq was built without CURVE")
            throw ExitCode(1)
        }
        do {
            let cert = try CurveCertificate.generate()
            let files = try cert.write(name: name, directory: dir)
            writeErr("wrote \(files.publicFile) and \(files.secretFile)")
            emit(cert.publicKey)
        } catch {
            writeErr("conveyor: \(error)")
            throw ExitCode(1)
        }
    }
}
