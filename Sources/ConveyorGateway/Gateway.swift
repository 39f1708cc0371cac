import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import Hummingbird
import HTTPTypes
import HummingbirdCore
import HummingbirdWebSocket
import Foundation
import Logging
import NIOCore
import ServiceLifecycle

/// The HTTP gateway: the REST API web apps call, turned into broker requests
/// (proto/openapi.yaml documents every route), plus live task streams (SSE and
/// WebSocket), Prometheus metrics and the dashboard.
///
/// Why a class over a `BrokerTransport`: the routes hold no state of their own
/// — every answer comes fresh from the broker — so the same routes run against
/// the real `AsyncBrokerClient` in production and a scripted fake in router tests.
public final class Gateway: Sendable {
    public let config: GatewayConfig
    public let transport: any BrokerTransport
    public let metrics: GatewayMetrics
    public let monitor: EventMonitor
    public let tokens: APITokens
    /// Open connections and the limits on them.
    public let connections: ConnectionGuard
    /// The `Host` names answered while authentication is off.
    public let hosts: HostAllowlist
    let dashboard: ByteBuffer
    let statsCoalescer: StatsCoalescer

    public init(config: GatewayConfig, transport: any BrokerTransport, metrics: GatewayMetrics = GatewayMetrics()) {
        self.config = config
        self.transport = transport
        self.metrics = metrics
        self.monitor = EventMonitor(transport: transport, metrics: metrics)
        self.tokens = config.tokens ?? APITokens(config.apiTokens)
        self.connections = ConnectionGuard(descriptorLimit: FileDescriptorLimit.current()?.soft ?? 1024,
                                           maxConnections: config.maxConnections,
                                           firstRequestTimeoutSeconds: min(config.idleTimeoutSeconds, config.requestHeadTimeoutSeconds))
        self.hosts = HostAllowlist(listenHost: config.host, port: config.port, extra: config.allowedHosts)
        self.dashboard = ByteBuffer(bytes: DashboardPage.load())
        let timeout = config.brokerTimeoutMs
        self.statsCoalescer = StatsCoalescer {
            let reply = try await Gateway.call(transport, timeoutMs: timeout) { .stats(requestID: $0) }
            guard case .stats(_, let json) = reply else { throw APIError.unexpected(reply) }
            return json
        }
    }

    // MARK: Application

    /// The HTTP server with WebSocket upgrade on `/ws/{task_id}`, and the event
    /// monitor as a service beside it. `onListening(host, port)` runs once the
    /// socket is bound (with the real port when `config.port` is 0).
    ///
    /// Every connection is bounded: header size and count (NIO's decoder limits,
    /// a violation is a 400 and a close), idle time (`idleTimeoutSeconds`, also for
    /// a first request that does not arrive), and their number (`ConnectionGuard`).
    public func makeApplication(logger: Logger, onListening: @escaping @Sendable (String, Int) -> Void) -> some ApplicationProtocol {
        let host = config.host
        let port = config.port
        let hosts = self.hosts
        var app = Application(
            router: makeRouter(),
            server: makeServerBuilder(),
            configuration: .init(address: .hostname(host, port: port), serverName: "conveyor-gateway",
                                 availableConnectionsDelegate: MaximumAvailableConnections(connections.acceptCap, logger: logger)),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                hosts.setPort(bound)
                onListening(host, bound)
            },
            logger: logger
        )
        app.addServices(monitor)
        return app
    }

    /// HTTP/1.1 with the WebSocket upgrade on `/ws/{task_id}`, each connection
    /// wrapped in the gateway's `GuardedChildChannel`.
    func makeServerBuilder() -> HTTPServerBuilder {
        let wsResponder = makeWebSocketRouter().buildResponder()
        let decoder = HTTP1Channel.Configuration.DecoderConfiguration(
            maxHeaderFieldSize: config.maxHeaderBytes, maxHeaderListSize: config.maxHeaderBytes, maxHeaderFieldCount: config.maxHeaderCount)
        let http1 = HTTP1Channel.Configuration(idleTimeout: .nanoseconds(Int64(config.idleTimeoutSeconds * 1e9)),
                                               httpDecoderConfiguration: decoder)
        let connections = self.connections
        let metrics = self.metrics
        return HTTPServerBuilder { responder in
            GuardedChildChannel(
                inner: HTTP1WebSocketUpgradeChannel(responder: responder, webSocketResponder: wsResponder,
                                                    configuration: .init(http1: http1, ws: .init())),
                connections: connections,
                onMalformed: { metrics.rejectedConnection() })
        }
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully: open streams
    /// get `shutdownGraceSeconds` to end before they are cancelled.
    public func run(logger: Logger, shutdownGraceSeconds: Int = 5, onListening: @escaping @Sendable (String, Int) -> Void) async throws {
        let app = makeApplication(logger: logger, onListening: onListening)
        var c = ServiceGroupConfiguration(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        c.maximumGracefulShutdownDuration = .seconds(shutdownGraceSeconds)
        c.maximumCancellationDuration = .seconds(2)
        try await ServiceGroup(configuration: c).run()
    }

    /// Every HTTP route. `GET /ws/{task_id}` is here too, for plain HTTP requests
    /// to it: they get the error they would have had, or 426.
    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: HTTPMetricsMiddleware(metrics: metrics))
        router.add(middleware: LoadSheddingMiddleware(connections: connections, metrics: metrics))
        router.add(middleware: HostGuardMiddleware(hosts: hosts, enabled: !tokens.isEnabled))
        router.add(middleware: StrictPathMiddleware())

        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-cache"],
                     body: .init(byteBuffer: self.dashboard))
        }
        router.get("/healthz") { _, _ in try await self.healthz() }
        router.get("/metrics") { _, _ in await self.metricsPage() }
        router.get("/api/queue/stats") { req, _ in
            if self.config.privateStats { _ = try self.authorize(req, .read) }
            return try await self.queueStats()
        }
        router.get("/api/queue/tasks") { req, _ in
            let access = try self.authorize(req, .read)
            return try await self.queueTasks(limit: try Self.limit(req), access: access)
        }
        router.get("/api/dashboard") { req, _ in
            _ = try self.authorize(req, .admin)
            return Self.json(self.monitor.dashboardJSON())
        }

        // Submissions.
        router.post("/api/tasks") { req, _ in
            let access = try self.authorize(req, .submit)
            // JSON only: a cross-site HTML form can send text/plain or a form
            // encoding without a preflight, but not application/json.
            try self.counting { try Self.requireJSON(req, route: "POST /api/tasks") }
            let body = try await self.readBody(req)
            return try await self.submit(try self.counting { try SubmissionParser.generic(body: body, idempotencyHeader: Self.idempotencyHeader(req)) },
                                         access: access, created: .created)
        }
        router.post("/summarize") { req, _ in
            let access = try self.authorize(req, .submit)
            let p = try self.counting { try SubmissionParser.priority(query: req.uri.queryParameters.get("priority")) }
            let body = try await self.readBody(req)
            return try await self.submit(try self.counting {
                try SubmissionParser.summarize(body: body, priority: p, idempotencyHeader: Self.idempotencyHeader(req))
            }, access: access)
        }
        for (path, type) in [("/analyze-pdf", SubmissionParser.pdfType), ("/analyze-document", SubmissionParser.documentType)] {
            router.post(RouterPath(path)) { req, _ in
                let access = try self.authorize(req, .submit)
                let p = try self.counting { try SubmissionParser.priority(query: req.uri.queryParameters.get("priority")) }
                let body = try await self.readBody(req)
                return try await self.submit(try self.counting {
                    try SubmissionParser.document(type: type, body: body, contentType: req.headers[.contentType], priority: p,
                                                  idempotencyHeader: Self.idempotencyHeader(req))
                }, access: access)
            }
        }

        // One task.
        router.get("/api/tasks/{id}/status") { req, ctx in
            let access = try self.authorize(req, .read)
            return Self.json(try await self.fetchStatus(try Self.taskID(ctx), access: access))
        }
        router.delete("/api/tasks/{id}") { req, ctx in
            // Your own task with `submit`; anyone's with `admin`.
            let access = try self.authorize(req, .submit)
            let id = try Self.taskID(ctx)
            if !access.isAdmin { _ = try await self.fetchStatus(id, access: access) }
            return try await self.cancel(id)
        }
        router.get("/api/tasks/{id}/stream") { req, ctx in
            let access = try self.authorize(req, .read, allowQueryToken: true)
            let id = try Self.taskID(ctx)
            if !access.isAdmin { _ = try await self.fetchStatus(id, access: access) }
            return try await self.sse(id)
        }
        // Only reached without a WebSocket handshake (upgrades go to the WebSocket router).
        router.get("/ws/{id}") { req, ctx -> Response in
            let access = try self.authorize(req, .read, allowQueryToken: true)
            let id = try Self.taskID(ctx)
            _ = try await self.fetchStatus(id, access: access)
            throw APIError(.upgradeRequired, "upgrade_required", "open this URL as a WebSocket (ws://…/ws/\(id))",
                           headers: [.upgrade: "websocket", .connection: "Upgrade"])
        }

        // Dead letters.
        router.get("/api/dead") { req, _ in
            _ = try self.authorize(req, .admin)
            let limit = try Self.limit(req)
            return try await self.dead { .dead(requestID: $0, action: .list(limit: limit)) }
        }
        router.post("/api/dead/{id}/retry") { req, ctx in
            _ = try self.authorize(req, .admin)
            let id = try Self.taskID(ctx)
            return try await self.dead { .dead(requestID: $0, action: .retry(id)) }
        }
        router.delete("/api/dead") { req, _ in
            _ = try self.authorize(req, .admin)
            return try await self.dead { .dead(requestID: $0, action: .purge(nil)) }
        }
        router.delete("/api/dead/{id}") { req, ctx in
            _ = try self.authorize(req, .admin)
            let id = try Self.taskID(ctx)
            return try await self.dead { .dead(requestID: $0, action: .purge(id)) }
        }
        // Queue controls: pause or resume dispatch of a task type.
        for action in [ClientRequest.TypeAction.pause, .resume] {
            router.post(RouterPath("/api/types/{type}/\(action.rawValue)")) { req, ctx in
                _ = try self.authorize(req, .admin)
                let type = try Self.taskType(ctx)
                let reply = try await self.brokerCall { .type(requestID: $0, action: action, type: type) }
                guard case .type(_, let json) = reply else { throw APIError.unexpected(reply) }
                return Self.json(json)
            }
        }
        // Last: it wraps only the router's not-found answer.
        router.add(middleware: MethodNotAllowedMiddleware(routes: router.routes.map { ($0.path.description, $0.method) }))
        return router
    }

    /// The WebSocket side of `/ws/{task_id}`: the same messages as the SSE stream,
    /// one JSON text message each, then a normal close.
    ///
    /// Every handshake on this path is accepted: hummingbird-websocket can
    /// refuse one only with an empty 400 (its `.dontUpgrade`), which would hide
    /// why, and browsers do not show handshake statuses at all. A bad token,
    /// a missing scope, a bad id or a task the caller may not see is reported
    /// as one `error` message with the API's `error_type`, then the connection
    /// is closed — with 1008 (policy violation) for 401 and 403.
    public func makeWebSocketRouter() -> Router<BasicWebSocketRequestContext> {
        let router = Router(context: BasicWebSocketRequestContext.self)
        router.ws("/ws/{id}") { _, _ in
            .upgrade([:])
        } onUpgrade: { inbound, outbound, ctx in
            func fail(_ e: APIError) async throws {
                try await outbound.write(.text(String(decoding: StreamMessage(event: "error", json: e.json).json, as: UTF8.self)))
                try await outbound.close(e.status == .unauthorized || e.status == .forbidden ? .policyViolation : .normalClosure, reason: e.type)
            }
            let stream: TaskStream
            do {
                if !self.tokens.isEnabled, !self.hosts.allows(ctx.request.head.authority) {
                    throw APIError.hostNotAllowed(ctx.request.head.authority)
                }
                let access = try self.authorize(ctx.request, .read, allowQueryToken: true)
                let id = try Self.taskID(ctx.requestContext)
                if !access.isAdmin { _ = try await self.fetchStatus(id, access: access) }
                stream = try await TaskStream.open(id, gateway: self)
            } catch let e as APIError {
                return try await fail(e)
            }
            // Read (and ignore) what the client sends: when its side ends it has gone,
            // and the stream stops instead of polling for a task nobody watches. After
            // the outcome, close and let the client's close reply end the reading.
            try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    for try await _ in inbound {}
                    return false
                }
                group.addTask {
                    try await stream.run { msg in
                        try await outbound.write(.text(String(decoding: msg.json, as: UTF8.self)))
                    }
                    return true
                }
                if try await group.next() == true {
                    try await outbound.close(.normalClosure, reason: nil)
                    _ = try await group.next()
                } else {
                    group.cancelAll()
                }
            }
        }
        return router
    }

    // MARK: Handlers

    func healthz() async throws -> Response {
        do {
            // STATS rather than PING: as cheap for the broker, and it says whether its journal can commit.
            let reply = try await transport.call(timeoutMs: min(1000, config.brokerTimeoutMs)) { .stats(requestID: $0) }
            guard case .stats(_, let json) = reply else { throw APIError.unexpected(reply) }
            let stats = try? JSONValue.parse(json)
            let degraded = stats?["storage_degraded"]?.boolValue ?? false
            var w = JSONWriter()
            // Still 200 when degraded: the broker answers and serves reads; restarting the gateway would not help.
            w.field("status", degraded ? "degraded" : "ok")
            w.field("broker", transport.brokerEndpoint)
            w.field("storage_degraded", degraded)
            w.field("storage_error", degraded ? stats?["storage_error"]?.stringValue : nil)
            return Self.json(w.finish())
        } catch is CancellationError {
            throw CancellationError()
        } catch let e as APIError {
            throw e
        } catch {
            throw APIError.brokerUnavailable(error, endpoint: transport.brokerEndpoint)
        }
    }

    func metricsPage() async -> Response {
        if let reply = try? await transport.call(timeoutMs: min(1000, config.brokerTimeoutMs), { .stats(requestID: $0) }),
           case .stats(_, let json) = reply, let v = try? JSONValue.parse(json) {
            metrics.update(stats: v)
            metrics.setBrokerUp(true)
        } else {
            metrics.setBrokerUp(false)
        }
        metrics.setConnectionsOpen(connections.open)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(bytes: metrics.render())))
    }

    func queueStats() async throws -> Response {
        Self.json(try await statsCoalescer.stats())
    }

    func queueTasks(limit: Int, access: Access = .open) async throws -> Response {
        // A `read` token lists its own tasks only: ask for the most, keep its own.
        let reply = try await brokerCall { .tasks(requestID: $0, limit: access.isAdmin ? limit : ClientRequest.maxTasksLimit) }
        guard case .tasks(_, let json) = reply else { throw APIError.unexpected(reply) }
        guard !access.isAdmin, case .object(var members)? = try? JSONValue.parse(json) else { return Self.json(json) }
        for i in members.indices where members[i].key == "running" || members[i].key == "queued" {
            let own = (members[i].value.arrayValue ?? []).filter { $0["owner"]?.stringValue == access.owner }
            members[i].value = .array(Array(own.prefix(limit)))
        }
        return Self.json(JSONValue.object(members).serialized)
    }

    /// The status object of a task; 404 when the broker does not know it, or
    /// when the caller may not see it (a `read` token sees its own tasks only,
    /// and is not told whether someone else's exists).
    public func fetchStatus(_ id: TaskID, access: Access = .open) async throws -> [UInt8] {
        let reply = try await brokerCall { .status(requestID: $0, id: id) }
        guard case .status(_, let json) = reply else { throw APIError.unexpected(reply) }
        if !access.isAdmin, (try? JSONValue.parse(json))?["owner"]?.stringValue != access.owner {
            throw APIError.fromBroker(code: ErrorCode.notFound.rawValue, message: "no task \(id)")
        }
        return json
    }

    /// - Parameter created: the status for a new task: 201 on `/api/tasks`; the
    ///   seed-compatible routes answer 200, as the apps they serve expect. A
    ///   duplicate (idempotency key) is 200 on every route.
    func submit(_ spec: TaskSpec, access: Access = .open, created: HTTPResponse.Status = .ok) async throws -> Response {
        var spec = spec
        // The broker records whose task it is; read tokens then see only their own.
        if let owner = access.owner { spec.owner = owner }
        // Progress reaches HTTP callers over the event stream, not as pushes to
        // this connection; `notify` also asks for the 1.1 ACCEPTED (duplicate, state).
        spec.notify = Notify.none
        try counting { try checkFitsBroker(spec) }
        let reply: ClientReply
        do {
            reply = try await brokerCall { .submit(requestID: $0, spec: spec) }
        } catch let e as APIError {
            metrics.rejected(e.type)
            throw e
        }
        switch reply {
        case .accepted(_, let id, let position, let info):
            // A 1.0 broker sends no `info`: new, and queued unless delayed.
            let info = info ?? Acceptance(duplicate: false, state: (spec.delayMs ?? 0) > 0 || spec.runAt != nil ? .delayed : .queued)
            if !info.duplicate { metrics.submitted(spec.priority) }
            return Self.json(Self.acceptedJSON(id: id, position: position, spec: spec, info: info), status: info.duplicate ? .ok : created)
        case .rejected(_, let code, let message):
            metrics.rejected(code)
            throw APIError.fromBroker(code: code, message: message)
        default:
            throw APIError.unexpected(reply)
        }
    }

    static func acceptedJSON(id: TaskID, position: Int, spec: TaskSpec, info: Acceptance) -> [UInt8] {
        var w = JSONWriter()
        w.field("task_id", id.description)
        w.field("status", info.duplicate ? "duplicate" : "created")
        w.field("priority", spec.priority.name)
        if info.state == .queued { w.field("queue_position", position) } else { w.fieldNull("queue_position") }
        w.field("state", info.state.rawValue)
        w.field("type", spec.type)
        let message: String
        if info.duplicate {
            message = "A task with this idempotency key exists already; it is \(info.state.rawValue.replacingOccurrences(of: "_", with: " "))."
        } else if info.state == .delayed {
            message = "Task scheduled with \(spec.priority.name) priority" + (spec.delayMs.map { "; it will be queued in \(Double($0) / 1000) s." } ?? ".")
        } else {
            let ahead = position == 0 ? "it is next in line" : position == 1 ? "1 task ahead of it" : "\(position) tasks ahead of it"
            message = "Task queued with \(spec.priority.name) priority; \(ahead)."
        }
        w.field("message", message)
        return w.finish()
    }

    func cancel(_ id: TaskID) async throws -> Response {
        let reply = try await brokerCall { .cancel(requestID: $0, id: id) }
        guard case .cancelled(_, let cid, let previous) = reply else { throw APIError.unexpected(reply) }
        var w = JSONWriter()
        w.field("task_id", cid.description)
        w.field("status", "cancelled")
        w.field("previous_state", previous)
        w.field("message", "Task cancelled (it was \(previous)).")
        return Self.json(w.finish())
    }

    func dead(_ make: ([UInt8]) -> ClientRequest) async throws -> Response {
        let reply = try await brokerCall(make)
        guard case .dead(_, let json) = reply else { throw APIError.unexpected(reply) }
        return Self.json(json)
    }

    func sse(_ id: TaskID) async throws -> Response {
        let stream = try await TaskStream.open(id, gateway: self)
        let body = ResponseBody { writer in
            try await stream.run(send: { msg in
                try await writer.write(ByteBuffer(bytes: msg.sse))
            }, idle: {
                try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
            })
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache",
                                               HTTPField.Name("X-Accel-Buffering")!: "no"], body: body)
    }

    // MARK: Helpers

    /// A broker request with the configured timeout; transport failures become 503,
    /// ERROR replies become their HTTP equivalents.
    func brokerCall(_ make: ([UInt8]) -> ClientRequest) async throws -> ClientReply {
        try await Self.call(transport, timeoutMs: config.brokerTimeoutMs, make)
    }

    static func call(_ transport: any BrokerTransport, timeoutMs: Int, _ make: ([UInt8]) -> ClientRequest) async throws -> ClientReply {
        let reply: ClientReply
        do {
            reply = try await transport.call(timeoutMs: timeoutMs, make)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw APIError.brokerUnavailable(error, endpoint: transport.brokerEndpoint)
        }
        if case .error(_, let code, let message) = reply { throw APIError.fromBroker(code: code, message: message) }
        return reply
    }

    /// Runs a validation step, counting its failure as a rejected submission.
    func counting<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as APIError {
            metrics.rejected(e.type)
            throw e
        }
    }

    /// Who is asking, by token. `open`: authentication is off, everything is allowed.
    public struct Access: Sendable {
        public let token: APIToken?
        public static let open = Access(token: nil)
        public var isAdmin: Bool { token?.allows(.admin) ?? true }
        public var owner: String? { token?.owner }
    }

    /// 401 unless the request carries an accepted token (or authentication is
    /// off); 403 when the token lacks `scope`.
    func authorize(_ request: Request, _ scope: Scope, allowQueryToken: Bool = false) throws(APIError) -> Access {
        guard tokens.isEnabled else { return .open }
        var token = APITokens.bearer(request.headers[.authorization]).flatMap { tokens.identify($0) }
        if token == nil, allowQueryToken, let t = request.uri.queryParameters.get("token") { token = tokens.identify(t) }
        guard let token else { throw APIError.unauthorized() }
        guard token.allows(scope) else { throw APIError.forbidden(scope: scope) }
        return Access(token: token)
    }

    /// The whole body, or 413 beyond `maxPayloadBytes` (checked on Content-Length first).
    func readBody(_ request: Request) async throws -> [UInt8] {
        let limit = config.maxPayloadBytes
        if let len = request.headers[.contentLength].flatMap({ Int($0) }), len > limit {
            throw APIError.payloadTooLarge(limit: limit)
        }
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return Array(buffer.readableBytesView)
        } catch let e as HTTPError where e.status == .contentTooLarge {
            throw APIError.payloadTooLarge(limit: limit)
        }
    }

    /// 413 unless the task's payload, as it will be sent (an upload base64-encoded),
    /// is within the broker's payload limit and the whole SUBMIT message within
    /// its message limit — a larger message would not be refused but would drop
    /// the gateway's broker connection, shared by every caller.
    func checkFitsBroker(_ spec: TaskSpec) throws(APIError) {
        let limit = config.maxPayloadBytes
        if spec.payload.count > limit {
            throw APIError.payloadTooLarge(limit: limit, message:
                "the task payload would be \(spec.payload.count) bytes (an uploaded file grows by a third in base64); "
                    + "the broker's limit is \(limit) bytes")
        }
        let frames = ClientRequest.submit(requestID: [UInt8](repeating: 0, count: ClientRequest.maxRequestIDBytes), spec: spec).encode()
        let size = frames.reduce(0) { $0 + $1.count }
        let maxMessage = PayloadLimits.maxMessageBytes(maxPayloadBytes: limit)
        if size > maxMessage {
            throw APIError.payloadTooLarge(limit: limit, message: "the submission would be a \(size)-byte message; the broker takes at most \(maxMessage)")
        }
    }

    /// 415 unless the request says its body is JSON (`application/json`, any parameters,
    /// or a `+json` type).
    static func requireJSON(_ request: Request, route: String) throws(APIError) {
        let ct = request.headers[.contentType]
        let type = ct?.split(separator: ";", maxSplits: 1).first?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        guard type == "application/json" || (type.hasPrefix("application/") && type.hasSuffix("+json")) else {
            throw APIError.unsupportedMediaType(ct, route: route)
        }
    }

    static func taskID(_ context: some RequestContext) throws(APIError) -> TaskID {
        guard let text = context.parameters.get("id")?.removingPercentEncoding, let id = TaskID(bytes: Array(text.utf8)) else {
            throw APIError.badRequest("the task id must be 16 hexadecimal digits", field: "id")
        }
        return id
    }

    static func taskType(_ context: some RequestContext) throws(APIError) -> String {
        // Path parameters arrive as sent: `:` is often sent as `%3A`.
        guard let text = context.parameters.get("type")?.removingPercentEncoding, TaskSpec.isValidType(text) else {
            throw APIError.badRequest("the task type must be 1-64 characters of [A-Za-z0-9_.:-]", field: "type")
        }
        return text
    }

    static func limit(_ request: Request) throws(APIError) -> Int {
        guard let text = request.uri.queryParameters.get("limit") else { return 100 }
        guard let n = Int(text), (1...10_000).contains(n) else { throw APIError.badRequest("limit must be an integer in 1...10000", field: "limit") }
        return n
    }

    static func idempotencyHeader(_ request: Request) -> String? {
        HTTPField.Name("Idempotency-Key").flatMap { request.headers[$0] }
    }

    static func json(_ bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
