/// Why a message could not be decoded. `code` is the wire error code
/// (`bad_request`, `unsupported_version`, `unknown_command`); `requestID` is
/// set when it could be read, so the broker can address its ERROR reply.
public struct ProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: String
    public let message: String
    public let requestID: [UInt8]?

    public init(_ code: String, _ message: String, requestID: [UInt8]? = nil) {
        self.code = code
        self.message = message
        self.requestID = requestID
    }

    static func bad(_ message: String, _ requestID: [UInt8]? = nil) -> ProtocolError {
        ProtocolError("bad_request", message, requestID: requestID)
    }

    public var description: String { "\(code): \(message)" }
}
