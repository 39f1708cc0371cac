/// The bearer tokens the gateway accepts (`CONVEYOR_API_TOKENS`).
///
/// Why constant time: a comparison that stops at the first differing byte lets
/// an attacker find a token byte by byte from response times. Every configured
/// token is compared in full, and the result does not depend on where (or in
/// which token) the bytes differ.
public struct APITokens: Sendable {
    private let tokens: [[UInt8]]

    /// Empty or blank entries are ignored.
    public init(_ tokens: [String]) {
        self.tokens = tokens.map { Array($0.trimmingWhitespace.utf8) }.filter { !$0.isEmpty }
    }

    /// Parses a comma-separated list.
    public init(commaSeparated list: String) {
        self.init(list.split(separator: ",").map(String.init))
    }

    /// False when no token is configured: authentication is off.
    public var isEnabled: Bool { !tokens.isEmpty }

    public func accepts(_ candidate: some StringProtocol) -> Bool {
        let c = Array(candidate.utf8)
        var ok: UInt8 = 0
        for t in tokens { ok |= Self.constantTimeEqual(t, c) ? 1 : 0 }
        return ok == 1
    }

    /// Time depends only on the candidate's length, which the caller already knows.
    static func constantTimeEqual(_ secret: [UInt8], _ candidate: [UInt8]) -> Bool {
        var diff: UInt8 = secret.count == candidate.count ? 0 : 1
        let n = secret.count
        for i in 0..<candidate.count {
            let s = n == 0 ? 0 : secret[i % n]
            diff |= s ^ candidate[i]
        }
        return diff == 0 && !candidate.isEmpty
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

extension String {
    var trimmingWhitespace: Substring {
        var s = self[...]
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return s
    }
}
