/// The error codes of spec §10, as sent in REJECTED and ERROR.
///
/// Why constants: a code is a contract with every client (the gateway maps
/// them to HTTP statuses, programs branch on them), so it is spelled once.
public enum ErrorCode {
    public static let badRequest = "bad_request"
    public static let unknownCommand = "unknown_command"
    public static let unsupportedVersion = "unsupported_version"
    public static let queueFull = "queue_full"
    public static let unknownType = "unknown_type"
    public static let payloadTooLarge = "payload_too_large"
    public static let shuttingDown = "shutting_down"
    public static let notFound = "not_found"
    public static let notCancellable = "not_cancellable"
    public static let forbidden = "forbidden"
    /// The journal cannot commit (disk full, I/O error, read-only file system):
    /// the request needs it and was not carried out; retry later (§10).
    public static let storageUnavailable = "storage_unavailable"
}
