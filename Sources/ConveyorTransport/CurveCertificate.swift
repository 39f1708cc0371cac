import Foundation
import ZeroMQ

/// A CURVE key pair (or just its public half) as Z85 text, read from and
/// written to the files czmq's `zcert` writes and pyzmq's
/// `zmq.auth.load_certificate` reads: `NAME.key` holds the public key,
/// `NAME.key_secret` both keys and must be readable by its owner only.
public struct CurveCertificate: Sendable, Equatable {
    public let publicKey: String
    public let secretKey: String?

    public init(publicKey: String, secretKey: String?) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A new pair.
    public static func generate() throws -> CurveCertificate {
        let k = try ZMQCurve.keyPair()
        return CurveCertificate(publicKey: k.publicKey, secretKey: k.secretKey)
    }

    // MARK: Reading

    /// Reads a `.key` or `.key_secret` file. A secret file must not be readable
    /// by group or others, and its two keys must belong together.
    public static func load(_ path: String, requireSecret: Bool = false) throws(KeyFileError) -> CurveCertificate {
        let fm = FileManager.default
        guard fm.fileExists(atPath: path) else { throw KeyFileError(path, .missing) }
        guard let data = fm.contents(atPath: path) else { throw KeyFileError(path, .unreadable) }
        let cert = try parse(String(decoding: data, as: UTF8.self), path: path)
        if requireSecret && cert.secretKey == nil { throw KeyFileError(path, .noSecretKey) }
        if cert.secretKey != nil {
            var st = stat()
            if stat(path, &st) == 0, st.st_mode & 0o077 != 0 {
                throw KeyFileError(path, .tooOpen(mode: UInt16(st.st_mode & 0o777)))
            }
        }
        return cert
    }

    /// Parses zcert text: a `curve` section with `public-key = "…"` and
    /// optionally `secret-key = "…"`, each 40 characters of Z85.
    public static func parse(_ text: String, path: String = "<text>") throws(KeyFileError) -> CurveCertificate {
        var pub: String?, sec: String?
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || line.isEmpty { continue }
            guard let eq = line.firstIndex(of: "=") else { continue } // section names: metadata, curve
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            switch key {
            case "public-key": pub = try checked(value, path: path, what: "public-key")
            case "secret-key": sec = try checked(value, path: path, what: "secret-key")
            default: continue
            }
        }
        guard let pub else { throw KeyFileError(path, .noPublicKey) }
        if let sec, (try? ZMQCurve.publicKey(ofSecret: sec)) != pub { throw KeyFileError(path, .mismatchedPair) }
        return CurveCertificate(publicKey: pub, secretKey: sec)
    }

    private static func checked(_ value: String, path: String, what: String) throws(KeyFileError) -> String {
        guard value.utf8.count == 40 else { throw KeyFileError(path, .wrongLength(what, value.utf8.count)) }
        guard ZMQCurve.z85Decode(value)?.count == 32 else { throw KeyFileError(path, .badZ85(what)) }
        return value
    }

    // MARK: Writing

    /// Writes `DIR/NAME.key` and `DIR/NAME.key_secret` (mode 0600). Refuses to overwrite.
    public func write(name: String, directory: String) throws -> (publicFile: String, secretFile: String) {
        guard let secretKey else { throw KeyFileError("\(directory)/\(name).key_secret", .noSecretKey) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let pubPath = "\(directory)/\(name).key", secPath = "\(directory)/\(name).key_secret"
        for p in [pubPath, secPath] where FileManager.default.fileExists(atPath: p) {
            throw KeyFileError(p, .exists)
        }
        let stamp = Date().description
        let pubText = """
            #   ****  Generated on \(stamp) by Conveyor  ****
            #   ZeroMQ CURVE Public Certificate
            #   Exchange securely, or use a secure mechanism to verify the contents
            #   of this file after exchange.

            metadata
            curve
                public-key = "\(publicKey)"

            """
        let secText = """
            #   ****  Generated on \(stamp) by Conveyor  ****
            #   ZeroMQ CURVE **Secret** Certificate
            #   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

            metadata
            curve
                public-key = "\(publicKey)"
                secret-key = "\(secretKey)"

            """
        try Self.writeFile(pubPath, pubText, mode: 0o644)
        try Self.writeFile(secPath, secText, mode: 0o600)
        return (pubPath, secPath)
    }

    /// Writes only `DIR/NAME.key`: a public key for an allowlist directory.
    @discardableResult
    public func writePublic(name: String, directory: String) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = "\(directory)/\(name).key"
        if FileManager.default.fileExists(atPath: path) { throw KeyFileError(path, .exists) }
        try Self.writeFile(path, """
            #   ZeroMQ CURVE Public Certificate (written by Conveyor)

            metadata
            curve
                public-key = "\(publicKey)"

            """, mode: 0o644)
        return path
    }

    private static func writeFile(_ path: String, _ text: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard fd >= 0 else { throw KeyFileError(path, .unwritable(errno)) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw KeyFileError(path, .unwritable(errno)) }
        fchmod(fd, mode) // whatever the umask
    }
}

/// Why a key file was refused; the message names the file.
public struct KeyFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        case missing, unreadable, noPublicKey, noSecretKey, mismatchedPair, exists
        case wrongLength(String, Int)
        case badZ85(String)
        case tooOpen(mode: UInt16)
        case unwritable(Int32)
    }

    public let path: String
    public let reason: Reason
    public init(_ path: String, _ reason: Reason) {
        self.path = path
        self.reason = reason
    }

    public var description: String {
        switch reason {
        case .missing: "\(path): no such key file"
        case .unreadable: "\(path): cannot read the key file"
        case .noPublicKey: "\(path): no public-key in the key file (not a zcert certificate)"
        case .noSecretKey: "\(path): no secret-key: give the .key_secret file, not the public .key"
        case .mismatchedPair: "\(path): the secret-key does not belong to the public-key"
        case .exists: "\(path) already exists; not overwritten"
        case .wrongLength(let what, let n): "\(path): \(what) must be 40 characters of Z85, got \(n)"
        case .badZ85(let what): "\(path): \(what) is not valid Z85"
        case .tooOpen(let mode):
            "\(path): a secret key file must be readable by its owner only (mode \(String(mode, radix: 8))); run chmod 600 \(path)"
        case .unwritable(let e): "\(path): cannot write (errno \(e))"
        }
    }
}
