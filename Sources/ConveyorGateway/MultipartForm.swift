import Foundation

/// A `multipart/form-data` body (RFC 7578), split into parts.
///
/// Why hand-written: the upload routes need only names, filenames, content
/// types and bytes, and no multipart library is among the dependencies. Input is
/// untrusted: every index is bounds-checked and the part count is capped.
public enum MultipartForm {
    public struct Part: Sendable, Equatable {
        public var name: String?
        public var filename: String?
        public var contentType: String?
        public var body: [UInt8]
    }

    static let maxParts = 64

    /// The `boundary` parameter of a Content-Type header.
    public static func boundary(of contentType: String) -> String? {
        for param in contentType.split(separator: ";").dropFirst() {
            let kv = param.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, kv[0].trimmingCharacters(in: .whitespaces).lowercased() == "boundary" else { continue }
            var v = kv[1].trimmingCharacters(in: .whitespaces)
            if v.count >= 2, v.hasPrefix("\""), v.hasSuffix("\"") { v = String(v.dropFirst().dropLast()) }
            return (1...70).contains(v.utf8.count) ? v : nil
        }
        return nil
    }

    public static func parse(body: [UInt8], contentType: String) throws(APIError) -> [Part] {
        guard let b = boundary(of: contentType) else {
            throw .badRequest("multipart/form-data needs a boundary parameter of 1-70 characters", field: "body")
        }
        let delimiter = Array("--\(b)".utf8)
        guard var pos = find(delimiter, in: body, from: 0) else {
            throw .badRequest("the multipart body does not contain its boundary", field: "body")
        }
        var parts: [Part] = []
        while parts.count <= maxParts {
            pos += delimiter.count
            // "--" after a delimiter ends the body.
            if pos + 1 < body.count, body[pos] == UInt8(ascii: "-"), body[pos + 1] == UInt8(ascii: "-") { return parts }
            // Skip transport padding up to the CRLF.
            guard let lineEnd = find([13, 10], in: body, from: pos) else { break }
            let headerStart = lineEnd + 2
            guard let headerEnd = find([13, 10, 13, 10], in: body, from: headerStart) else { break }
            let bodyStart = headerEnd + 4
            guard let next = find([13, 10] + delimiter, in: body, from: bodyStart) else { break }
            var part = Part(name: nil, filename: nil, contentType: nil, body: Array(body[bodyStart..<next]))
            // Part headers become JSON strings of the payload (filename, content type):
            // refuse bytes that are not UTF-8 instead of replacing them.
            guard let headerText = String(validating: body[headerStart..<headerEnd], as: UTF8.self) else {
                throw .badRequest("a multipart part's headers are not valid UTF-8", field: "file")
            }
            for line in headerText.split(separator: "\r\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
                let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                if name == "content-disposition" {
                    part.name = parameter("name", in: value)
                    part.filename = parameter("filename", in: value)
                } else if name == "content-type" {
                    part.contentType = value
                }
            }
            parts.append(part)
            pos = next + 2
        }
        if parts.count > maxParts { throw .badRequest("the multipart body has more than \(maxParts) parts", field: "body") }
        throw .badRequest("the multipart body is truncated or malformed", field: "body")
    }

    /// A `key="value"` (or unquoted) parameter of a header value.
    static func parameter(_ key: String, in value: String) -> String? {
        for item in value.split(separator: ";").dropFirst() {
            let kv = item.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, kv[0].trimmingCharacters(in: .whitespaces).lowercased() == key else { continue }
            var v = kv[1].trimmingCharacters(in: .whitespaces)
            if v.count >= 2, v.hasPrefix("\""), v.hasSuffix("\"") { v = String(v.dropFirst().dropLast()) }
            return v
        }
        return nil
    }

    static func find(_ needle: [UInt8], in hay: [UInt8], from start: Int) -> Int? {
        guard !needle.isEmpty, start >= 0, hay.count >= needle.count else { return nil }
        let first = needle[0]
        var i = start
        let last = hay.count - needle.count
        while i <= last {
            if hay[i] == first {
                var k = 1
                while k < needle.count, hay[i + k] == needle[k] { k += 1 }
                if k == needle.count { return i }
            }
            i += 1
        }
        return nil
    }
}
