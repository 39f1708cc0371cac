import Hummingbird

/// 405 with `Allow` for a path the router serves, but not with this method.
///
/// Why: Hummingbird's router answers a method it has no route for with 404, as if
/// the path did not exist (RFC 9110 §15.5.6 wants 405 and the methods that do
/// work). Added last, this middleware wraps only the router's not-found answer,
/// and matches the path against the templates of every route registered before it.
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    struct Route: Sendable {
        /// Path segments; nil for a `{parameter}` segment (matches any one segment).
        let segments: [String?]
        var methods: Set<HTTPRequest.Method>
    }

    let routes: [Route]

    init(routes: [(path: String, method: HTTPRequest.Method)]) {
        var byPath: [String: Route] = [:]
        for r in routes {
            let segments: [String?] = r.path.split(separator: "/").map { $0.hasPrefix("{") || $0.hasPrefix(":") ? nil : String($0) }
            byPath[r.path, default: Route(segments: segments, methods: [])].methods.insert(r.method)
        }
        self.routes = Array(byPath.values)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound {
            let allowed = allowedMethods(request.uri.path)
            guard !allowed.isEmpty, !allowed.contains(request.method) else { throw e }
            let allow = allowed.map(\.rawValue).sorted().joined(separator: ", ")
            throw APIError(.methodNotAllowed, "method_not_allowed", "\(request.method.rawValue.prefix(20)) is not served here; use \(allow)",
                           headers: [.allow: allow])
        }
    }

    func allowedMethods(_ path: String) -> Set<HTTPRequest.Method> {
        let parts = path.split(separator: "/")
        var out: Set<HTTPRequest.Method> = []
        for r in routes where r.segments.count == parts.count {
            if zip(r.segments, parts).allSatisfy({ seg, part in seg.map { $0 == part } ?? true }) { out.formUnion(r.methods) }
        }
        return out
    }
}
