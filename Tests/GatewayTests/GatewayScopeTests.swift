import ConveyorClient
import ConveyorCore
import ConveyorGateway
import ConveyorProtocol
import Foundation
import Hummingbird
import HTTPTypes
import HummingbirdTesting
import XCTest

/// The routes and their scopes come from `proto/openapi.yaml` (each
/// operation's `x-required-scope`): every documented route is registered, every
/// registered route is documented, and each one refuses the tokens it should —
/// so a new route cannot ship unchecked.
final class GatewayScopeTests: XCTestCase {
    struct Operation: Hashable, CustomStringConvertible {
        let method: String
        let path: String
        let scope: String
        var description: String { "\(method) \(path)" }
    }

    static let spec = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("proto/openapi.yaml")

    /// The operations of the spec's `paths`, read line by line (the file keeps a fixed indentation).
    static func operations() throws -> [Operation] {
        let text = try String(contentsOf: spec, encoding: .utf8)
        var out: [Operation] = [], path: String?, method: String?
        var inPaths = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "paths:" { inPaths = true; continue }
            if inPaths, !line.isEmpty, !line.hasPrefix(" ") { inPaths = false }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") { path = String(line.dropFirst(2).dropLast()); continue }
            for m in ["get", "post", "delete", "put", "patch"] where line == "    \(m):" { method = m.uppercased() }
            if line.hasPrefix("      x-required-scope: "), let path, let method {
                out.append(Operation(method: method, path: path, scope: String(line.dropFirst("      x-required-scope: ".count))))
            }
        }
        return out
    }

    func testEveryRegisteredRouteIsDocumentedWithAScope() throws {
        let ops = try Self.operations()
        XCTAssertGreaterThan(ops.count, 15)
        let gateway = Gateway(config: GatewayConfig(), transport: FakeBroker())
        // HEAD routes come with GET in Hummingbird; the spec lists GET only.
        let registered = Set(gateway.makeRouter().routes.filter { $0.method != .head }.map { "\($0.method.rawValue) \($0.path)" })
        let documented = Set(ops.map(\.description))
        XCTAssertEqual(registered.subtracting(documented), [], "routes the spec does not document")
        XCTAssertEqual(documented.subtracting(registered), [], "documented routes the gateway lacks")
        for op in ops { XCTAssertTrue(["none", "submit", "read", "admin"].contains(op.scope), "\(op): scope \(op.scope)") }
    }

    func testEveryRouteEnforcesItsScope() async throws {
        let ops = try Self.operations()
        let tokens = try APITokens(environment: "sub:t-submit:submit,rd:t-read:read,adm:t-admin:admin,all:t-both:submit+read")
        var config = GatewayConfig()
        config.tokens = tokens
        let fake = FakeBroker()
        let gateway = Gateway(config: config, transport: fake)
        let app = Application(router: gateway.makeRouter())
        try await app.test(.router) { client in
            for op in ops {
                // A task of the token's own, so ownership does not hide it.
                func uri(owner: String) -> String {
                    // Finished, so a stream route answers and ends instead of waiting.
                    let id = fake.add(state: "succeeded", owner: owner)
                    return op.path.replacingOccurrences(of: "{id}", with: id.description).replacingOccurrences(of: "{type}", with: "pdf")
                }
                func call(_ token: String?, owner: String) async throws -> Int {
                    let headers: HTTPFields = token.map { [.authorization: "Bearer \($0)", .contentType: "application/json"] } ?? [.contentType: "application/json"]
                    let r = try await client.execute(uri: uri(owner: owner), method: HTTPRequest.Method(op.method)!, headers: headers,
                                                     body: ByteBuffer(string: #"{"type":"t","url":"https://example.com/a.pdf"}"#))
                    return r.status.code
                }
                let anonymous = try await call(nil, owner: "http:nobody")
                if op.scope == "none" {
                    XCTAssertNotEqual(anonymous, 401, "\(op) is open")
                    continue
                }
                XCTAssertEqual(anonymous, 401, "\(op) without a token")
                for (token, name, scopes) in [("t-submit", "sub", ["submit"]), ("t-read", "rd", ["read"]), ("t-admin", "adm", ["admin"])] {
                    let status = try await call(token, owner: "http:\(name)")
                    let allowed = scopes.contains(op.scope) || scopes.contains("admin")
                    if allowed {
                        XCTAssertFalse([401, 403].contains(status), "\(op) with \(scopes): \(status)")
                    } else {
                        XCTAssertEqual(status, 403, "\(op) with \(scopes)")
                    }
                }
            }
        }
    }

    /// A `read` token sees its own tasks only; someone else's are 404, and the
    /// listing leaves them out. An admin sees all.
    func testReadTokensSeeOnlyTheirOwnTasks() async throws {
        var config = GatewayConfig()
        config.tokens = try APITokens(environment: "alice:ta:submit+read,bob:tb:submit+read,ops:to:admin")
        let fake = FakeBroker()
        let app = Application(router: Gateway(config: config, transport: fake).makeRouter())
        try await app.test(.router) { client in
            func h(_ t: String) -> HTTPFields { [.authorization: "Bearer \(t)", .contentType: "application/json"] }
            let r = try await client.execute(uri: "/api/tasks", method: .post, headers: h("ta"), body: ByteBuffer(string: #"{"type":"t"}"#))
            let id = try XCTUnwrap(jsonObject(r)["task_id"] as? String)
            let own = try await client.execute(uri: "/api/tasks/\(id)/status", method: .get, headers: h("ta")).status
            let other = try await client.execute(uri: "/api/tasks/\(id)/status", method: .get, headers: h("tb")).status
            let otherCancel = try await client.execute(uri: "/api/tasks/\(id)", method: .delete, headers: h("tb")).status
            let admin = try await client.execute(uri: "/api/tasks/\(id)/status", method: .get, headers: h("to")).status
            XCTAssertEqual([own, other, otherCancel, admin], [.ok, .notFound, .notFound, .ok])
            let bobs = jsonObject(try await client.execute(uri: "/api/queue/tasks", method: .get, headers: h("tb")))
            XCTAssertEqual((bobs["queued"] as? [Any])?.count, 0)
            let alices = jsonObject(try await client.execute(uri: "/api/queue/tasks", method: .get, headers: h("ta")))
            XCTAssertEqual((alices["queued"] as? [[String: Any]])?.first?["owner"] as? String, "http:alice")
        }
    }
}
