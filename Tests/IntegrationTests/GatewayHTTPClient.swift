import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 and WebSocket client over POSIX sockets for the live
/// gateway tests: it reads server-sent events and WebSocket messages as they
/// arrive (which URLSession on Linux cannot do), and has no dependencies.
/// Loopback only; every read is bounded by a deadline.
struct GatewayHTTPClient {
    let port: Int

    struct Response {
        let status: Int
        let headers: [String: String]
        let body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }
    }

    struct ClientError: Error, CustomStringConvertible { let description: String }

    /// One request on a fresh connection (`Connection: close`).
    func request(_ method: String, _ path: String, headers: [String: String] = [:], body: [UInt8]? = nil,
                 timeout: TimeInterval = 20) throws -> Response {
        let conn = try Connection(port: port)
        defer { conn.close() }
        try conn.send(head(method, path, headers: headers, bodyLength: body?.count) + (body ?? []))
        let deadline = Date().addingTimeInterval(timeout)
        let (status, hdrs) = try conn.readHead(deadline: deadline)
        var out: [UInt8] = []
        if hdrs["transfer-encoding"]?.lowercased() == "chunked" {
            var d = ChunkDecoder()
            while !d.finished {
                guard let more = try conn.readSome(deadline: deadline) else { break }
                out += try d.feed(more)
            }
        } else if let n = hdrs["content-length"].flatMap({ Int($0) }) {
            out = conn.takeBuffered()
            while out.count < n, let more = try conn.readSome(deadline: deadline) { out += more }
        } else {
            out = conn.takeBuffered()
            while let more = try conn.readSome(deadline: deadline) { out += more }
        }
        return Response(status: status, headers: hdrs, body: out)
    }

    func json(_ method: String, _ path: String, token: String? = nil, json: String? = nil, headers: [String: String] = [:]) throws -> Response {
        var h = headers
        if let token { h["Authorization"] = "Bearer \(token)" }
        if json != nil { h["Content-Type"] = "application/json" }
        return try request(method, path, headers: h, body: json.map { Array($0.utf8) })
    }

    func head(_ method: String, _ path: String, headers: [String: String], bodyLength: Int?) -> [UInt8] {
        var s = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (k, v) in headers { s += "\(k): \(v)\r\n" }
        if let n = bodyLength { s += "Content-Length: \(n)\r\n" }
        return Array((s + "\r\n").utf8)
    }

    // MARK: Server-sent events

    final class EventStream {
        let conn: Connection
        var decoder = ChunkDecoder()
        var chunked = false
        var text = ""
        let status: Int
        let headers: [String: String]

        init(client: GatewayHTTPClient, path: String, headers: [String: String], timeout: TimeInterval) throws {
            conn = try Connection(port: client.port)
            try conn.send(client.head("GET", path, headers: headers.merging(["Accept": "text/event-stream"]) { a, _ in a }, bodyLength: nil))
            (status, self.headers) = try conn.readHead(deadline: Date().addingTimeInterval(timeout))
            chunked = self.headers["transfer-encoding"]?.lowercased() == "chunked"
            try absorb(conn.takeBuffered())
        }

        private func absorb(_ bytes: [UInt8]) throws {
            let plain = chunked ? try decoder.feed(bytes) : bytes
            text += String(decoding: plain, as: UTF8.self)
        }

        /// The next event as (name, JSON object), or nil when the stream ended.
        func next(timeout: TimeInterval = 30) throws -> (event: String, json: [String: Any])? {
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                while let r = text.range(of: "\n\n") {
                    let block = String(text[..<r.lowerBound])
                    text = String(text[r.upperBound...])
                    var name = "message", data = ""
                    for line in block.split(separator: "\n") {
                        if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
                        if line.hasPrefix("data: ") { data += line.dropFirst(6) }
                    }
                    if data.isEmpty { continue } // keep-alive comment
                    let o = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] ?? [:]
                    return (name, o)
                }
                if chunked && decoder.finished { return nil }
                guard let more = try conn.readSome(deadline: deadline) else { return nil }
                try absorb(more)
            }
        }

        /// Every remaining event until the server ends the stream.
        func rest(timeout: TimeInterval = 30) throws -> [(event: String, json: [String: Any])] {
            var out: [(event: String, json: [String: Any])] = []
            while let e = try next(timeout: timeout) { out.append(e) }
            return out
        }

        func close() { conn.close() }
    }

    func events(_ path: String, headers: [String: String] = [:], timeout: TimeInterval = 20) throws -> EventStream {
        try EventStream(client: self, path: path, headers: headers, timeout: timeout)
    }

    // MARK: WebSocket (RFC 6455, client side)

    final class WebSocket {
        let conn: Connection
        let status: Int
        var buffer: [UInt8] = []
        /// The status code of the server's close frame, once received.
        var closeCode: Int?

        init(client: GatewayHTTPClient, path: String, timeout: TimeInterval) throws {
            conn = try Connection(port: client.port)
            var key = [UInt8](repeating: 0, count: 16)
            for i in key.indices { key[i] = UInt8.random(in: 0...255) }
            let h = ["Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": Data(key).base64EncodedString(),
                     "Sec-WebSocket-Version": "13"]
            var s = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(client.port)\r\n"
            for (k, v) in h { s += "\(k): \(v)\r\n" }
            try conn.send(Array((s + "\r\n").utf8))
            (status, _) = try conn.readHead(deadline: Date().addingTimeInterval(timeout))
            buffer = conn.takeBuffered()
        }

        private func need(_ n: Int, _ deadline: Date) throws -> Bool {
            while buffer.count < n {
                guard let more = try conn.readSome(deadline: deadline) else { return false }
                buffer += more
            }
            return true
        }

        /// The next text message, or nil once the server closed the connection.
        func next(timeout: TimeInterval = 30) throws -> String? {
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                guard try need(2, deadline) else { return nil }
                let opcode = buffer[0] & 0x0F
                var len = Int(buffer[1] & 0x7F)
                var offset = 2
                if len == 126 {
                    guard try need(4, deadline) else { return nil }
                    len = Int(buffer[2]) << 8 | Int(buffer[3])
                    offset = 4
                } else if len == 127 {
                    guard try need(10, deadline) else { return nil }
                    len = buffer[2..<10].reduce(0) { $0 << 8 | Int($1) }
                    offset = 10
                }
                guard try need(offset + len, deadline) else { return nil }
                let payload = Array(buffer[offset..<(offset + len)])
                buffer.removeFirst(offset + len)
                switch opcode {
                case 1: return String(decoding: payload, as: UTF8.self)
                case 8:
                    if payload.count >= 2 { closeCode = Int(payload[0]) << 8 | Int(payload[1]) }
                    try? sendFrame(opcode: 8, payload: Array(payload.prefix(2)))
                    return nil
                case 9: try sendFrame(opcode: 10, payload: payload)
                default: continue
                }
            }
        }

        func sendFrame(opcode: UInt8, payload: [UInt8]) throws {
            var f: [UInt8] = [0x80 | opcode]
            precondition(payload.count < 126, "test frames are small")
            f.append(0x80 | UInt8(payload.count))
            let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
            f += mask
            f += payload.enumerated().map { $1 ^ mask[$0 % 4] }
            try conn.send(f)
        }

        func close() { conn.close() }
    }

    func webSocket(_ path: String, timeout: TimeInterval = 20) throws -> WebSocket {
        try WebSocket(client: self, path: path, timeout: timeout)
    }
}

/// One TCP connection to 127.0.0.1.
final class Connection {
    private var fd: Int32
    private var pending: [UInt8] = []

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw GatewayHTTPClient.ClientError(description: "socket: errno \(errno)") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw GatewayHTTPClient.ClientError(description: "connect to 127.0.0.1:\(port): errno \(e)")
        }
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw GatewayHTTPClient.ClientError(description: "send: errno \(errno)")
            }
            sent += n
        }
    }

    /// Bytes as they come; nil at end of stream. Throws when the deadline passes.
    func readSome(deadline: Date) throws -> [UInt8]? {
        if !pending.isEmpty { return takeBuffered() }
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { throw GatewayHTTPClient.ClientError(description: "read timed out") }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(min(left, 1) * 1000) + 1)
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { continue }
            var buf = [UInt8](repeating: 0, count: 65536)
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                if errno == ECONNRESET { return nil }
                throw GatewayHTTPClient.ClientError(description: "recv: errno \(errno)")
            }
            return n == 0 ? nil : Array(buf[0..<n])
        }
    }

    func takeBuffered() -> [UInt8] {
        defer { pending = [] }
        return pending
    }

    /// Reads the status line and headers (lower-cased names); body bytes read past them stay buffered.
    func readHead(deadline: Date) throws -> (Int, [String: String]) {
        var data: [UInt8] = []
        let sep: [UInt8] = [13, 10, 13, 10]
        while true {
            if let r = data.firstRange(of: sep) {
                pending = Array(data[r.upperBound...])
                let lines = String(decoding: data[..<r.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
                let parts = lines.first?.split(separator: " ") ?? []
                guard parts.count >= 2, let status = Int(parts[1]) else {
                    throw GatewayHTTPClient.ClientError(description: "bad status line \(lines.first ?? "")")
                }
                var headers: [String: String] = [:]
                for l in lines.dropFirst() {
                    guard let c = l.firstIndex(of: ":") else { continue }
                    headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)
                }
                return (status, headers)
            }
            guard let more = try readSome(deadline: deadline) else {
                throw GatewayHTTPClient.ClientError(description: "connection closed before the response head")
            }
            data += more
        }
    }
}

/// Incremental `Transfer-Encoding: chunked` decoder.
struct ChunkDecoder {
    private var raw: [UInt8] = []
    private(set) var finished = false

    mutating func feed(_ bytes: [UInt8]) throws -> [UInt8] {
        raw += bytes
        var out: [UInt8] = []
        while !finished {
            guard let lineEnd = raw.firstRange(of: [13, 10]) else { break }
            let sizeText = String(decoding: raw[..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else {
                throw GatewayHTTPClient.ClientError(description: "bad chunk size '\(sizeText)'")
            }
            if size == 0 {
                finished = true
                raw = []
                break
            }
            let start = lineEnd.upperBound
            guard raw.count >= start + size + 2 else { break }
            out += raw[start..<(start + size)]
            raw.removeFirst(start + size + 2)
        }
        return out
    }
}
