import Hummingbird

/// 403 `host_not_allowed` for a request whose `Host` the `HostAllowlist` refuses,
/// while authentication is off (see `HostAllowlist` for why).
struct HostGuardMiddleware<Context: RequestContext>: RouterMiddleware {
    let hosts: HostAllowlist
    let enabled: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if enabled, !hosts.allows(request.head.authority) {
            throw APIError.hostNotAllowed(request.head.authority)
        }
        return try await next(request, context)
    }
}
