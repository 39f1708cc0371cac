import ConveyorClient
import ConveyorProtocol
import Hummingbird

/// Every failure the REST API reports, as `{"error_type", "message", "field"?}`.
///
/// Why one type: web apps branch on `error_type` (e.g. `queue_full` → retry
/// later), so every route must answer errors in the same JSON shape with a
/// stable code, and a 400 must name the field at fault.
public struct APIError: Error, HTTPResponseError, Sendable, CustomStringConvertible {
    public let status: HTTPResponse.Status
    public let type: String
    public let message: String
    public let field: String?
    /// The limit exceeded, in bytes, for `payload_too_large`.
    public var limit: Int?
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, _ type: String, _ message: String, field: String? = nil, headers: HTTPFields = [:]) {
        self.status = status
        self.type = type
        self.message = message
        self.field = field
        self.headers = headers
    }

    public var description: String { "\(status.code) \(type): \(message)" }

    public var json: [UInt8] {
        var w = JSONWriter()
        w.field("error_type", type)
        w.field("message", message)
        if let field { w.field("field", field) }
        if let limit { w.field("limit", limit) }
        return w.finish()
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var h = headers
        h[.contentType] = "application/json"
        return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(bytes: json)))
    }

    // MARK: Common errors

    public static func badRequest(_ message: String, field: String?) -> APIError {
        APIError(.badRequest, "bad_request", message, field: field)
    }

    public static func forbidden(scope: Scope) -> APIError {
        APIError(.forbidden, "forbidden", "this token lacks the '\(scope.rawValue)' scope")
    }

    public static func unauthorized() -> APIError {
        APIError(.unauthorized, "unauthorized", "a valid API token is required: send 'Authorization: Bearer <token>'",
                 headers: [.wwwAuthenticate: "Bearer realm=\"conveyor\""])
    }

    public static func payloadTooLarge(limit: Int) -> APIError {
        // The body is not read: a client still sending it should stop and not reuse the connection.
        var e = APIError(.contentTooLarge, "payload_too_large", "the request body is larger than the limit of \(limit) bytes (the broker's --max-payload)",
                         headers: [.connection: "close"])
        e.limit = limit
        return e
    }

    /// A task payload (as built: an upload is base64-encoded) or the message
    /// carrying it over the broker's limit; checked before anything is sent.
    public static func payloadTooLarge(limit: Int, message: String) -> APIError {
        var e = APIError(.contentTooLarge, "payload_too_large", message)
        e.limit = limit
        return e
    }

    public static func unsupportedMediaType(_ contentType: String?, route: String) -> APIError {
        let got = contentType.map { "'\($0.prefix(100))'" } ?? "none"
        return APIError(.unsupportedMediaType, "unsupported_media_type",
                        "\(route) takes Content-Type: application/json (got \(got))", field: "Content-Type")
    }

    /// Authentication is off and the request's `Host` is not one of the gateway's names.
    public static func hostNotAllowed(_ host: String?) -> APIError {
        let got = host.map { "'\($0.prefix(100))'" } ?? "no Host header"
        return APIError(.forbidden, "host_not_allowed",
                        "this gateway has no API tokens and answers only its own host names (got \(got)); "
                            + "add the name with --allowed-hosts (CONVEYOR_ALLOWED_HOSTS) or configure tokens")
    }

    public static func notFound(_ message: String) -> APIError {
        APIError(.notFound, "not_found", message)
    }

    /// The broker cannot be reached or did not answer: 503 with a retry hint.
    public static func brokerUnavailable(_ error: any Error, endpoint: String) -> APIError {
        let detail: String
        switch error {
        case ClientError.notConnected: detail = "the broker at \(endpoint) is not reachable"
        case ClientError.timeout(_, let ms): detail = "the broker at \(endpoint) did not answer within \(ms) ms"
        default: detail = "the broker at \(endpoint) failed: \(error)"
        }
        return APIError(.serviceUnavailable, "broker_unavailable", detail + "; try again shortly", headers: [.retryAfter: "1"])
    }

    /// An answer the gateway does not expect from the broker.
    public static func unexpected(_ reply: ClientReply) -> APIError {
        switch reply {
        case .error(_, let code, let message):
            return fromBroker(code: code, message: message)
        case .notLeader(_, _, let message, _):
            return fromBroker(code: ErrorCode.notLeader.rawValue, message: message)
        default:
            return APIError(.badGateway, "bad_gateway", "unexpected reply from the broker")
        }
    }

    /// Maps a broker ERROR/REJECTED code (proto §10) to an HTTP answer.
    public static func fromBroker(code: String, message: String) -> APIError {
        // A code this gateway does not know (a newer broker's) passes through as 502.
        guard let known = ErrorCode(rawValue: code) else { return APIError(.badGateway, code.isEmpty ? "bad_gateway" : code, message) }
        let retryLater: HTTPFields = [.retryAfter: "5"]
        switch known {
        case .queueFull: return APIError(.serviceUnavailable, code, "the queue is full (\(message)); retry later", headers: retryLater)
        case .shuttingDown: return APIError(.serviceUnavailable, code, "the broker is shutting down; retry later", headers: retryLater)
        case .storageUnavailable:
            return APIError(.serviceUnavailable, code, "the broker cannot write its journal (\(message)); retry later", headers: retryLater)
        // Types with queued tasks drain: the same request can succeed later.
        case .tooManyTypes: return APIError(.serviceUnavailable, code, message, headers: retryLater)
        case .payloadTooLarge: return APIError(.contentTooLarge, code, message)
        case .unknownType: return APIError(.badRequest, code, message, field: "type")
        case .notFound: return APIError(.notFound, code, message)
        case .notCancellable: return APIError(.conflict, code, message)
        case .badRequest: return APIError(.badRequest, code, message)
        case .forbidden: return APIError(.forbidden, code, message)
        // Only reaches here when every broker the gateway knows was a standby.
        case .notLeader: return APIError(.serviceUnavailable, code, "no active broker answered (\(message)); retry shortly", headers: [.retryAfter: "1"])
        case .unknownCommand, .unsupportedVersion: return APIError(.badGateway, code, message)
        }
    }

}
