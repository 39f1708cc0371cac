import Foundation

/// Where a PostgreSQL journal is: `postgres://USER@HOST:PORT/DB` (also
/// `postgresql://`), optionally `?schema=NAME` to keep several Conveyor
/// deployments in one database, and `sslmode=` as libpq spells it
/// (`disable`, `prefer` — the default —, `require`, `verify-full`, with
/// `sslrootcert=FILE` for the CA to verify against). The password is never part of it: it comes
/// from `PGPASSWORD` or a `.pgpass` file, as for `psql`, so it never shows in
/// a process list, a log line or a unit file.
public struct PostgresURL: Sendable, Equatable, CustomStringConvertible {
    public var user: String
    public var host: String
    public var port: Int
    public var database: String
    /// The schema holding Conveyor's tables (`public` when not given).
    public var schema: String?
    public var sslMode: SSLMode = .prefer
    /// The CA certificate(s), PEM, that `verify-full` checks the server against (default: the system's).
    public var sslRootCert: String?

    /// TLS to the server, as libpq names the choices: `prefer` encrypts when the
    /// server offers it; `require` insists (without checking who answers);
    /// `verify-full` also checks the certificate and the host name.
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable, prefer, require
        case verifyFull = "verify-full"
    }

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public init(user: String, host: String, port: Int = 5432, database: String, schema: String? = nil) {
        self.user = user
        self.host = host
        self.port = port
        self.database = database
        self.schema = schema
    }

    /// Parses a journal URL; every mistake gets a message that says what to write instead.
    public init(parsing text: String) throws(Invalid) {
        let example = "postgres://USER@HOST:PORT/DB"
        guard let c = URLComponents(string: text), let scheme = c.scheme, ["postgres", "postgresql"].contains(scheme) else {
            throw Invalid(description: "'\(text)' is not a PostgreSQL URL (expected \(example))")
        }
        if c.password != nil {
            throw Invalid(description: "the journal URL must not carry a password (it would show in process lists and logs): set PGPASSWORD or use a .pgpass file")
        }
        guard let user = c.user, !user.isEmpty else { throw Invalid(description: "the journal URL names no user (expected \(example))") }
        guard let host = c.host, !host.isEmpty else { throw Invalid(description: "the journal URL names no host (expected \(example))") }
        let port = c.port ?? 5432
        guard (1...65535).contains(port) else { throw Invalid(description: "the journal URL's port \(port) is out of range 1-65535") }
        let db = String(c.path.drop { $0 == "/" })
        guard !db.isEmpty, !db.contains("/") else { throw Invalid(description: "the journal URL names no database (expected \(example))") }
        var schema: String?
        var mode = SSLMode.prefer
        var rootCert: String?
        var seen: Set<String> = []
        for item in c.queryItems ?? [] {
            guard let v = item.value, !v.isEmpty else { throw Invalid(description: "journal URL parameter '\(item.name)' has no value") }
            guard seen.insert(item.name).inserted else { throw Invalid(description: "journal URL parameter '\(item.name)' is given twice") }
            switch item.name {
            case "schema":
                guard v.count <= 63, v.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }), !(v.first?.isNumber ?? true) else {
                    throw Invalid(description: "schema '\(v)' must be 1-63 ASCII letters, digits or _, not starting with a digit")
                }
                schema = v
            case "sslmode":
                guard let m = SSLMode(rawValue: v) else {
                    throw Invalid(description: "sslmode '\(v)' must be one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                mode = m
            case "sslrootcert":
                rootCert = v
            default:
                throw Invalid(description: "unknown journal URL parameter '\(item.name)' (schema, sslmode, sslrootcert)")
            }
        }
        if rootCert != nil && mode != .verifyFull {
            throw Invalid(description: "sslrootcert is only used with sslmode=verify-full")
        }
        self.init(user: user, host: host, port: port, database: db, schema: schema)
        sslMode = mode
        sslRootCert = rootCert
    }

    public var description: String {
        var params: [String] = []
        if let schema { params.append("schema=\(schema)") }
        if sslMode != .prefer { params.append("sslmode=\(sslMode.rawValue)") }
        if let sslRootCert { params.append("sslrootcert=\(sslRootCert)") }
        return "postgres://\(user)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
            + (params.isEmpty ? "" : "?" + params.joined(separator: "&"))
    }

    /// The password as libpq finds it: `PGPASSWORD`, else the first matching
    /// line of `PGPASSFILE` or `~/.pgpass` (`host:port:database:user:password`,
    /// `*` matching anything, `\` escaping `:` and `\`). A `.pgpass` readable by
    /// group or others is ignored, as libpq does.
    public func password(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let p = environment["PGPASSWORD"], !p.isEmpty { return p }
        let file = environment["PGPASSFILE"] ?? environment["HOME"].map { $0 + "/.pgpass" }
        guard let file, let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        if let attrs = try? FileManager.default.attributesOfItem(atPath: file),
           let mode = attrs[.posixPermissions] as? Int, mode & 0o077 != 0 { return nil }
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            let fields = Self.pgpassFields(String(line))
            guard fields.count == 5 else { continue }
            let wanted = [host, String(port), database, user]
            if zip(fields.prefix(4), wanted).allSatisfy({ $0 == "*" || $0 == $1 }) { return fields[4] }
        }
        return nil
    }

    static func pgpassFields(_ line: String) -> [String] {
        var fields: [String] = []
        var current = ""
        var escaped = false
        for ch in line {
            if escaped { current.append(ch); escaped = false } else if ch == "\\" { escaped = true } else if ch == ":" && fields.count < 4 {
                fields.append(current)
                current = ""
            } else { current.append(ch) }
        }
        fields.append(current)
        return fields
    }
}
