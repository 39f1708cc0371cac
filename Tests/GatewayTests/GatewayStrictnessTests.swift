import ConveyorClient
import ConveyorCore
import ConveyorGateway
import ConveyorProtocol
import Foundation
import Hummingbird
import HTTPTypes
import HummingbirdTesting
import XCTest

/// What the gateway refuses (issue 7): empty path segments, undeclared methods,
/// non-JSON `/api/tasks`, invalid UTF-8, payloads the broker would not take —
/// against `FakeBroker`, so each refusal is shown to reach nothing behind it.
final class GatewayStrictnessTests: XCTestCase {
    static let token = GatewayRouterTests.token
    static let auth = GatewayRouterTests.auth
    static let jsonAuth = GatewayRouterTests.jsonAuth

    func withGateway(maxPayload: Int = 1 << 20, _ body: @Sendable (FakeBroker, any TestClientProtocol) async throws -> Void) async throws {
        let fake = FakeBroker()
        var config = GatewayConfig()
        config.apiTokens = [Self.token]
        config.maxPayloadBytes = maxPayload
        let gateway = Gateway(config: config, transport: fake)
        let app = Application(router: gateway.makeRouter())
        try await app.test(.router) { client in try await body(fake, client) }
    }

    // MARK: Paths and methods

    func testEmptyIdRoutesAre404AndPurgeNothing() async throws {
        try await withGateway { fake, client in
            let id = fake.add()
            fake.setState(id, "failed", error: "boom", dead: true)
            let routes: [(HTTPRequest.Method, String)] = [
                (.delete, "/api/dead/"), (.get, "/api/tasks/"), (.get, "/api/tasks//status"), (.delete, "/api/tasks/"),
                (.post, "/api/dead//retry"), (.get, "/api/tasks//stream"), (.get, "/healthz/"), (.post, "/api/types//pause"),
            ]
            for (method, uri) in routes {
                let r = try await client.execute(uri: uri, method: method, headers: Self.auth)
                assertAPIError(r, .notFound, "not_found")
            }
            XCTAssertFalse(fake.requests.contains { if case .dead = $0 { true } else { false } }, "no DEAD request may reach the broker")
            let list = try await client.execute(uri: "/api/dead", method: .get, headers: Self.auth)
            XCTAssertEqual(jsonObject(list)["count"] as? Int, 1, "the dead letter is still there")
        }
    }

    func testUnservedMethodIs405WithAllow() async throws {
        try await withGateway { _, client in
            for (method, uri, allow) in [(HTTPRequest.Method.trace, "/healthz", "GET"), (.put, "/api/tasks", "POST"),
                                         (.patch, "/api/dead", "DELETE, GET")] {
                let r = try await client.execute(uri: uri, method: method, headers: Self.auth)
                assertAPIError(r, .methodNotAllowed, "method_not_allowed")
                XCTAssertEqual(r.headers[.allow], allow)
            }
            let unknown = try await client.execute(uri: "/no/such/route", method: .get, headers: Self.auth)
            assertAPIError(unknown, .notFound, "not_found")
        }
    }

    func testPercentEncodedPathParametersAreDecoded() async throws {
        try await withGateway { fake, client in
            let r = try await client.execute(uri: "/api/types/img%3Av2/pause", method: .post, headers: Self.auth)
            XCTAssertEqual(r.status, .ok, String(buffer: r.body))
            XCTAssertTrue(fake.requests.contains { if case .type(_, .pause, "img:v2") = $0 { true } else { false } })
        }
    }

    // MARK: Content types

    func testApiTasksNeedsJSONContentType() async throws {
        try await withGateway { fake, client in
            for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", nil] {
                var h = Self.auth
                if let ct { h[.contentType] = ct }
                let r = try await client.execute(uri: "/api/tasks", method: .post, headers: h, body: ByteBuffer(string: #"{"type":"t"}"#))
                assertAPIError(r, .unsupportedMediaType, "unsupported_media_type", field: "Content-Type")
            }
            XCTAssertTrue(fake.submitted.isEmpty)
            for ct in ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.conveyor+json"] {
                var h = Self.auth
                h[.contentType] = ct
                let r = try await client.execute(uri: "/api/tasks", method: .post, headers: h, body: ByteBuffer(string: #"{"type":"t"}"#))
                XCTAssertEqual(r.status, .created, "\(ct): \(String(buffer: r.body))")
            }
        }
    }

    func testSeedRoutesKeepAcceptingWhatAppsSend() async throws {
        try await withGateway { fake, client in
            // JSON without a content type on /summarize and /analyze-*.
            let s = try await client.execute(uri: "/summarize", method: .post, headers: Self.auth,
                                             body: ByteBuffer(string: #"{"url":"https://example.com/v"}"#))
            XCTAssertEqual(s.status, .ok, String(buffer: s.body))
            let d = try await client.execute(uri: "/analyze-document", method: .post, headers: Self.auth,
                                             body: ByteBuffer(string: #"{"path":"/srv/a.docx","title":null}"#))
            XCTAssertEqual(d.status, .ok, String(buffer: d.body))
            // Multipart on /analyze-pdf.
            var h = Self.auth
            h[.contentType] = "multipart/form-data; boundary=BB"
            let body = "--BB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\r\n--BB--\r\n"
            let p = try await client.execute(uri: "/analyze-pdf", method: .post, headers: h, body: ByteBuffer(string: body))
            XCTAssertEqual(p.status, .ok, String(buffer: p.body))
            XCTAssertEqual(fake.submitted.map(\.type), ["youtube", "document", "pdf"])
        }
    }

    // MARK: UTF-8

    func testInvalidUTF8InAJSONStringIs400NamingTheField() async throws {
        try await withGateway { fake, client in
            func body(_ parts: [UInt8]...) -> ByteBuffer { ByteBuffer(bytes: parts.flatMap { $0 }) }
            let bad: [UInt8] = [0xFF, 0xFE]
            let overlong: [UInt8] = [0xC0, 0xAF]
            let surrogate: [UInt8] = [0xED, 0xA0, 0x80]
            let cases: [(String, ByteBuffer, String)] = [
                ("/api/tasks", body(Array(#"{"type":""#.utf8), bad, Array(#""}"#.utf8)), "type"),
                ("/api/tasks", body(Array(#"{"type":"t","payload":{"a":[""#.utf8), overlong, Array(#""]}}"#.utf8)), "payload"),
                ("/api/tasks", body(Array(#"{"type":"t","idempotency_key":""#.utf8), surrogate, Array(#""}"#.utf8)), "idempotency_key"),
                ("/summarize", body(Array(#"{"url":"https://x/"#.utf8), bad, Array(#""}"#.utf8)), "url"),
                ("/analyze-document", body(Array(#"{"path":"/a","title":""#.utf8), bad, Array(#""}"#.utf8)), "title"),
                ("/api/tasks", body(Array(#"{""#.utf8), bad, Array(#"":1,"type":"t"}"#.utf8)), "body"),
            ]
            for (uri, b, field) in cases {
                let r = try await client.execute(uri: uri, method: .post, headers: Self.jsonAuth, body: b)
                assertAPIError(r, .badRequest, "bad_request", field: field)
                XCTAssertTrue((jsonObject(r)["message"] as? String ?? "").contains("UTF-8"), String(buffer: r.body))
            }
            // In a multipart text part, too.
            var h = Self.auth
            h[.contentType] = "multipart/form-data; boundary=BB"
            let mp = body(Array("--BB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\r\nX\r\n--BB\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n".utf8),
                          bad, Array("\r\n--BB--\r\n".utf8))
            let r = try await client.execute(uri: "/analyze-pdf", method: .post, headers: h, body: mp)
            assertAPIError(r, .badRequest, "bad_request", field: "title")
            XCTAssertTrue(fake.submitted.isEmpty, "nothing with invalid UTF-8 may reach the broker")
            // Valid multi-byte text is untouched.
            let ok = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth,
                                              body: ByteBuffer(string: #"{"type":"t","payload":"žluťoučký 🐎"}"#))
            XCTAssertEqual(ok.status, .created)
            XCTAssertEqual(fake.submitted.last?.payload, Array("žluťoučký 🐎".utf8))
        }
    }

    // MARK: Payload limits

    func testUploadTooLargeOnceBase64EncodedIs413NamingTheLimit() async throws {
        try await withGateway(maxPayload: 1000) { fake, client in
            // 800 bytes of file fit the 1000-byte body limit, but not once base64-encoded (1068+).
            var h = Self.auth
            h[.contentType] = "multipart/form-data; boundary=BB"
            let file = String(repeating: "A", count: 800)
            let body = "--BB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\r\n\(file)\r\n--BB--\r\n"
            XCTAssertLessThan(body.utf8.count, 1000)
            let r = try await client.execute(uri: "/analyze-pdf", method: .post, headers: h, body: ByteBuffer(string: body))
            assertAPIError(r, .contentTooLarge, "payload_too_large")
            XCTAssertEqual(jsonObject(r)["limit"] as? Int, 1000)
            XCTAssertTrue((jsonObject(r)["message"] as? String ?? "").contains("base64"), String(buffer: r.body))
            // Over the body limit: 413 with the limit too.
            let big = try await client.execute(uri: "/api/tasks", method: .post, headers: Self.jsonAuth,
                                               body: ByteBuffer(string: #"{"type":"t","payload":""# + String(repeating: "x", count: 2000) + #""}"#))
            assertAPIError(big, .contentTooLarge, "payload_too_large")
            XCTAssertEqual(jsonObject(big)["limit"] as? Int, 1000)
            XCTAssertTrue(fake.submitted.isEmpty)
            // 600 bytes of file do fit (800 of base64).
            let small = "--BB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\r\n\(String(repeating: "A", count: 600))\r\n--BB--\r\n"
            let fits = try await client.execute(uri: "/analyze-pdf", method: .post, headers: h, body: ByteBuffer(string: small))
            XCTAssertEqual(fits.status, .ok, String(buffer: fits.body))
        }
    }

    func testPayloadLimitIsDefinedOnceForBrokerAndGateway() {
        XCTAssertEqual(PayloadLimits.defaultMaxPayloadBytes, 10 * 1024 * 1024)
        XCTAssertEqual(GatewayConfig().maxPayloadBytes, PayloadLimits.defaultMaxPayloadBytes)
        // ConveyorCore cannot import ConveyorProtocol: its default is checked to agree instead.
        XCTAssertEqual(SchedulerConfig().maxPayloadBytes, PayloadLimits.defaultMaxPayloadBytes)
        XCTAssertEqual(PayloadLimits.maxMessageBytes(maxPayloadBytes: 1000), 1000 + PayloadLimits.envelopeBytes)
        XCTAssertEqual(PayloadLimits.maxMessageBytes(maxPayloadBytes: .max), .max)
    }

    // MARK: Pure parts

    func testHostAllowlist() {
        let h = HostAllowlist(listenHost: "127.0.0.1", port: 8001, extra: ["queue.internal", "10.0.0.5:9000"])
        for ok in ["127.0.0.1:8001", "localhost:8001", "LOCALHOST:8001", "[::1]:8001", "localhost", "queue.internal:8001",
                   "10.0.0.5:9000"] {
            XCTAssertTrue(h.allows(ok), ok)
        }
        for no in [nil, "", "evil.example:8001", "localhost:8002", "127.0.0.1:80", "localhost.evil.example:8001",
                   "10.0.0.5:8001", "localhost:", "localhost:abc", "user@localhost:8001", "[::1", "[::1]x"] {
            XCTAssertFalse(h.allows(no), no ?? "nil")
        }
        let v6 = HostAllowlist(listenHost: "::1", port: 0, extra: [])
        XCTAssertTrue(v6.allows("[::1]:1234"), "port not known yet: not checked")
        v6.setPort(4321)
        XCTAssertFalse(v6.allows("[::1]:1234"))
        XCTAssertTrue(HostAllowlist(listenHost: "127.0.0.1", port: 1, extra: ["*"]).allows("anything.example:9"))
    }

    func testConnectionGuardKeepsAReserveOfDescriptors() {
        let g = ConnectionGuard(descriptorLimit: 1024, maxConnections: nil, firstRequestTimeoutSeconds: 10)
        XCTAssertEqual(g.acceptCap, 1024 - ConnectionGuard.reserve)
        XCTAssertEqual(g.shedAbove, 1024 - 2 * ConnectionGuard.reserve)
        XCTAssertLessThan(g.shedAbove, g.acceptCap)
        let explicit = ConnectionGuard(descriptorLimit: 20_000, maxConnections: 50, firstRequestTimeoutSeconds: 10)
        XCTAssertEqual(explicit.shedAbove, 50)
        let tooHigh = ConnectionGuard(descriptorLimit: 1024, maxConnections: 5000, firstRequestTimeoutSeconds: 10)
        XCTAssertLessThan(tooHigh.shedAbove, tooHigh.acceptCap, "shedding always starts before accepting stops")
        let tiny = ConnectionGuard(descriptorLimit: 10, maxConnections: nil, firstRequestTimeoutSeconds: 10)
        XCTAssertGreaterThan(tiny.shedAbove, 0)
    }

    func testFileDescriptorLimitIsRaisedToTheHardLimit() throws {
        let r = try XCTUnwrap(FileDescriptorLimit.raiseSoftToHard())
        XCTAssertGreaterThanOrEqual(r.after.soft, r.before.soft)
        XCTAssertEqual(r.after.soft, min(r.after.hard, 1_048_576))
    }

    func testJSONParseErrorsCarryThePath() {
        func path(_ s: String) -> (String?, String?) {
            do { _ = try JSONValue.parse(Array(s.utf8)); return (nil, nil) } catch { return (error.path, error.member) }
        }
        XCTAssertEqual(path(#"{"a":{"b":[1,{"c":tru}]}}"#).0, "a.b[1].c")
        XCTAssertEqual(path(#"{"a":{"b":[1,{"c":tru}]}}"#).1, "a")
        XCTAssertEqual(path(#"[1,2,x]"#).0, "[2]")
        XCTAssertNil(path(#"{"a":1"#).0)
    }
}
