/// "Safe by default": an endpoint reachable from other machines must not carry
/// plaintext. Loopback addresses (`127.0.0.0/8`, `::1`, `localhost`), `ipc://`
/// and `inproc://` stay on this machine; anything else (`*`, `0.0.0.0`, a
/// public or private address, an interface name) may not.
public enum EndpointRule {
    public static func isLocal(_ endpoint: String) -> Bool {
        if endpoint.hasPrefix("ipc://") || endpoint.hasPrefix("inproc://") { return true }
        guard endpoint.hasPrefix("tcp://") else { return false }
        var host = String(endpoint.dropFirst(6))
        // tcp://HOST:PORT, tcp://[::1]:PORT, or tcp://SOURCE;HOST:PORT (connect only)
        if let semi = host.lastIndex(of: ";") { host = String(host[host.index(after: semi)...]) }
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            return host[host.index(after: host.startIndex)..<close] == "::1"
        }
        guard let colon = host.lastIndex(of: ":") else { return false }
        host = String(host[..<colon])
        if host == "localhost" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "127" else { return false }
        return parts.allSatisfy { p in UInt8(p) != nil }
    }

    /// The one-line refusal the broker prints (exit status 2).
    public static func refusal(_ endpoint: String, flag: String) -> String {
        "refusing to bind \(flag) \(endpoint) without encryption: it is not a loopback endpoint. "
            + "Give --curve-dir DIR (see 'conveyor keygen'), or --insecure to accept plaintext on the network."
    }
}
