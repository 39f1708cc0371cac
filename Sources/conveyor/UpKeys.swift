import ConveyorTransport
import Foundation

/// The key set `conveyor up` makes on first run, so the embedded default is
/// the secure path: the broker's pair and allowlists in DIR, and the own pairs
/// of the workers, the gateway (an admin) and the command line (an admin) in
/// DIR/own. Later runs reuse them.
struct UpKeys {
    let directory: String
    var brokerKey: String { directory + "/broker.key" }
    func secret(_ name: String) -> String { "\(directory)/own/\(name).key_secret" }
    func flags(_ name: String) -> [String] { ["--curve-key", secret(name), "--curve-server-key", brokerKey] }
    func clientKeys(_ name: String) throws -> CurveClientKeys { try CurveClientKeys.load(keyFile: secret(name), serverKeyFile: brokerKey) }

    static let peers: [(name: String, role: String)] = [("worker", "workers"), ("gateway", "admins"), ("cli", "admins")]

    static func ensure(directory: String) throws -> UpKeys {
        let k = UpKeys(directory: URL(fileURLWithPath: directory).standardizedFileURL.path)
        let fm = FileManager.default
        if !fm.fileExists(atPath: k.directory + "/broker.key_secret") {
            try CurveCertificate.generate().write(name: "broker", directory: k.directory)
        }
        for (name, role) in peers where !fm.fileExists(atPath: k.secret(name)) {
            let cert = try CurveCertificate.generate()
            _ = try cert.write(name: name, directory: k.directory + "/own")
            try? fm.removeItem(atPath: "\(k.directory)/\(role)/\(name).key")
            try CurveCertificate(publicKey: cert.publicKey, secretKey: nil).writePublic(name: name, directory: "\(k.directory)/\(role)")
        }
        return k
    }
}
