import Synchronization

/// Which `Host` headers a gateway without tokens answers.
///
/// Why: with no tokens every route is open to whoever can reach the port, and a
/// web page can reach a loopback port too — by DNS rebinding its own name to
/// 127.0.0.1 it turns the browser into a same-origin client that reads the
/// answers. Such a request still carries the page's name in `Host`, so the
/// gateway answers only its own names: the address it listens on, `localhost`,
/// `127.0.0.1`, `[::1]`, and those given with `--allowed-hosts` (`*`: any).
/// With tokens configured the check is off: the token is the defence.
public final class HostAllowlist: Sendable {
    /// Lower-cased names (IPv6 literals in brackets), or entries `name:port`.
    public let names: Set<String>
    public let acceptsAny: Bool
    /// The port the gateway listens on (set once bound); 0: not known, not checked.
    private let boundPort: Atomic<Int>

    public init(listenHost: String, port: Int, extra: [String]) {
        var n: Set<String> = ["localhost", "127.0.0.1", "[::1]"]
        n.insert(Self.bracketed(listenHost.lowercased()))
        var any = false
        for e in extra {
            let t = e.trimmingCharacters.lowercased()
            if t.isEmpty { continue }
            if t == "*" { any = true } else { n.insert(Self.bracketed(t)) }
        }
        names = n
        acceptsAny = any
        boundPort = Atomic(port)
    }

    public var port: Int { boundPort.load(ordering: .relaxed) }
    public func setPort(_ p: Int) { boundPort.store(p, ordering: .relaxed) }

    /// True when a request with this `Host` (HTTP/2 `:authority`) may be answered.
    /// The name must be one of `names`; a port, when given, must be the listening one.
    public func allows(_ authority: String?) -> Bool {
        if acceptsAny { return true }
        guard let authority, let (name, port) = Self.split(authority.lowercased()) else { return false }
        if names.contains(name + ":" + (port ?? "")) { return true }
        guard names.contains(name) else { return false }
        guard let port else { return true }
        let bound = self.port
        return bound == 0 || Int(port) == bound
    }

    /// `name[:port]` or `[v6][:port]`; nil when malformed.
    static func split(_ authority: String) -> (name: String, port: String?)? {
        guard !authority.isEmpty, authority.utf8.count <= 300 else { return nil }
        var name = Substring(authority)
        var port: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            name = authority[...close]
            let rest = authority[authority.index(after: close)...]
            if !rest.isEmpty {
                guard rest.first == ":" else { return nil }
                port = rest.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            name = authority[..<colon]
            port = authority[authority.index(after: colon)...]
        }
        if let p = port, p.isEmpty || p.count > 5 || !p.allSatisfy({ $0.isASCII && $0.isNumber }) { return nil }
        guard !name.isEmpty, !name.contains(where: { $0 == "@" || $0 == "/" || $0.isWhitespace }) else { return nil }
        return (String(name), port.map(String.init))
    }

    static func bracketed(_ host: String) -> String {
        host.filter { $0 == ":" }.count > 1 && !host.hasPrefix("[") ? "[\(host)]" : host
    }
}
