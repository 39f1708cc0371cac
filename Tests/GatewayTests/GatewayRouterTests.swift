import ConveyorClient
import ConveyorCore
import ConveyorGateway
import ConveyorProtocol
import Foundation
import Hummingbird
import HTTPTypes
import HummingbirdTesting
import XCTest

/// Every route and every error of the REST API, against `FakeBroker`.
final class GatewayRouterTests: XCTestCase {
    static let token = "s3cret-token"
    static let auth: HTTPFields = [.authorization: "Bearer \(token)"]
    /// For bodies: `POST /api/tasks` takes JSON only (415 otherwise).
    static let jsonAuth: HTTPFields = [.authorization: "Bearer \(token)", .contentType: "application/json"]

    func withGateway(tokens: [String] = [token], maxPayload: Int = 1 << 20,
                     _ body: @Sendable (FakeBroker, any TestClientProtocol) async throws -> Void) async throws {
        let fake = FakeBroker()
        var config = GatewayConfig()
        config.apiTokens = tokens
        config.maxPayloadBytes = maxPayload
        config.streamPollMs = 50
        config.streamMaxFailures = 2
        let gateway = Gateway(config: config, transport: fake)
        let app = Application(router: gateway.makeRouter())
        try await app.test(.router) { client in try await body(fake, client) }
    }

    // MARK: Legacy submission routes

    func testSummarizeCreatesYoutubeTaskWithBodyAsPayload() async throws {
        try await withGateway { fake, client in
            let body = #"{"url": "https://www.youtube.com/watch?v=abc"}"#
            let r = try await client.execute(uri: "/summarize?priority=high", method: .post, headers: Self.auth, body: ByteBuffer(string: body))
            XCTAssertEqual(r.status, .ok, String(buffer: r.body))
            let o = jsonObject(r)
            XCTAssertEqual(o["status"] as? String, "created")
            XCTAssertEqual(o["priority"] as? String, "HIGH")
            XCTAssertEqual(o["queue_position"] as? Int, 0)
            XCTAssertEqual((o["task_id"] as? String)?.count, 16)
            XCTAssertTrue((o["message"] as? String ?? "").contains("HIGH"), "\(o)")
            let spec = try XCTUnwrap(fake.submitted.first)
            XCTAssertEqual(spec.type, "youtube")
            XCTAssertEqual(spec.priority, .high)
            XCTAssertEqual(spec.payload, Array(body.utf8))
        }
    }

    func testSuccessMessageSaysHowManyTasksAreAhead() async throws {
        try await withGateway { fake, client in
            for _ in 0..<5 { fake.add(priority: .normal) }
            let r = try await client.execute(uri: "/summarize", method: .post, headers: Self.auth,
                                             body: ByteBuffer(string: #"{"url":"http://example.com/v"}"#))
            let o = jsonObject(r)
            XCTAssertEqual(o["priority"] as? String, "NORMAL")
            XCTAssertEqual(o["queue_position"] as? Int, 5)
            XCTAssertTrue((o["message"] as? String ?? "").contains("5 tasks ahead"), "\(o)")
        }
    }

    func testSummarizeRejectsMissingOrNonHTTPURLAndBadJSON() async throws {
        try await withGateway { fake, client in
            for body in [#"{}"#, #"{"url": 5}"#, #"{"url": "ftp://x/y"}"#, #"{"url": "not a url"}"#, #"{"url": "https://"}"#] {
                let r = try await client.execute(uri: "/summarize", method: .post, headers: Self.auth, body: ByteBuffer(string: body))
                assertAPIError(r, .badRequest, "bad_request", field: "url")
            }
            for body in ["{", "[1]", "", #"{"url":"https://x"} trailing"#] {
                let r = try await client.execute(uri: "/summarize", method: .post, headers: Self.auth, body: ByteBuffer(string: body))
                assertAPIError(r, .badRequest, "bad_request", field: "body")
            }
            XCTAssertTrue(fake.submitted.isEmpty, "nothing malformed may reach the broker")
        }
    }

    func testPriorityQueryParameterForms() async throws {
        try await withGateway { fake, client in
            let cases: [(String, Priority)] = [("0", .low), ("1", .normal), ("2", .high), ("3", .urgent),
                                               ("low", .low), ("Normal", .normal), ("HIGH", .high), ("urgent", .urgent)]
            for (q, p) in cases {
                let r = try await client.execute(uri: "/summarize?priority=\(q)", method: .post, headers: Self.auth,
                                                 body: ByteBuffer(string: #"{"url":"https://e.com"}"#))
                XCTAssertEqual(r.status, .ok)
                XCTAssertEqual(jsonObject(r)["priority"] as? String, p.name)
            }
            XCTAssertEqual(fake.submitted.map(\.priority), cases.map(\.1))
            for bad in ["4", "-1", "02", "", "highest", "1.0"] {
                let r = try await client.execute(uri: "/summarize?priority=\(bad)", method: .post, headers: Self.auth,
                                                 body: ByteBuffer(string: #"{"url":"https://e.com"}"#))
                assertAPIError(r, .badRequest, "bad_request", field: "priority")
            }
            XCTAssertEqual(fake.submitted.count, cases.count)
        }
    }

    func testAnalyzePDFWithJSONURLOrPath() async throws {
        try await withGateway { fake, client in
            let a = #"{"url":"https://example.com/a.pdf","title":"A"}"#
            let b = #"{"path":"/data/b.pdf"}"#
            for body in [a, b] {
                let r = try await client.execute(uri: "/analyze-pdf?priority=urgent", method: .post, headers: Self.auth, body: ByteBuffer(string: body))
                XCTAssertEqual(r.status, .ok, String(buffer: r.body))
                XCTAssertEqual(jsonObject(r)["priority"] as? String, "URGENT")
            }
            XCTAssertEqual(fake.submitted.map(\.type), ["pdf", "pdf"])
            XCTAssertEqual(fake.submitted.map(\.payload), [Array(a.utf8), Array(b.utf8)])
            for (body, field) in [(#"{}"#, "url"), (#"{"url":"file:///x"}"#, "url"), (#"{"path":""}"#, "path"), (#"{"path":"/x","title":3}"#, "title")] {
                let r = try await client.execute(uri: "/analyze-pdf", method: .post, headers: Self.auth, body: ByteBuffer(string: body))
                assertAPIError(r, .badRequest, "bad_request", field: field)
            }
            XCTAssertEqual(fake.submitted.count, 2)
        }
    }

    func testAnalyzePDFMultipartUploadBecomesBase64Payload() async throws {
        try await withGateway { fake, client in
            let file: [UInt8] = Array("%PDF-1.4\n".utf8) + [0, 1, 2, 255, 254] + Array("\r\n--not-the-boundary\r\n".utf8)
            var body: [UInt8] = []
            body += Array("--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nQuarterly report\r\n".utf8)
            body += Array("--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q3.pdf\"\r\nContent-Type: application/pdf\r\n\r\n".utf8)
            body += file
            body += Array("\r\n--XyZ--\r\n".utf8)
            let r = try await client.execute(uri: "/analyze-pdf?priority=2", method: .post,
                                             headers: [.authorization: "Bearer \(Self.token)", .contentType: "multipart/form-data; boundary=XyZ"],
                                             body: ByteBuffer(bytes: body))
            XCTAssertEqual(r.status, .ok, String(buffer: r.body))
            let spec = try XCTUnwrap(fake.submitted.first)
            XCTAssertEqual(spec.type, "pdf")
            XCTAssertEqual(spec.priority, .high)
            let payload = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(spec.payload)) as? [String: Any])
            XCTAssertEqual(payload["filename"] as? String, "q3.pdf")
            XCTAssertEqual(payload["content_type"] as? String, "application/pdf")
            XCTAssertEqual(payload["title"] as? String, "Quarterly report")
            XCTAssertEqual(payload["size"] as? Int, file.count)
            XCTAssertEqual((payload["content_base64"] as? String).flatMap { Data(base64Encoded: $0) }.map(Array.init), file)

            // Without a file part, or a truncated body: 400, nothing submitted.
            let noFile = Array("--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nT\r\n--XyZ--\r\n".utf8)
            let truncated = Array("--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc".utf8)
            for (b, field) in [(noFile, "file"), (truncated, "body")] {
                let bad = try await client.execute(uri: "/analyze-pdf", method: .post,
                                                   headers: [.authorization: "Bearer \(Self.token)", .contentType: "multipart/form-data; boundary=XyZ"],
                                                   body: ByteBuffer(bytes: b))
                assertAPIError(bad, .badRequest, "bad_request", field: field)
            }
            XCTAssertEqual(fake.submitted.count, 1)
        }
    }

    func testAnalyzeDocumentIsADocumentTask() async throws {
        try await withGateway { fake, client in
            let r = try await client.execute(uri: "/analyze-document?priority=low", method: .post, headers: Self.auth,
                                             body: ByteBuffer(string: #"{"url":"https://example.com/a.docx","title":"T"}"#))
            XCTAssertEqual(r.status, .ok)
            XCTAssertEqual(fake.submitted.first?.type, "document")
            XCTAssertEqual(fake.submitted.first?.priority, .low)
        }
    }

    // MARK: Generic submission

    func testGenericSubmitPayloadForms() async throws {
        try await withGateway { fake, client in
            let bodies = [
                #"{"type":"img:v2","payload":"héllo \"w\"","priority":"urgent"}"#,
                #"{"type":"render.page","payload": {"b": [1, 2.50, true], "a" : null} ,"priority":2}"#,
                #"{"type":"t","payload":42}"#,
                #"{"type":"t"}"#,
            ]
            for b in bodies {
                let r = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: b))
                XCTAssertEqual(r.status, .created, String(buffer: r.body))
            }
            let specs = fake.submitted
            XCTAssertEqual(specs.map(\.type), ["img:v2", "render.page", "t", "t"])
            XCTAssertEqual(specs.map(\.priority), [.urgent, .high, .normal, .normal])
            XCTAssertEqual(specs[0].payload, Array("héllo \"w\"".utf8))
            XCTAssertEqual(String(decoding: specs[1].payload, as: UTF8.self), #"{"b": [1, 2.50, true], "a" : null}"#)
            XCTAssertEqual(specs[2].payload, Array("42".utf8))
            XCTAssertEqual(specs[3].payload, [])
        }
    }

    func testGenericSubmitOptionsAndIdempotencyKey() async throws {
        try await withGateway { fake, client in
            var h = Self.jsonAuth
            h[HTTPField.Name("Idempotency-Key")!] = "order-17"
            let r = try await client.execute(uri: "/api/tasks", method: .post, headers: h,
                                             body: ByteBuffer(string: #"{"type":"pdf","payload":"x","timeout_s":1.5,"max_attempts":3,"delay_s":30}"#))
            XCTAssertEqual(r.status, .created, String(buffer: r.body))
            let o = jsonObject(r)
            XCTAssertEqual(o["state"] as? String, "delayed")
            XCTAssertTrue(o["queue_position"] is NSNull)
            let spec = try XCTUnwrap(fake.submitted.first)
            XCTAssertEqual(spec.timeoutMs, 1500)
            XCTAssertEqual(spec.maxAttempts, 3)
            XCTAssertEqual(spec.delayMs, 30_000)
            XCTAssertEqual(spec.idempotencyKey, "order-17")

            let r2 = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth,
                                              body: ByteBuffer(string: #"{"type":"pdf","idempotency_key":"k-1"}"#))
            XCTAssertEqual(r2.status, .created)
            XCTAssertEqual(fake.submitted.last?.idempotencyKey, "k-1")

            let conflict = try await client.execute(uri: "/api/tasks", method: .post, headers: h,
                                                    body: ByteBuffer(string: #"{"type":"pdf","idempotency_key":"other"}"#))
            assertAPIError(conflict, .badRequest, "bad_request", field: "idempotency_key")
            XCTAssertEqual(fake.submitted.count, 2)
        }
    }

    /// Issue 9: a resubmission is 200 with the existing task's real state, not
    /// "created, queued, next in line"; the seed routes keep 200 for new tasks.
    func testDuplicateSubmissionIs200WithTheRealState() async throws {
        try await withGateway { fake, client in
            let body = ByteBuffer(string: #"{"type":"pdf","idempotency_key":"same"}"#)
            let first = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: body)
            XCTAssertEqual(first.status, .created)
            XCTAssertEqual(jsonObject(first)["status"] as? String, "created")
            let id = try XCTUnwrap(jsonObject(first)["task_id"] as? String)
            fake.setState(try XCTUnwrap(TaskID(id)), "running")
            let again = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: body)
            XCTAssertEqual(again.status, .ok, String(buffer: again.body))
            let o = jsonObject(again)
            XCTAssertEqual(o["status"] as? String, "duplicate")
            XCTAssertEqual(o["task_id"] as? String, id)
            XCTAssertEqual(o["state"] as? String, "running")
            XCTAssertTrue(o["queue_position"] is NSNull)
            XCTAssertEqual(fake.submitted.last?.notify, Notify.none, "the gateway wants no pushes, and the 1.1 ACCEPTED")

            var h = Self.auth
            h[HTTPField.Name("Idempotency-Key")!] = "seed-1"
            let seedNew = try await client.execute(uri: "/summarize?priority=2", method: .post, headers: h,
                                                   body: ByteBuffer(string: #"{"url":"https://example.com/v"}"#))
            XCTAssertEqual(seedNew.status, .ok, String(buffer: seedNew.body))
            XCTAssertEqual(jsonObject(seedNew)["status"] as? String, "created")
            let seedAgain = try await client.execute(uri: "/summarize?priority=2", method: .post, headers: h,
                                                     body: ByteBuffer(string: #"{"url":"https://example.com/v"}"#))
            XCTAssertEqual(seedAgain.status, .ok)
            XCTAssertEqual(jsonObject(seedAgain)["status"] as? String, "duplicate")
            XCTAssertEqual(jsonObject(seedAgain)["state"] as? String, "queued")
        }
    }

    func testGenericSubmitValidationNamesTheField() async throws {
        try await withGateway { fake, client in
            let cases: [(String, String)] = [
                (#"{"payload":"x"}"#, "type"),
                (#"{"type":5}"#, "type"),
                (#"{"type":"has space"}"#, "type"),
                (#"{"type":""}"#, "type"),
                (#"{"type":"t","priority":7}"#, "priority"),
                (#"{"type":"t","priority":"max"}"#, "priority"),
                (#"{"type":"t","priority":true}"#, "priority"),
                (#"{"type":"t","timeout_s":0}"#, "timeout_s"),
                (#"{"type":"t","timeout_s":"10"}"#, "timeout_s"),
                (#"{"type":"t","max_attempts":0}"#, "max_attempts"),
                (#"{"type":"t","max_attempts":2.5}"#, "max_attempts"),
                (#"{"type":"t","delay_s":-1}"#, "delay_s"),
                (#"{"type":"t","idempotency_key":""}"#, "idempotency_key"),
                ("[]", "body"),
                (#"{"type":"t","payload":}"#, "payload"),
                (String(repeating: "[", count: 500) + String(repeating: "]", count: 500), "body"),
            ]
            for (body, field) in cases {
                let r = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: body))
                assertAPIError(r, .badRequest, "bad_request", field: field)
            }
            XCTAssertTrue(fake.submitted.isEmpty)
        }
    }

    func testUnknownTypeFromBrokerIs400() async throws {
        try await withGateway { _, client in
            let r = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: #"{"type":"forbidden"}"#))
            assertAPIError(r, .badRequest, "unknown_type", field: "type")
        }
    }

    func testQueueFullIs503WithRetryAfter() async throws {
        try await withGateway { fake, client in
            fake.setMaxQueue(1)
            let ok = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: #"{"type":"t"}"#))
            XCTAssertEqual(ok.status, .created)
            for uri in ["/api/tasks", "/summarize"] {
                let body = uri == "/summarize" ? #"{"url":"https://e.com"}"# : #"{"type":"t"}"#
                let r = try await client.execute(uri: uri, method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: body))
                assertAPIError(r, .serviceUnavailable, "queue_full")
                XCTAssertNotNil(r.headers[.retryAfter])
            }
        }
    }

    func testBrokerDownIs503AndHealthzFails() async throws {
        try await withGateway { fake, client in
            fake.setDown(true)
            let r = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: #"{"type":"t"}"#))
            assertAPIError(r, .serviceUnavailable, "broker_unavailable")
            XCTAssertTrue((jsonObject(r)["message"] as? String ?? "").contains("not reachable"))
            XCTAssertNotNil(r.headers[.retryAfter])
            assertAPIError(try await client.execute(uri: "/healthz", method: .get), .serviceUnavailable, "broker_unavailable")
            assertAPIError(try await client.execute(uri: "/api/queue/stats", method: .get), .serviceUnavailable, "broker_unavailable")
            fake.setDown(false)
            let h = try await client.execute(uri: "/healthz", method: .get)
            XCTAssertEqual(h.status, .ok)
            XCTAssertEqual(jsonObject(h)["status"] as? String, "ok")
        }
    }

    func testBodyOverLimitIs413() async throws {
        try await withGateway(maxPayload: 1000) { fake, client in
            let big = #"{"type":"t","payload":""# + String(repeating: "x", count: 2000) + #""}"#
            for uri in ["/api/tasks", "/summarize", "/analyze-pdf", "/analyze-document"] {
                let r = try await client.execute(uri: uri, method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: big))
                assertAPIError(r, .contentTooLarge, "payload_too_large")
            }
            let fits = #"{"type":"t","payload":""# + String(repeating: "x", count: 900) + #""}"#
            let ok = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: fits))
            XCTAssertEqual(ok.status, .created)
            XCTAssertEqual(fake.submitted.count, 1)
        }
    }

    // MARK: Auth

    func testProtectedRoutesNeedAToken() async throws {
        try await withGateway { fake, client in
            let id = fake.add()
            let routes: [(HTTPRequest.Method, String)] = [
                (.post, "/api/tasks"), (.post, "/summarize"), (.post, "/analyze-pdf"), (.post, "/analyze-document"),
                (.get, "/api/queue/tasks"), (.get, "/api/tasks/\(id)/status"), (.delete, "/api/tasks/\(id)"),
                (.get, "/api/tasks/\(id)/stream"), (.get, "/ws/\(id)"), (.get, "/api/dead"), (.post, "/api/dead/\(id)/retry"),
                (.delete, "/api/dead"), (.delete, "/api/dead/\(id)"), (.get, "/api/dashboard"),
            ]
            let wrong: [HTTPFields] = [[:], [.authorization: "Bearer nope"], [.authorization: "Bearer \(Self.token)x"],
                                       [.authorization: "Basic \(Self.token)"], [.authorization: "Bearer"]]
            for (method, uri) in routes {
                for h in wrong {
                    let r = try await client.execute(uri: uri, method: method, headers: h, body: ByteBuffer(string: #"{"type":"t"}"#))
                    assertAPIError(r, .unauthorized, "unauthorized")
                    XCTAssertNotNil(r.headers[.wwwAuthenticate])
                }
            }
            // The query token is only for the streams (EventSource cannot set headers).
            let q = try await client.execute(uri: "/api/tasks/\(id)/status?token=\(Self.token)", method: .get)
            assertAPIError(q, .unauthorized, "unauthorized")
            XCTAssertTrue(fake.requests.isEmpty, "unauthenticated requests must not reach the broker: \(fake.requests)")

            // Public routes.
            for uri in ["/api/queue/stats", "/healthz", "/metrics", "/"] {
                let r = try await client.execute(uri: uri, method: .get)
                XCTAssertEqual(r.status, .ok, uri)
            }
        }
    }

    func testAnyConfiguredTokenIsAccepted() async throws {
        try await withGateway(tokens: ["alpha", "beta"]) { _, client in
            for t in ["alpha", "beta"] {
                let r = try await client.execute(uri: "/api/queue/tasks", method: .get, headers: [.authorization: "Bearer \(t)"])
                XCTAssertEqual(r.status, .ok)
            }
        }
    }

    func testNoConfiguredTokensMeansNoAuthentication() async throws {
        try await withGateway(tokens: []) { _, client in
            let r = try await client.execute(uri: "/api/tasks", method: .post, headers: [.contentType: "application/json"],
                                             body: ByteBuffer(string: #"{"type":"t"}"#))
            XCTAssertEqual(r.status, .created)
        }
    }

    // MARK: Queue views

    func testQueueStatsHasTheWebAppFieldsAndIsFresh() async throws {
        try await withGateway { fake, client in
            let before = jsonObject(try await client.execute(uri: "/api/queue/stats", method: .get))
            for k in ["total_processed", "total_success", "total_failed", "total_timeout", "current_processing",
                      "queue_size", "max_workers", "max_queue_size", "is_running", "queue_by_priority", "workers_connected"] {
                XCTAssertNotNil(before[k], k)
            }
            XCTAssertEqual(before["queue_size"] as? Int, 0)
            _ = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: #"{"type":"t"}"#))
            let after = jsonObject(try await client.execute(uri: "/api/queue/stats", method: .get))
            XCTAssertEqual(after["queue_size"] as? Int, 1, "a submission is visible in the next call")
        }
    }

    func testConcurrentStatsRequestsShareBrokerRoundTrips() async throws {
        try await withGateway { fake, client in
            try await withThrowingTaskGroup(of: Int?.self) { group in
                for _ in 0..<40 {
                    group.addTask {
                        let r = try await client.execute(uri: "/api/queue/stats", method: .get)
                        return r.status == .ok ? jsonObject(r)["queue_size"] as? Int : nil
                    }
                }
                for try await q in group { XCTAssertEqual(q, 0) }
            }
            let statsRequests = fake.requests.filter { if case .stats = $0 { true } else { false } }.count
            XCTAssertGreaterThanOrEqual(statsRequests, 1)
            XCTAssertLessThanOrEqual(statsRequests, 40)
        }
    }

    func testQueueTasksListsQueuedInDispatchOrder() async throws {
        try await withGateway { fake, client in
            let low = fake.add(priority: .low)
            let urgent = fake.add(priority: .urgent)
            let running = fake.add(state: "running")
            let r = try await client.execute(uri: "/api/queue/tasks", method: .get, headers: Self.auth)
            XCTAssertEqual(r.status, .ok)
            let o = jsonObject(r)
            let queued = try XCTUnwrap(o["queued"] as? [[String: Any]])
            XCTAssertEqual(queued.map { $0["task_id"] as? String }, [urgent.description, low.description])
            XCTAssertEqual(queued.map { $0["queue_position"] as? Int }, [0, 1])
            XCTAssertEqual(queued.first?["type"] as? String, "pdf")
            XCTAssertEqual(queued.first?["priority"] as? String, "URGENT")
            XCTAssertNotNil(queued.first?["created_at"] as? String)
            XCTAssertEqual((o["running"] as? [[String: Any]])?.first?["task_id"] as? String, running.description)
            assertAPIError(try await client.execute(uri: "/api/queue/tasks?limit=0", method: .get, headers: Self.auth), .badRequest, "bad_request", field: "limit")
        }
    }

    // MARK: One task

    func testStatusPassesTheBrokersObjectThrough() async throws {
        try await withGateway { fake, client in
            let id = fake.add()
            fake.setProgress(id, 40, "reading")
            fake.setState(id, "succeeded", result: "DONE")
            let r = try await client.execute(uri: "/api/tasks/\(id)/status", method: .get, headers: Self.auth)
            XCTAssertEqual(r.status, .ok)
            let o = jsonObject(r)
            XCTAssertEqual(o["state"] as? String, "succeeded")
            XCTAssertEqual(o["result"] as? String, "DONE")
            XCTAssertEqual((o["progress"] as? [String: Any])?["percent"] as? Int, 40)
            XCTAssertNotNil(o["created_at"])
            XCTAssertNotNil(o["attempt"])

            assertAPIError(try await client.execute(uri: "/api/tasks/0000000000000001/status", method: .get, headers: Self.auth), .notFound, "not_found")
            for bad in ["123", "zzzzzzzzzzzzzzzz", "+190f3c2a1b20001", "0190f3c2a1b200011"] {
                assertAPIError(try await client.execute(uri: "/api/tasks/\(bad)/status", method: .get, headers: Self.auth),
                                 .badRequest, "bad_request", field: "id")
            }
        }
    }

    func testCancel() async throws {
        try await withGateway { fake, client in
            let id = fake.add(state: "running")
            let r = try await client.execute(uri: "/api/tasks/\(id)", method: .delete, headers: Self.auth)
            XCTAssertEqual(r.status, .ok)
            let o = jsonObject(r)
            XCTAssertEqual(o["status"] as? String, "cancelled")
            XCTAssertEqual(o["previous_state"] as? String, "running")
            assertAPIError(try await client.execute(uri: "/api/tasks/\(id)", method: .delete, headers: Self.auth), .conflict, "not_cancellable")
            assertAPIError(try await client.execute(uri: "/api/tasks/0000000000000001", method: .delete, headers: Self.auth), .notFound, "not_found")
        }
    }

    // MARK: Streams

    func testStreamOnFinishedTaskSendsOutcomeAtOnceAndEnds() async throws {
        try await withGateway { fake, client in
            let id = fake.add()
            fake.setState(id, "succeeded", result: "RESULT")
            let r = try await client.execute(uri: "/api/tasks/\(id)/stream?token=\(Self.token)", method: .get)
            XCTAssertEqual(r.status, .ok)
            XCTAssertEqual(r.headers[.contentType], "text/event-stream")
            let events = SSE.parse(String(buffer: r.body))
            XCTAssertEqual(events.map(\.event), ["status", "result"])
            XCTAssertEqual(events.last?.json["result"] as? String, "RESULT")
            XCTAssertEqual(events.last?.json["event"] as? String, "result")

            let failed = fake.add()
            fake.setState(failed, "failed", error: "boom")
            let f = try await client.execute(uri: "/api/tasks/\(failed)/stream", method: .get, headers: Self.auth)
            let fe = SSE.parse(String(buffer: f.body))
            XCTAssertEqual(fe.map(\.event), ["status", "error"])
            XCTAssertEqual(fe.last?.json["error"] as? String, "boom")
        }
    }

    func testStreamRelaysProgressThenResult() async throws {
        try await withGateway { fake, client in
            let id = fake.add()
            // Once the stream has subscribed and read the status, play the task's life.
            fake.afterFirstStatus { id in
                fake.setState(id, "running")
                fake.emit(id, "started", extra: #","worker":"w1""#)
                fake.emit(id, "progress", extra: #","percent":30,"message":"a third""#)
                fake.emit(id, "progress", extra: #","percent":60,"message":"two thirds""#)
                fake.setState(id, "succeeded", result: "HELLO")
                fake.emit(id, "succeeded", extra: #","duration_ms":5,"result_size":5"#)
            }
            let r = try await client.execute(uri: "/api/tasks/\(id)/stream", method: .get, headers: Self.auth)
            let events = SSE.parse(String(buffer: r.body))
            XCTAssertEqual(events.map(\.event), ["status", "started", "progress", "progress", "result"], String(buffer: r.body))
            XCTAssertEqual(events[2].json["percent"] as? Int, 30)
            XCTAssertEqual(events[3].json["message"] as? String, "two thirds")
            XCTAssertEqual(events[4].json["result"] as? String, "HELLO")
        }
    }

    func testStreamEndsOnFinishedNotificationOrByPollingWhenEventsAreLost() async throws {
        try await withGateway { fake, client in
            let a = fake.add(state: "running")
            fake.afterFirstStatus { id in
                if id == a {
                    fake.setState(id, "cancelled", error: "cancelled")
                    fake.finished(id, state: "cancelled", body: "cancelled")
                } else {
                    // No event at all: the stream's periodic status check finds the outcome.
                    fake.setState(id, "timed_out", error: "attempt exceeded 10 ms")
                }
            }
            let ra = try await client.execute(uri: "/api/tasks/\(a)/stream", method: .get, headers: Self.auth)
            XCTAssertEqual(SSE.parse(String(buffer: ra.body)).map(\.event), ["status", "error"])
            let b = fake.add(state: "running")
            let rb = try await client.execute(uri: "/api/tasks/\(b)/stream", method: .get, headers: Self.auth)
            let eb = SSE.parse(String(buffer: rb.body))
            XCTAssertEqual(eb.map(\.event), ["status", "error"])
            XCTAssertEqual(eb.last?.json["state"] as? String, "timed_out")
            XCTAssertTrue(String(buffer: rb.body).contains(": keep-alive"))
        }
    }

    func testStreamOfUnknownTaskIs404AndBrokerLossEndsStream() async throws {
        try await withGateway { fake, client in
            assertAPIError(try await client.execute(uri: "/api/tasks/0000000000000001/stream", method: .get, headers: Self.auth),
                             .notFound, "not_found")
            let id = fake.add(state: "running")
            fake.afterFirstStatus { _ in fake.setDown(true) }
            let r = try await client.execute(uri: "/api/tasks/\(id)/stream", method: .get, headers: Self.auth)
            let events = SSE.parse(String(buffer: r.body))
            XCTAssertEqual(events.map(\.event), ["status", "error"])
            XCTAssertEqual(events.last?.json["error_type"] as? String, "broker_unavailable")
        }
    }

    func testWebSocketPathWithoutUpgradeExplainsItself() async throws {
        try await withGateway { fake, client in
            let id = fake.add()
            let r = try await client.execute(uri: "/ws/\(id)?token=\(Self.token)", method: .get)
            assertAPIError(r, .upgradeRequired, "upgrade_required")
            assertAPIError(try await client.execute(uri: "/ws/nothex?token=\(Self.token)", method: .get), .badRequest, "bad_request", field: "id")
            assertAPIError(try await client.execute(uri: "/ws/0000000000000001?token=\(Self.token)", method: .get), .notFound, "not_found")
        }
    }

    // MARK: Dead letters

    func testDeadLetterRoutes() async throws {
        try await withGateway { fake, client in
            let a = fake.add()
            fake.setState(a, "failed", error: "boom", dead: true)
            let b = fake.add()
            fake.setState(b, "failed", error: "bang", dead: true)
            let list = jsonObject(try await client.execute(uri: "/api/dead?limit=10", method: .get, headers: Self.auth))
            XCTAssertEqual(list["count"] as? Int, 2)
            XCTAssertEqual((list["dead"] as? [[String: Any]])?.count, 2)

            let retry = try await client.execute(uri: "/api/dead/\(a)/retry", method: .post, headers: Self.auth)
            XCTAssertEqual(jsonObject(retry)["retried"] as? String, a.description)
            assertAPIError(try await client.execute(uri: "/api/dead/\(a)/retry", method: .post, headers: Self.auth), .notFound, "not_found")

            let one = try await client.execute(uri: "/api/dead/\(b)", method: .delete, headers: Self.auth)
            XCTAssertEqual(jsonObject(one)["purged"] as? Int, 1)
            assertAPIError(try await client.execute(uri: "/api/dead/\(b)", method: .delete, headers: Self.auth), .notFound, "not_found")
            let all = try await client.execute(uri: "/api/dead", method: .delete, headers: Self.auth)
            XCTAssertEqual(jsonObject(all)["purged"] as? Int, 0)
        }
    }

    // MARK: Metrics, health, dashboard, unknown routes

    func testMetricsExposition() async throws {
        try await withGateway { fake, client in
            fake.add(priority: .high)
            _ = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: #"{"type":"t","priority":"urgent"}"#))
            fake.setMaxQueue(0)
            _ = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: #"{"type":"t"}"#))
            _ = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth, body: ByteBuffer(string: #"{"type":"bad type"}"#))
            let r = try await client.execute(uri: "/metrics", method: .get)
            XCTAssertEqual(r.status, .ok)
            XCTAssertTrue(r.headers[.contentType]?.hasPrefix("text/plain") ?? false)
            let text = String(buffer: r.body)
            for needle in [
                #"conveyor_queue_depth{priority="high"} 1.0"#, #"conveyor_queue_depth{priority="urgent"} 1.0"#,
                "conveyor_tasks_running 0.0", "conveyor_workers_connected 1.0", "conveyor_broker_up 1.0",
                #"conveyor_tasks_submitted_total{priority="urgent"} 1"#,
                #"conveyor_tasks_rejected_total{reason="queue_full"} 1"#, #"conveyor_tasks_rejected_total{reason="bad_request"} 1"#,
                "conveyor_tasks_succeeded_total", "conveyor_tasks_failed_total", "conveyor_tasks_timed_out_total",
                "conveyor_dispatch_latency_seconds_bucket", "conveyor_http_requests_total{", #"route="/api/tasks""#,
                "conveyor_http_request_duration_seconds_bucket",
            ] {
                XCTAssertTrue(text.contains(needle), "missing \(needle) in\n\(text)")
            }
        }
    }

    func testDashboardPageIsSelfContained() async throws {
        try await withGateway { _, client in
            let r = try await client.execute(uri: "/", method: .get)
            XCTAssertEqual(r.status, .ok)
            XCTAssertTrue(r.headers[.contentType]?.hasPrefix("text/html") ?? false)
            let html = String(buffer: r.body)
            XCTAssertTrue(html.contains("id=\"q-urgent\""), "the real dashboard, not the fallback page")
            XCTAssertTrue(html.contains("throughput-chart"))
            for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "@import", "url(http"] {
                XCTAssertFalse(html.lowercased().contains(external), "external reference \(external)")
            }
        }
    }

    func testDashboardDataFromEvents() async throws {
        let fake = FakeBroker()
        let metrics = GatewayMetrics()
        let monitor = EventMonitor(transport: fake, metrics: metrics)
        func ev(_ topic: String, _ json: String) -> BrokerEvent { BrokerEvent(topic: Array(topic.utf8), json: Array(json.utf8)) }
        monitor.observe(ev("stats", #"{"total_processed":3,"total_success":2,"total_failed":1,"total_timeout":0,"queue_size":4,"current_processing":1,"timestamp":"2024-07-15T09:30:00.000Z"}"#))
        monitor.observe(ev("stats", #"{"total_processed":5,"total_success":4,"total_failed":1,"total_timeout":0,"queue_size":2,"current_processing":1,"timestamp":"2024-07-15T09:30:01.000Z"}"#))
        monitor.observe(ev("task.queued", #"{"event":"queued","task_id":"0190f3c2a1b20001","ts":"2024-07-15T09:30:00.000Z"}"#))
        monitor.observe(ev("task.started", #"{"event":"started","task_id":"0190f3c2a1b20001","ts":"2024-07-15T09:30:00.250Z","worker":"w"}"#))
        monitor.observe(ev("task.failed", #"{"event":"failed","task_id":"0190f3c2a1b20002","type":"pdf","error":"<script>x</script>","ts":"2024-07-15T09:30:01.000Z"}"#))
        monitor.observe(ev("worker.joined", #"{"event":"joined","worker":"w1","types":[],"capacity":1,"ts":"2024-07-15T09:30:01.000Z"}"#))
        let d = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(monitor.dashboardJSON())) as? [String: Any])
        let history = try XCTUnwrap(d["history"] as? [[String: Any]])
        XCTAssertEqual(history.map { $0["processed"] as? Int }, [3, 5])
        XCTAssertEqual(history.last?["t"] as? Int, 1_721_035_801_000)
        XCTAssertEqual((d["recent_failures"] as? [[String: Any]])?.first?["error"] as? String, "<script>x</script>")
        XCTAssertEqual((d["worker_events"] as? [[String: Any]])?.first?["worker"] as? String, "w1")
        let text = String(decoding: metrics.render(), as: UTF8.self)
        XCTAssertTrue(text.contains(#"conveyor_dispatch_latency_seconds_bucket{le="0.25"} 1"#), text)
        XCTAssertTrue(text.contains("conveyor_tasks_succeeded_total 4"), text)
    }

    func testUnknownRouteIsJSON404() async throws {
        try await withGateway { _, client in
            assertAPIError(try await client.execute(uri: "/nope", method: .get), .notFound, "not_found")
        }
    }
}

func jsonObject(_ r: TestResponse, file: StaticString = #filePath, line: UInt = #line) -> [String: Any] {
    let any = try? JSONSerialization.jsonObject(with: Data(r.body.readableBytesView))
    guard let o = any as? [String: Any] else {
        XCTFail("not a JSON object: \(String(buffer: r.body))", file: file, line: line)
        return [:]
    }
    return o
}

func assertAPIError(_ r: TestResponse, _ status: HTTPResponse.Status, _ type: String, field: String? = nil,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(r.status, status, String(buffer: r.body), file: file, line: line)
    XCTAssertEqual(r.headers[.contentType], "application/json", file: file, line: line)
    let o = jsonObject(r, file: file, line: line)
    XCTAssertEqual(o["error_type"] as? String, type, file: file, line: line)
    XCTAssertNotNil(o["message"] as? String, file: file, line: line)
    if let field { XCTAssertEqual(o["field"] as? String, field, file: file, line: line) }
}

/// Parses a complete SSE body into (event, JSON object) pairs.
enum SSE {
    struct Event {
        let event: String
        let json: [String: Any]
    }

    static func parse(_ text: String) -> [Event] {
        text.components(separatedBy: "\n\n").compactMap { block in
            var name = "message", data = ""
            for line in block.split(separator: "\n") {
                if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
                if line.hasPrefix("data: ") { data += line.dropFirst(6) }
            }
            guard !data.isEmpty, let o = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any] else { return nil }
            return Event(event: name, json: o)
        }
    }
}
