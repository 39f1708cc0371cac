import Hummingbird
#if canImport(Glibc)
import Glibc
#endif

/// Records every HTTP request in `GatewayMetrics` (count and duration by method,
/// route template and status; requests in flight), and turns errors that are
/// not already `APIError`s (unknown route, wrong method) into the API's JSON
/// error shape so that every answer of the gateway is JSON.
struct HTTPMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: GatewayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = monotonicSeconds()
        metrics.httpStarted()
        let method = request.method.rawValue
        do {
            var response = try await next(request, context)
            let route = context.endpointPath ?? "unmatched"
            let status = response.status.code
            let metrics = self.metrics
            let body = response.body
            response.body = ResponseBody(contentLength: body.contentLength) { writer in
                defer { metrics.httpFinished(method: method, route: route, status: status, seconds: monotonicSeconds() - start) }
                try await body.write(writer)
            }
            return response
        } catch let e as APIError {
            metrics.httpFinished(method: method, route: context.endpointPath ?? "unmatched", status: e.status.code, seconds: monotonicSeconds() - start)
            throw e
        } catch let e as HTTPError {
            metrics.httpFinished(method: method, route: context.endpointPath ?? "unmatched", status: e.status.code, seconds: monotonicSeconds() - start)
            let type = e.status == .notFound ? "not_found" : e.status == .contentTooLarge ? "payload_too_large" : "http_\(e.status.code)"
            throw APIError(e.status, type, e.body ?? e.status.reasonPhrase, headers: e.headers)
        } catch {
            metrics.httpFinished(method: method, route: context.endpointPath ?? "unmatched", status: 500, seconds: monotonicSeconds() - start)
            throw error
        }
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
