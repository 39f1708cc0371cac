import Crypto

/// What an HTTP token may do. `read` sees (status, streams, listings) only
/// the tasks submitted with the same token name; `admin` sees and cancels
/// every task, manages dead letters and pauses types.
public enum Scope: String, Sendable, CaseIterable, Comparable {
    case submit, read, admin
    public static func < (a: Scope, b: Scope) -> Bool { a.rawValue < b.rawValue }
}

/// One accepted token: its name (recorded as the owner of the tasks it
/// submits), its scopes, and the SHA-256 of the secret — never the secret.
public struct APIToken: Sendable, Equatable {
    public let name: String
    public let scopes: Set<Scope>
    let digest: [UInt8]

    public init(name: String, scopes: Set<Scope>, digest: [UInt8]) {
        self.name = name
        self.scopes = scopes
        self.digest = digest
    }

    public func allows(_ scope: Scope) -> Bool { scopes.contains(scope) || scopes.contains(.admin) }
    /// The owner string the broker stores for this token's tasks.
    public var owner: String { "http:" + name }
}

/// The tokens the gateway accepts: `CONVEYOR_API_TOKENS="name:token:scope+scope,…"`
/// (bare `token` entries, the old form, mean every scope), or a tokens file of
/// `name scope+scope sha256hex` lines, so the file holds no secret.
///
/// Why hashes and constant time: the gateway compares the SHA-256 of the
/// candidate with every stored digest in full, so neither the comparison's
/// time nor a leaked tokens file gives a token away.
public struct APITokens: Sendable {
    public let tokens: [APIToken]

    public init(_ tokens: [APIToken]) { self.tokens = tokens }

    /// Old form only: every entry is a bare token with every scope (tests, embedding).
    public init(_ bare: [String]) {
        tokens = bare.map { $0.trimmingWhitespace }.filter { !$0.isEmpty }.enumerated().map {
            APIToken(name: "token-\($0.offset + 1)", scopes: Set(Scope.allCases), digest: Self.sha256(String($0.element)))
        }
    }

    /// Parses `CONVEYOR_API_TOKENS`; errors name the entry by position, never its secret.
    public init(environment list: String) throws(TokenParseError) {
        var out: [APIToken] = []
        for (i, raw) in list.split(separator: ",").enumerated() {
            let entry = raw.trimmingCharacters
            if entry.isEmpty { continue }
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false)
            if parts.count == 1 {
                out.append(APIToken(name: "token-\(i + 1)", scopes: Set(Scope.allCases), digest: Self.sha256(String(entry))))
                continue
            }
            guard parts.count >= 3, let first = parts.first, let last = parts.last else {
                throw TokenParseError("CONVEYOR_API_TOKENS entry \(i + 1): expected name:token:scope+scope or a bare token")
            }
            let name = String(first), secret = parts.dropFirst().dropLast().joined(separator: ":")
            try Self.checkName(name, "CONVEYOR_API_TOKENS entry \(i + 1)")
            guard !secret.isEmpty else { throw TokenParseError("CONVEYOR_API_TOKENS entry \(i + 1): the token is empty") }
            out.append(APIToken(name: name, scopes: try Self.scopes(String(last), "CONVEYOR_API_TOKENS entry \(i + 1)"), digest: Self.sha256(secret)))
        }
        try Self.checkUnique(out)
        tokens = out
    }

    /// Parses a tokens file: `name scope+scope sha256hex` per line, `#` comments.
    public init(file text: String, path: String) throws(TokenParseError) {
        var out: [APIToken] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters
            if line.isEmpty || line.hasPrefix("#") { continue }
            let where_ = "\(path):\(i + 1)"
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard f.count == 3 else { throw TokenParseError("\(where_): expected 'name scope+scope sha256hex'") }
            try Self.checkName(String(f[0]), where_)
            guard let digest = Self.hex(String(f[2])), digest.count == 32 else {
                throw TokenParseError("\(where_): the last field must be the token's SHA-256 in 64 hex digits")
            }
            out.append(APIToken(name: String(f[0]), scopes: try Self.scopes(String(f[1]), where_), digest: digest))
        }
        try Self.checkUnique(out)
        tokens = out
    }

    /// False when no token is configured: authentication is off.
    public var isEnabled: Bool { !tokens.isEmpty }

    /// The token a candidate secret is, if any. Every digest is compared in full.
    public func identify(_ candidate: some StringProtocol) -> APIToken? {
        guard !candidate.isEmpty else { return nil }
        let d = Self.sha256(String(candidate))
        var found: APIToken?
        for t in tokens where Self.constantTimeEqual(t.digest, d) { found = t }
        return found
    }

    public func accepts(_ candidate: some StringProtocol) -> Bool { identify(candidate) != nil }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }

    public static func sha256(_ s: String) -> [UInt8] { Array(SHA256.hash(data: Array(s.utf8))) }

    public static func hexString(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        return String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] })
    }

    static func hex(_ s: String) -> [UInt8]? {
        let u = Array(s.utf8)
        guard u.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var out: [UInt8] = []
        for i in stride(from: 0, to: u.count, by: 2) {
            guard let h = nibble(u[i]), let l = nibble(u[i + 1]) else { return nil }
            out.append(h << 4 | l)
        }
        return out
    }

    public static func scopes(_ text: String, _ where_: String) throws(TokenParseError) -> Set<Scope> {
        var out: Set<Scope> = []
        for s in text.split(separator: "+", omittingEmptySubsequences: false) {
            guard let scope = Scope(rawValue: String(s)) else {
                throw TokenParseError("\(where_): unknown scope '\(s)' (use submit, read, admin joined with +)")
            }
            out.insert(scope)
        }
        return out
    }

    public static func checkName(_ name: String, _ where_: String) throws(TokenParseError) {
        guard !name.isEmpty, name.utf8.count <= 64,
              name.unicodeScalars.allSatisfy({ ($0.isASCII && ($0.properties.isAlphabetic || $0.properties.numericType != nil)) || "-_.".unicodeScalars.contains($0) })
        else { throw TokenParseError("\(where_): the name must be 1-64 of [A-Za-z0-9_.-]") }
    }

    private static func checkUnique(_ t: [APIToken]) throws(TokenParseError) {
        var seen: Set<String> = []
        for x in t where !seen.insert(x.name).inserted { throw TokenParseError("token name '\(x.name)' is given twice") }
    }

    /// The token of an `Authorization: Bearer <token>` header value.
    public static func bearer(_ header: String?) -> Substring? {
        guard let h = header else { return nil }
        let parts = h.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].drop { $0 == " " }
        return token.isEmpty ? nil : token
    }
}

public struct TokenParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}

extension StringProtocol {
    var trimmingCharacters: Substring {
        var s = self[...]
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return Substring(s)
    }
}

extension String {
    var trimmingWhitespace: Substring { trimmingCharacters }
}
