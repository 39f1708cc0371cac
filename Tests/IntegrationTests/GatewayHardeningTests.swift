import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The gateway under hostile or careless HTTP (issue 7), as a real process in
/// front of a real broker on loopback: an upload too large once encoded next to
/// normal traffic, 1,100 idle connections under a 1,024 soft descriptor limit,
/// load shedding, idle and first-request timeouts, unparsable requests, empty
/// ids, invalid UTF-8, non-JSON bodies and the Host check. Every loop is bounded
/// in count and time; every process is stopped by PID.
final class GatewayHardeningTests: ClusterTestCase {
    static let token = "hardening-token"

    // MARK: Helpers

    /// What a raw exchange saw: the bytes, and when the server closed (nil: still
    /// open at the deadline).
    struct RawResult {
        var bytes: [UInt8]
        var closedAfter: TimeInterval?
        var text: String { String(decoding: bytes, as: UTF8.self) }
        var statusLine: String { text.components(separatedBy: "\r\n").first ?? "" }
        var body: String { text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n") }
    }

    /// Sends `bytes` (none: a silent connection) and reads until the server closes
    /// or `timeout` passes. A reset after the answer counts as a close.
    func raw(_ port: Int, _ bytes: [UInt8], timeout: TimeInterval = 10) throws -> RawResult {
        let conn = try Connection(port: port)
        defer { conn.close() }
        let start = Date()
        if !bytes.isEmpty {
            // The server may close before reading everything (a huge header): that is fine.
            try? conn.send(bytes)
        }
        var out: [UInt8] = []
        let deadline = start.addingTimeInterval(timeout)
        while Date() < deadline {
            do {
                guard let more = try conn.readSome(deadline: deadline) else {
                    return RawResult(bytes: out, closedAfter: Date().timeIntervalSince(start))
                }
                out += more
            } catch {
                if Date() >= deadline { break }
                return RawResult(bytes: out, closedAfter: Date().timeIntervalSince(start)) // reset
            }
        }
        return RawResult(bytes: out, closedAfter: nil)
    }

    func request(_ method: String, _ path: String, host: String, headers: [String: String] = [:], body: [UInt8] = []) -> [UInt8] {
        var s = "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n"
        for (k, v) in headers { s += "\(k): \(v)\r\n" }
        if !body.isEmpty || method == "POST" { s += "Content-Length: \(body.count)\r\n" }
        return Array((s + "\r\n").utf8) + body
    }

    /// Opens up to `count` idle connections within `seconds`.
    func openIdle(_ port: Int, count: Int, seconds: TimeInterval = 30) throws -> [Connection] {
        var conns: [Connection] = []
        let deadline = Date().addingTimeInterval(seconds)
        while conns.count < count, Date() < deadline { conns.append(try Connection(port: port)) }
        XCTAssertEqual(conns.count, count, "could not open \(count) connections in \(seconds) s")
        return conns
    }

    func percentile(_ xs: [Double], _ p: Double) -> Double {
        let s = xs.sorted()
        return s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count - 1) * p))]
    }

    // MARK: Bounded payloads

    func testOversizedUploadNextToNormalTrafficIs413AndOthersAreUnaffected() throws {
        try cluster.startBroker(["--max-queue", "10000"])
        let gw = try cluster.startGateway(tokens: [Self.token])
        // 8 MiB fits the 10 MiB body limit, but not once base64-encoded (10.7 MiB): before,
        // this frame went over the broker's ZMQ_MAXMSGSIZE and the shared connection dropped.
        let boundary = "conveyorboundary"
        let file = [UInt8](repeating: 0x25, count: 8 * 1024 * 1024)
        let upload = Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.pdf\"\r\nContent-Type: application/pdf\r\n\r\n".utf8)
            + file + Array("\r\n--\(boundary)--\r\n".utf8)

        let statuses = Locked<[Int]>([])
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            defer { done.signal() }
            let deadline = Date().addingTimeInterval(30)
            for i in 0..<40 where Date() < deadline {
                let r = try? gw.http.json("POST", "/api/tasks", token: Self.token, json: #"{"type":"t","payload":"normal \#(i)"}"#)
                statuses.set(statuses.get() + [r?.status ?? -1])
            }
        }
        let t0 = Date()
        let big = try gw.http.request("POST", "/analyze-pdf", headers: [
            "Authorization": "Bearer \(Self.token)", "Content-Type": "multipart/form-data; boundary=\(boundary)",
        ], body: upload, timeout: 30)
        XCTAssertEqual(big.status, 413, big.text)
        XCTAssertEqual(big.json["error_type"] as? String, "payload_too_large")
        XCTAssertEqual(big.json["limit"] as? Int, 10_485_760, big.text)
        print(String(format: "8 MiB upload refused in %.2f s", Date().timeIntervalSince(t0)))
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(statuses.get(), [Int](repeating: 201, count: 40), "the other callers must be unaffected")

        // The broker connection is intact: answers at once, no 503.
        XCTAssertEqual(try gw.http.json("GET", "/healthz").status, 200)
        let after = try gw.http.json("POST", "/api/tasks", token: Self.token, json: #"{"type":"t","payload":"after"}"#)
        XCTAssertEqual(after.status, 201, after.text)
        // A body over the limit is refused on its Content-Length, with the limit, before any
        // of it is read: the head alone gets the answer.
        let head = Array("POST /summarize HTTP/1.1\r\nHost: 127.0.0.1:\(gw.port)\r\nAuthorization: Bearer \(Self.token)\r\nConnection: close\r\nContent-Length: \(10 * 1024 * 1024 + 1)\r\n\r\n".utf8)
        let conn = try Connection(port: gw.port)
        defer { conn.close() }
        try conn.send(head)
        let (status, headers) = try conn.readHead(deadline: Date().addingTimeInterval(10))
        XCTAssertEqual(status, 413)
        XCTAssertEqual(headers["connection"], "close")
        var rest = conn.takeBuffered()
        while !String(decoding: rest, as: UTF8.self).contains("}"), let more = try conn.readSome(deadline: Date().addingTimeInterval(10)) { rest += more }
        XCTAssertTrue(String(decoding: rest, as: UTF8.self).contains(#""limit":10485760"#), String(decoding: rest, as: UTF8.self))
    }

    // MARK: Connections

    func testEleventHundredIdleConnectionsUnderA1024SoftLimitAndHealthzAnswers() throws {
        guard let hard = currentHardNoFile(), hard >= 4096, FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit") else {
            throw XCTSkip("needs /usr/bin/prlimit and a hard open-file limit of at least 4096")
        }
        try cluster.startBroker()
        // Soft 1,024 as distributions start services; the gateway raises it to the hard 4,096.
        let p = try ManagedProcess(name: "gateway-prlimit", executable: "/usr/bin/prlimit",
                                   arguments: ["--nofile=1024:4096", Cluster.binary, "gateway", "--host", "127.0.0.1", "--port", "0",
                                               "--broker", cluster.clients, "--events", cluster.events],
                                   environment: ["CONVEYOR_API_TOKENS": Self.token], directory: cluster.directory)
        defer { p.stop() }
        let line = try p.waitForLine(containing: "conveyor gateway ready")
        let port = try XCTUnwrap(line.split(separator: ":").last.flatMap { Int($0.prefix { $0.isNumber }) })
        let limits = (try? String(contentsOfFile: "/proc/\(p.pid)/limits", encoding: .utf8)) ?? ""
        let openFiles = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }.map(String.init) ?? ""
        XCTAssertEqual(openFiles.split(separator: " ").dropFirst(3).prefix(2).map(String.init), ["4096", "4096"], openFiles)
        XCTAssertTrue(p.stderr.contains("raised the open-file limit from 1024 to 4096"), p.stderr)

        let idle = try openIdle(port, count: 1100)
        defer { idle.forEach { $0.close() } }
        let client = GatewayHTTPClient(port: port)
        var latencies: [Double] = []
        for _ in 0..<20 {
            let t = Date()
            let r = try client.json("GET", "/healthz")
            latencies.append(Date().timeIntervalSince(t) * 1000)
            XCTAssertEqual(r.status, 200, r.text)
        }
        let p50 = percentile(latencies, 0.5), mx = latencies.max() ?? 0
        print(String(format: "healthz with 1100 idle connections: p50 %.1f ms, max %.1f ms", p50, mx))
        XCTAssertLessThan(mx, 2000, "healthz must answer promptly with 1,100 idle connections")
        XCTAssertTrue(p.isRunning, p.stderr)
    }

    func testRequestsBeyondMaxConnectionsAre503WithRetryAfter() throws {
        try cluster.startBroker()
        let gw = try cluster.startGateway(tokens: [Self.token], extra: ["--max-connections", "20"])
        var idle = try openIdle(gw.port, count: 30)
        // Connections are counted when the gateway accepts them: wait for a 503.
        let shed = try eventually(timeout: 10, "a request to be shed") { () -> GatewayHTTPClient.Response? in
            let r = try gw.http.json("GET", "/healthz")
            return r.status == 503 ? r : nil
        }
        XCTAssertEqual(shed.json["error_type"] as? String, "overloaded", shed.text)
        XCTAssertEqual(shed.headers["retry-after"], "1")
        idle.forEach { $0.close() }
        idle = []
        _ = try eventually(timeout: 10, "service after the connections closed") {
            try gw.http.json("GET", "/healthz").status == 200 ? true : nil
        }
        let metrics = try gw.http.json("GET", "/metrics").text
        XCTAssertTrue(metrics.contains("conveyor_http_requests_shed_total"), metrics)
    }

    func testIdleAndSilentConnectionsAreClosedAfterTheIdleTimeout() throws {
        try cluster.startBroker()
        let gw = try cluster.startGateway(tokens: [Self.token], extra: ["--idle-timeout", "1"])
        // A keep-alive connection: answered, then closed about 1 s later.
        let keepAlive = Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:\(gw.port)\r\n\r\n".utf8)
        let k = try raw(gw.port, keepAlive, timeout: 8)
        XCTAssertTrue(k.statusLine.hasPrefix("HTTP/1.1 200"), k.text)
        let closed = try XCTUnwrap(k.closedAfter, "the idle keep-alive connection was not closed within 8 s")
        XCTAssertGreaterThan(closed, 0.8)
        XCTAssertLessThan(closed, 5)
        // A connection that never sends a request.
        let s = try raw(gw.port, [], timeout: 8)
        XCTAssertTrue(s.bytes.isEmpty)
        XCTAssertLessThan(try XCTUnwrap(s.closedAfter, "the silent connection was not closed within 8 s"), 5)
        // A slow trickle of a header that never completes.
        let conn = try Connection(port: gw.port)
        defer { conn.close() }
        try conn.send(Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n".utf8))
        let start = Date()
        for _ in 0..<4 { usleep(300_000); try? conn.send(Array("X-Slow: y\r\n".utf8)) }
        var trickleClosed = false
        do { trickleClosed = try conn.readSome(deadline: Date().addingTimeInterval(6)) == nil } catch { trickleClosed = false }
        XCTAssertTrue(trickleClosed, "a head that never completes ends in a close")
        XCTAssertLessThan(Date().timeIntervalSince(start), 6)
    }

    func testUnparsableRequestsAre400AndClosed() throws {
        try cluster.startBroker()
        let gw = try cluster.startGateway(tokens: [Self.token])
        var tlsHello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03]
        tlsHello += [UInt8](repeating: 0x5A, count: 500)
        let hugeHeader = Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:\(gw.port)\r\nX-Big: ".utf8)
            + [UInt8](repeating: 0x61, count: 1 << 20) + Array("\r\n\r\n".utf8)
        let manyHeaders = Array(("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:\(gw.port)\r\n"
            + (0..<200).map { "X-H\($0): v\r\n" }.joined() + "\r\n").utf8)
        for (what, bytes) in [("TLS ClientHello", tlsHello), ("1 MiB header", hugeHeader), ("200 headers", manyHeaders),
                              ("garbage", Array("\u{1}\u{2}\u{3} nonsense\r\n\r\n".utf8))] {
            let r = try raw(gw.port, bytes, timeout: 8)
            XCTAssertTrue(r.statusLine.hasPrefix("HTTP/1.1 400"), "\(what): \(r.text.prefix(300))")
            XCTAssertTrue(r.body.contains(#""error_type":"bad_request""#), "\(what): \(r.text.prefix(300))")
            XCTAssertNotNil(r.closedAfter, "\(what): the connection must be closed")
        }
        XCTAssertEqual(try gw.http.json("GET", "/healthz").status, 200)
        XCTAssertTrue(gw.process.isRunning)
        let metrics = try gw.http.json("GET", "/metrics").text
        XCTAssertTrue(metrics.contains("conveyor_http_malformed_requests_total 4"), metrics)
    }

    // MARK: Strictness

    func testEmptyIdRoutesAre404AndNeverAll() throws {
        try cluster.startBroker()
        let gw = try cluster.startGateway(tokens: [Self.token])
        for (method, path) in [("DELETE", "/api/dead/"), ("GET", "/api/tasks/"), ("GET", "/api/tasks//status"),
                               ("DELETE", "/api/tasks/"), ("POST", "/api/dead//retry")] {
            let r = try gw.http.json(method, path, token: Self.token)
            XCTAssertEqual(r.status, 404, "\(method) \(path): \(r.text)")
            XCTAssertEqual(r.json["error_type"] as? String, "not_found")
        }
        let purgeAll = try gw.http.json("DELETE", "/api/dead", token: Self.token)
        XCTAssertEqual(purgeAll.status, 200, "the collection route itself still works")
    }

    func testInvalidUTF8AndNonJSONBodiesAreRefused() throws {
        try cluster.startBroker()
        let gw = try cluster.startGateway(tokens: [Self.token])
        let body = Array(#"{"type":"t","payload":{"note":""#.utf8) + [0xC3, 0x28] + Array(#""}}"#.utf8)
        let bad = try gw.http.request("POST", "/api/tasks", headers: ["Authorization": "Bearer \(Self.token)", "Content-Type": "application/json"], body: body)
        XCTAssertEqual(bad.status, 400, bad.text)
        XCTAssertEqual(bad.json["field"] as? String, "payload")
        XCTAssertTrue((bad.json["message"] as? String ?? "").contains("UTF-8"), bad.text)
        let plain = try gw.http.request("POST", "/api/tasks", headers: ["Authorization": "Bearer \(Self.token)", "Content-Type": "text/plain"],
                                        body: Array(#"{"type":"t"}"#.utf8))
        XCTAssertEqual(plain.status, 415, plain.text)
        XCTAssertEqual(plain.json["error_type"] as? String, "unsupported_media_type")
        // JSON without a content type still works on the seed-compatible /summarize.
        let seed = try gw.http.request("POST", "/summarize", headers: ["Authorization": "Bearer \(Self.token)"],
                                       body: Array(#"{"url":"https://example.com/v"}"#.utf8))
        XCTAssertEqual(seed.status, 200, seed.text)
        let stats = try cluster.stats()
        XCTAssertEqual(stats["queue_size"] as? Int, 1, "only the /summarize task reached the broker")
    }

    func testHostCheckWithoutTokens() throws {
        try cluster.startBroker()
        let open = try cluster.startGateway(tokens: [], name: "gateway-open")
        let evil = try raw(open.port, request("GET", "/api/queue/stats", host: "evil.example:\(open.port)"))
        XCTAssertTrue(evil.statusLine.hasPrefix("HTTP/1.1 403"), evil.text)
        XCTAssertTrue(evil.body.contains("host_not_allowed"), evil.text)
        let noHost = try raw(open.port, Array("GET /healthz HTTP/1.0\r\nConnection: close\r\n\r\n".utf8))
        XCTAssertTrue(noHost.statusLine.contains(" 403"), noHost.text)
        let task = try raw(open.port, request("POST", "/api/tasks", host: "rebind.example:\(open.port)",
                                              headers: ["Content-Type": "application/json"], body: Array(#"{"type":"t"}"#.utf8)))
        XCTAssertTrue(task.statusLine.hasPrefix("HTTP/1.1 403"), task.text)
        for host in ["localhost:\(open.port)", "127.0.0.1:\(open.port)", "[::1]:\(open.port)", "LocalHost:\(open.port)"] {
            let ok = try raw(open.port, request("GET", "/healthz", host: host))
            XCTAssertTrue(ok.statusLine.hasPrefix("HTTP/1.1 200"), "\(host): \(ok.text)")
        }
        let wrongPort = try raw(open.port, request("GET", "/healthz", host: "localhost:1"))
        XCTAssertTrue(wrongPort.statusLine.hasPrefix("HTTP/1.1 403"), wrongPort.text)
        XCTAssertEqual(try cluster.stats()["queue_size"] as? Int, 0, "the rebinding page submitted nothing")

        let named = try cluster.startGateway(tokens: [], extra: ["--allowed-hosts", "queue.internal,other.internal"], name: "gateway-named")
        let allowed = try raw(named.port, request("GET", "/healthz", host: "queue.internal:\(named.port)"))
        XCTAssertTrue(allowed.statusLine.hasPrefix("HTTP/1.1 200"), allowed.text)

        // With tokens the token is the defence: any Host.
        let secured = try cluster.startGateway(tokens: [Self.token], name: "gateway-secured")
        let withToken = try raw(secured.port, request("GET", "/api/queue/tasks", host: "anything.example",
                                                      headers: ["Authorization": "Bearer \(Self.token)"]))
        XCTAssertTrue(withToken.statusLine.hasPrefix("HTTP/1.1 200"), withToken.text)
    }

    func currentHardNoFile() -> Int? {
        var r = rlimit()
        guard getrlimit(__rlimit_resource_t(UInt32(RLIMIT_NOFILE.rawValue)), &r) == 0 else { return nil }
        return r.rlim_max == rlim_t.max ? Int.max : Int(r.rlim_max)
    }
}
