import Hummingbird

/// 404 for any path with an empty segment (`/api/dead/`, `/api/tasks//status`).
///
/// Why: the router treats a trailing slash as absent, so `DELETE /api/dead/` —
/// a purge of one dead letter whose id was left out — reached `DELETE /api/dead`
/// and purged them all. A path with an empty segment names no resource here.
struct StrictPathMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if path != "/", path.hasSuffix("/") || path.contains("//") || path.isEmpty {
            throw APIError.notFound("no route \(path.prefix(200)): it has an empty path segment (a missing id?)")
        }
        return try await next(request, context)
    }
}
