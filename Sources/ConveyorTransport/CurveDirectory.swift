import Foundation
import Synchronization

/// The broker's key directory, as the operator lays it out:
///
///     DIR/broker.key, DIR/broker.key_secret   the broker's own pair
///     DIR/clients/*.key       allowed on the clients endpoint
///     DIR/workers/*.key       allowed on the workers endpoint
///     DIR/subscribers/*.key   allowed on the events endpoint
///     DIR/admins/*.key        clients that may see and cancel every task;
///                             also allowed on the clients and events endpoints
///
/// The allowlists are re-read by `reload()` (every few seconds and on SIGHUP),
/// so revoking a key is deleting its file. Thread-safe: the ZAP handler thread
/// asks it about handshakes, the broker loop about every message.
public final class CurveDirectory: Sendable {
    public let path: String
    /// The server's own pair, e.g. `broker` → `DIR/broker.key_secret`.
    public let serverCertificate: CurveCertificate

    public struct Snapshot: Sendable, Equatable {
        /// Public key (Z85) → file name, per role.
        public var allowed: [PeerRole: [String: String]] = [:]
        public var admins: [String: String] = [:]

        public func permits(_ key: String, as role: PeerRole) -> Bool {
            if allowed[role]?[key] != nil { return true }
            return role != .worker && admins[key] != nil
        }

        public func isAdmin(_ key: String) -> Bool { admins[key] != nil }

        /// Every (key, role) this snapshot permits.
        var grants: Set<String> {
            var out: Set<String> = []
            for role in PeerRole.allCases { for k in (allowed[role] ?? [:]).keys { out.insert("\(role.rawValue)/\(k)") } }
            for k in admins.keys { out.insert("admins/\(k)") }
            return out
        }
    }

    private let state: Mutex<Snapshot>

    /// Opens `path`, reading `NAME.key_secret` as the server's pair (`broker`
    /// for the broker, the gateway's own name for its event republisher).
    public init(path: String, serverName: String = "broker") throws {
        self.path = path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw KeyFileError(path, .missing)
        }
        serverCertificate = try CurveCertificate.load("\(path)/\(serverName).key_secret", requireSecret: true)
        state = Mutex(try Self.read(path))
    }

    /// The allowlists of `path` for a server whose own pair is given (the
    /// gateway's event republisher serves with the gateway's key).
    public init(path: String, serverCertificate: CurveCertificate) throws {
        self.path = path
        self.serverCertificate = serverCertificate
        state = Mutex(try Self.read(path))
    }

    /// An allowlist built in memory (tests, or a server whose keys come from elsewhere).
    public init(path: String, serverCertificate: CurveCertificate, snapshot: Snapshot) {
        self.path = path
        self.serverCertificate = serverCertificate
        state = Mutex(snapshot)
    }

    public var snapshot: Snapshot { state.withLock { $0 } }

    public func permits(_ key: String, as role: PeerRole) -> Bool { state.withLock { $0.permits(key, as: role) } }
    public func isAdmin(_ key: String) -> Bool { state.withLock { $0.isAdmin(key) } }

    /// Re-reads the allowlists. Returns the grants that disappeared
    /// (`role/key`), for logging and counting revocations. A directory that
    /// cannot be read keeps the previous allowlists (an operator's half-done
    /// edit must not lock everyone out).
    @discardableResult
    public func reload() -> (revoked: [String], added: [String], error: String?) {
        let fresh: Snapshot
        do { fresh = try Self.read(path) } catch { return ([], [], "\(error)") }
        return state.withLock { old in
            let before = old.grants, after = fresh.grants
            old = fresh
            return (before.subtracting(after).sorted(), after.subtracting(before).sorted(), nil)
        }
    }

    private static func read(_ path: String) throws -> Snapshot {
        var s = Snapshot()
        for role in PeerRole.allCases { s.allowed[role] = try keys(in: "\(path)/\(role.rawValue)") }
        s.admins = try keys(in: "\(path)/admins")
        return s
    }

    /// Public keys of the `*.key` files in `dir` (a missing directory is an empty list).
    private static func keys(in dir: String) throws -> [String: String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [:] }
        var out: [String: String] = [:]
        for name in names.sorted() where name.hasSuffix(".key") {
            let cert = try CurveCertificate.load("\(dir)/\(name)")
            out[cert.publicKey] = name
        }
        return out
    }
}
