import Hummingbird

/// Answers 503 `overloaded` (with `Retry-After: 1` and `Connection: close`)
/// while more connections are open than `ConnectionGuard.shedAbove`.
///
/// Why a middleware and not a refusal at accept time: a client that gets a 503
/// knows to come back, and this one is cheap — no body read, no broker call —
/// while a connection left in the backlog only times out.
struct LoadSheddingMiddleware<Context: RequestContext>: RouterMiddleware {
    let connections: ConnectionGuard
    let metrics: GatewayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if connections.isOverloaded {
            connections.countShed()
            metrics.shedRequest()
            throw APIError(.serviceUnavailable, "overloaded",
                           "the gateway has \(connections.open) open connections, more than its limit of \(connections.shedAbove); retry shortly",
                           headers: [.retryAfter: "1", .connection: "close"])
        }
        return try await next(request, context)
    }
}
