import ConveyorCore
import ConveyorProtocol
import Foundation

/// Turns the bodies of the submission routes into validated `TaskSpec`s.
///
/// Why separate from the routes: every rule that keeps malformed input away from
/// the broker lives here, as pure functions over bytes that tests can call
/// directly, and every violation is an `APIError` naming the field at fault.
public enum SubmissionParser {
    /// Task types of the legacy routes.
    public static let summarizeType = "youtube"
    public static let pdfType = "pdf"
    public static let documentType = "document"

    /// `priority` as a query parameter: absent → NORMAL; `0`–`3` or a name in any case.
    public static func priority(query: String?) throws(APIError) -> Priority {
        guard let q = query else { return .normal }
        guard let p = Priority(parsing: q) else {
            throw .badRequest("priority must be 0-3 or low, normal, high, urgent; got '\(q.prefix(40))'", field: "priority")
        }
        return p
    }

    /// `priority` as a JSON member: absent/null → NORMAL; an integer 0–3 or a string as for the query.
    public static func priority(json: JSONValue?) throws(APIError) -> Priority {
        switch json {
        case nil, .null?: return .normal
        case .number(let n)?:
            guard n.rounded() == n, n >= 0, n <= 3, let p = Priority(rawValue: UInt8(n)) else {
                throw .badRequest("priority must be 0-3 or low, normal, high, urgent", field: "priority")
            }
            return p
        case .string(let s)?: return try priority(query: s)
        case let v?: throw .badRequest("priority must be a number or a string, not \(v.kindName)", field: "priority")
        }
    }

    static func parseObject(_ body: [UInt8]) throws(APIError) -> (value: JSONValue, raw: [String: ArraySlice<UInt8>]) {
        guard !body.isEmpty else { throw .badRequest("the request body must be a JSON object", field: "body") }
        do {
            return try JSONValue.parseObject(body)
        } catch {
            throw .badRequest("the request body is not a valid JSON object: \(error)", field: error.member ?? "body")
        }
    }

    /// An `Idempotency-Key` header or `idempotency_key` member: 1–128 bytes.
    static func idempotencyKey(_ value: String?, field: String) throws(APIError) -> String? {
        guard let k = value else { return nil }
        guard (1...128).contains(k.utf8.count) else { throw .badRequest("\(field) must be 1-128 bytes", field: field) }
        return k
    }

    /// POST /api/tasks: `{"type", "payload", "priority", "timeout_s", "max_attempts",
    /// "idempotency_key", "delay_s"}`. A string payload is sent as its UTF-8 bytes,
    /// any other JSON value as its JSON text exactly as received; absent: empty.
    public static func generic(body: [UInt8], idempotencyHeader: String?) throws(APIError) -> TaskSpec {
        let (v, raw) = try parseObject(body)
        guard let typeValue = v["type"] else { throw .badRequest("type is required", field: "type") }
        guard let type = typeValue.stringValue else { throw .badRequest("type must be a string", field: "type") }
        guard isValidTaskType(type) else {
            throw .badRequest("type must be 1-64 characters of A-Z a-z 0-9 _ . : -", field: "type")
        }
        var spec = TaskSpec(type: type, priority: try priority(json: v["priority"]))
        switch v["payload"] {
        case nil: spec.payload = []
        case .string(let s)?: spec.payload = Array(s.utf8)
        case _?: spec.payload = raw["payload"].map(Array.init) ?? []
        }
        if let t = v["timeout_s"], !t.isNull {
            guard let s = t.numberValue, s > 0, s <= 604_800 else {
                throw .badRequest("timeout_s must be a number of seconds in (0, 604800]", field: "timeout_s")
            }
            spec.timeoutMs = UInt32(max(1, (s * 1000).rounded(.up)))
        }
        if let m = v["max_attempts"], !m.isNull {
            guard let n = m.intValue, (1...100).contains(n) else {
                throw .badRequest("max_attempts must be an integer in 1...100", field: "max_attempts")
            }
            spec.maxAttempts = UInt16(n)
        }
        if let d = v["delay_s"], !d.isNull {
            guard let s = d.numberValue, s >= 0, s <= 31_536_000 else {
                throw .badRequest("delay_s must be a number of seconds in [0, 31536000]", field: "delay_s")
            }
            let ms = Int64((s * 1000).rounded())
            if ms > 0 { spec.delayMs = ms }
        }
        var key: String?
        if let k = v["idempotency_key"], !k.isNull {
            guard let s = k.stringValue else { throw .badRequest("idempotency_key must be a string", field: "idempotency_key") }
            key = try idempotencyKey(s, field: "idempotency_key")
        }
        let header = try idempotencyKey(idempotencyHeader, field: "Idempotency-Key")
        if let key, let header, key != header {
            throw .badRequest("the Idempotency-Key header and idempotency_key differ", field: "idempotency_key")
        }
        spec.idempotencyKey = key ?? header
        return spec
    }

    /// POST /summarize: `{"url": "http(s)://..."}` → a `youtube` task whose payload is the body.
    public static func summarize(body: [UInt8], priority: Priority, idempotencyHeader: String?) throws(APIError) -> TaskSpec {
        let (v, _) = try parseObject(body)
        guard let u = v["url"] else { throw .badRequest("url is required", field: "url") }
        guard let url = u.stringValue, isHTTPURL(url) else { throw .badRequest("url must be an http or https URL", field: "url") }
        _ = url
        var spec = TaskSpec(type: summarizeType, priority: priority, payload: body)
        spec.idempotencyKey = try idempotencyKey(idempotencyHeader, field: "Idempotency-Key")
        return spec
    }

    /// POST /analyze-pdf and /analyze-document.
    ///
    /// * `multipart/form-data` with a file part (`file`, or the first part with a
    ///   filename) and an optional `title` field → payload is the JSON object
    ///   `{"filename", "content_type", "title", "size", "content_base64"}`.
    /// * JSON `{"url": "http(s)://..."}` or `{"path": "..."}`, optional `"title"`
    ///   (a string) → payload is the body as received.
    public static func document(type: String, body: [UInt8], contentType: String?, priority: Priority,
                                idempotencyHeader: String?) throws(APIError) -> TaskSpec {
        var spec = TaskSpec(type: type, priority: priority)
        spec.idempotencyKey = try idempotencyKey(idempotencyHeader, field: "Idempotency-Key")
        if let ct = contentType, ct.lowercased().hasPrefix("multipart/form-data") {
            let parts = try MultipartForm.parse(body: body, contentType: ct)
            guard let file = parts.first(where: { $0.name == "file" && $0.filename != nil }) ?? parts.first(where: { $0.filename != nil }) else {
                throw .badRequest("the multipart body has no file part (a part named 'file' with a filename)", field: "file")
            }
            var title: String?
            if let t = parts.first(where: { $0.name == "title" && $0.filename == nil }) {
                guard let text = String(validating: t.body, as: UTF8.self) else {
                    throw .badRequest("title must be valid UTF-8", field: "title")
                }
                title = text
            }
            var w = JSONWriter(capacity: file.body.count * 4 / 3 + 256)
            w.field("filename", file.filename ?? "")
            w.field("content_type", file.contentType ?? "application/octet-stream")
            w.field("title", title)
            w.field("size", file.body.count)
            w.field("content_base64", Data(file.body).base64EncodedString())
            spec.payload = w.finish()
            return spec
        }
        let (v, _) = try parseObject(body)
        if let t = v["title"], !t.isNull, t.stringValue == nil {
            throw .badRequest("title must be a string", field: "title")
        }
        // Each of url and path is checked when given; one of them is required.
        var named = false
        if let u = v["url"] {
            guard let url = u.stringValue, isHTTPURL(url) else { throw .badRequest("url must be an http or https URL", field: "url") }
            named = true
        }
        if let p = v["path"] {
            guard let path = p.stringValue, !path.isEmpty, path.unicodeScalars.count <= 4096, !path.utf8.contains(0) else {
                throw .badRequest("path must be a non-empty string of at most 4096 characters, without NUL", field: "path")
            }
            named = true
        }
        guard named else {
            throw .badRequest("upload the file as multipart/form-data, or give url or path in a JSON body", field: "url")
        }
        spec.payload = body
        return spec
    }

    /// An absolute http(s) URL with a host and no whitespace.
    public static func isHTTPURL(_ s: String) -> Bool {
        guard s.utf8.count <= 8192, !s.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 }),
              let c = URLComponents(string: s), let scheme = c.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = c.host, !host.isEmpty else { return false }
        return true
    }
}
