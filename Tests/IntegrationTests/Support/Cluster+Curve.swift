import ConveyorTransport
import Foundation
import XCTest
import ZeroMQ

/// A broker key directory made the way an operator makes one: `conveyor
/// keygen` for every pair, public keys copied into the role directories.
struct KeySet {
    let dir: String
    /// Where each peer's own pair lives (NAME.key_secret), outside the broker's directory.
    let own: String
    var brokerKey: String { dir + "/broker.key" }
    func secret(_ name: String) -> String { "\(own)/\(name).key_secret" }
    func flags(_ name: String) -> [String] { ["--curve-key", secret(name), "--curve-server-key", brokerKey] }
    func security(_ name: String) throws -> SocketProfile.Security {
        try CurveClientKeys.load(keyFile: secret(name), serverKeyFile: brokerKey).security
    }
}

extension Cluster {
    /// Generates `broker` plus the given peers, each allowed in its role directory
    /// (`clients`, `workers`, `subscribers`, `admins`, or nil for a key nobody allowed).
    func makeKeys(_ peers: [(name: String, role: String?)]) throws -> KeySet {
        let dir = directory.appendingPathComponent("keys").path, own = directory.appendingPathComponent("own-keys").path
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try fm.createDirectory(atPath: own, withIntermediateDirectories: true)
        let b = try cli(["keygen", "broker", "--dir", dir])
        XCTAssertEqual(b.status, 0, b.err)
        XCTAssertEqual(b.out.trimmingCharacters(in: .whitespacesAndNewlines).count, 40, "keygen prints the public key")
        for (name, role) in peers {
            let r = try cli(["keygen", name, "--dir", own])
            XCTAssertEqual(r.status, 0, r.err)
            if let role {
                try fm.createDirectory(atPath: "\(dir)/\(role)", withIntermediateDirectories: true)
                try fm.copyItem(atPath: "\(own)/\(name).key", toPath: "\(dir)/\(role)/\(name).key")
            }
        }
        return KeySet(dir: dir, own: own)
    }

    /// Keys for a whole secured cluster: the test's own client is `admin`,
    /// workers use `worker` unless they name another key.
    @discardableResult
    func secure(_ extra: [(name: String, role: String?)] = []) throws -> KeySet {
        let k = try makeKeys([("admin", "admins"), ("worker", "workers")] + extra)
        keys = k
        clientSecurity = try k.security("admin")
        workerCurveArgs = k.flags("worker")
        return k
    }
}
