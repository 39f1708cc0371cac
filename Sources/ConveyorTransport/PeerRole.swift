/// Who may connect where. Each broker endpoint is a ZAP domain with its own
/// allowlist directory; admins are clients that may see and cancel every
/// task (the gateway's key belongs there), and may also subscribe to events.
public enum PeerRole: String, Sendable, CaseIterable {
    case client = "clients"
    case worker = "workers"
    case subscriber = "subscribers"

    /// The ZAP domain the endpoint's socket sets (ZMQ_ZAP_DOMAIN).
    public var zapDomain: String { rawValue }
}
