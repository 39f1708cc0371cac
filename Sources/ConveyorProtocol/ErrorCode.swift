/// The error codes of spec §10, defined once. Broker, gateway and CLI name a
/// code through this type instead of repeating its string, and a test checks
/// the list against the spec's table. Wire enums keep `code: String`, because
/// a newer peer may send a code this one does not know (§5.8: a generic failure).
public enum ErrorCode: String, Sendable, CaseIterable {
    case badRequest = "bad_request"
    case unknownCommand = "unknown_command"
    case unsupportedVersion = "unsupported_version"
    case queueFull = "queue_full"
    case unknownType = "unknown_type"
    case payloadTooLarge = "payload_too_large"
    case tooManyTypes = "too_many_types"
    case shuttingDown = "shutting_down"
    case notFound = "not_found"
    case notCancellable = "not_cancellable"
    case forbidden
    /// The journal cannot commit (disk full, I/O error, read-only file system):
    /// the request needs it and was not carried out; retry later (§10).
    case storageUnavailable = "storage_unavailable"
    /// A standby broker answered: the active one (named in the reply's
    /// `leader` frame, if known) serves requests (§9.7, 1.2).
    case notLeader = "not_leader"

    /// What a client may do about it: submissions refused for these may succeed later.
    public var isTransient: Bool { self == .queueFull || self == .shuttingDown || self == .storageUnavailable || self == .notLeader }
}
