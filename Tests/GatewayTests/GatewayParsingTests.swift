import ConveyorCore
@testable import ConveyorGateway
import XCTest

/// The pure pieces under the routes: JSON, multipart, tokens, timestamps.
final class GatewayParsingTests: XCTestCase {
    func testJSONParsesValuesAndKeepsRawMemberText() throws {
        let text = #"{ "a" : [1, -2.5e3, true, false, null], "s": "x\"\\\/\n\u00e9\ud83d\ude00", "o": {"k": {}} }"#
        let (v, raw) = try JSONValue.parseObject(Array(text.utf8))
        XCTAssertEqual(v["a"], .array([.number(1), .number(-2500), .bool(true), .bool(false), .null]))
        XCTAssertEqual(v["s"]?.stringValue, "x\"\\/\né😀")
        XCTAssertEqual(raw["o"].map { String(decoding: $0, as: UTF8.self) }, #"{"k": {}}"#)
        XCTAssertEqual(raw["a"].map { String(decoding: $0, as: UTF8.self) }, "[1, -2.5e3, true, false, null]")
    }

    func testJSONRejectsMalformedInput() {
        let bad = ["", "{", "}", #"{"a"}"#, #"{"a":}"#, #"{"a":1,}"#, "[1,]", "01", "1.", "-", "+1", ".5", "1e", "tru", "nul",
                   "\"unterminated", "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"a\u{1}b\"", "{} {}", "NaN", "Infinity", "1e999",
                   String(repeating: "[", count: 200) + String(repeating: "]", count: 200)]
        for b in bad {
            XCTAssertThrowsError(try JSONValue.parse(Array(b.utf8)), b)
        }
        XCTAssertThrowsError(try JSONValue.parseObject(Array("[]".utf8)))
    }

    func testJSONIntValue() throws {
        XCTAssertEqual(try JSONValue.parse(Array("3".utf8)).intValue, 3)
        XCTAssertNil(try JSONValue.parse(Array("3.5".utf8)).intValue)
        XCTAssertNil(try JSONValue.parse(Array("1e300".utf8)).intValue)
    }

    func testMultipartBoundaryAndParts() throws {
        XCTAssertEqual(MultipartForm.boundary(of: "multipart/form-data; boundary=abc"), "abc")
        XCTAssertEqual(MultipartForm.boundary(of: "multipart/form-data; charset=utf-8; boundary=\"a b\""), "a b")
        XCTAssertNil(MultipartForm.boundary(of: "multipart/form-data"))
        XCTAssertNil(MultipartForm.boundary(of: "multipart/form-data; boundary=" + String(repeating: "x", count: 71)))
        let body = Array("preamble\r\n--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b\r\nContent-Disposition: form-data; name=file; filename=\"f.txt\"\r\nContent-Type: text/plain\r\n\r\n\r\nline\r\n\r\n--b--\r\nepilogue".utf8)
        let parts = try MultipartForm.parse(body: body, contentType: "multipart/form-data; boundary=b")
        XCTAssertEqual(parts.count, 2)
        XCTAssertEqual(parts[0].name, "a")
        XCTAssertEqual(parts[0].body, Array("1".utf8))
        XCTAssertEqual(parts[1].filename, "f.txt")
        XCTAssertEqual(parts[1].contentType, "text/plain")
        XCTAssertEqual(parts[1].body, Array("\r\nline\r\n".utf8))
        for broken in ["", "--b", "--b\r\nno header end", "--b\r\nX: y\r\n\r\nbody without end"] {
            XCTAssertThrowsError(try MultipartForm.parse(body: Array(broken.utf8), contentType: "multipart/form-data; boundary=b"), broken)
        }
    }

    func testTokensCompareWholeTokens() {
        let t = try! APITokens(environment: " alpha , beta,,")
        XCTAssertTrue(t.isEnabled)
        XCTAssertTrue(t.accepts("alpha"))
        XCTAssertTrue(t.accepts("beta"))
        for bad in ["", "alph", "alphaa", "ALPHA", "gamma", "alpha,beta"] { XCTAssertFalse(t.accepts(bad), bad) }
        XCTAssertFalse(APITokens([String]()).isEnabled)
        XCTAssertFalse(APITokens(["  "]).isEnabled)
        XCTAssertEqual(APITokens.bearer("Bearer abc").map(String.init), "abc")
        XCTAssertEqual(APITokens.bearer("bearer  abc").map(String.init), "abc")
        XCTAssertNil(APITokens.bearer("Basic abc"))
        XCTAssertNil(APITokens.bearer("Bearer"))
        XCTAssertNil(APITokens.bearer(nil))
    }

    func testNamedScopedTokensAndTheTokensFile() throws {
        let t = try APITokens(environment: "app:s3cret:submit+read, ops:adm:in:admin, legacy")
        XCTAssertEqual(t.identify("s3cret")?.name, "app")
        XCTAssertEqual(t.identify("s3cret")?.scopes, [.submit, .read])
        XCTAssertEqual(t.identify("adm:in")?.name, "ops", "a token may contain ':'")
        XCTAssertTrue(t.identify("adm:in")?.allows(.read) == true, "admin implies every scope")
        XCTAssertEqual(t.identify("legacy")?.scopes, Set(Scope.allCases), "a bare token (the old form) has every scope")
        XCTAssertNil(t.identify("app"))
        XCTAssertEqual(t.identify("s3cret")?.owner, "http:app")
        for bad in ["app:x:write", "app::read", ":x:read", "a b:x:read", "app:x:read,app:y:read"] {
            XCTAssertThrowsError(try APITokens(environment: bad), bad) { e in
                XCTAssertFalse("\(e)".contains("x:"), "errors never echo a secret: \(e)")
            }
        }
        let digest = APITokens.hexString(APITokens.sha256("tok-1"))
        let file = try APITokens(file: "# dashboard\nalice submit+read \(digest)\n\n", path: "tokens")
        XCTAssertEqual(file.identify("tok-1")?.name, "alice")
        XCTAssertNil(file.identify(digest), "the file's digest is not itself a token")
        XCTAssertThrowsError(try APITokens(file: "alice read\n", path: "tokens")) { XCTAssertTrue("\($0)".contains("tokens:1")) }
        XCTAssertThrowsError(try APITokens(file: "alice read abc\n", path: "t")) { XCTAssertTrue("\($0)".contains("SHA-256")) }
    }

    func testTimestampsParseToEpochMilliseconds() {
        XCTAssertEqual(EventMonitor.epochMs("1970-01-01T00:00:00.000Z"), 0)
        XCTAssertEqual(EventMonitor.epochMs("2024-07-15T09:30:00.123Z"), 1_721_035_800_123)
        XCTAssertEqual(EventMonitor.epochMs("2000-02-29T23:59:59Z"), 951_868_799_000)
        XCTAssertNil(EventMonitor.epochMs("yesterday"))
        XCTAssertNil(EventMonitor.epochMs("2024-13-15T09:30:00.123Z"))
    }

    func testStreamMessageSplicesTheEventName() {
        XCTAssertEqual(String(decoding: TaskStream.message("result", Array(#"{"a":1}"#.utf8)).json, as: UTF8.self), #"{"event":"result","a":1}"#)
        XCTAssertEqual(String(decoding: TaskStream.message("x", Array("{}".utf8)).json, as: UTF8.self), #"{"event":"x"}"#)
        XCTAssertEqual(String(decoding: TaskStream.message("x", Array("junk".utf8)).json, as: UTF8.self), #"{"event":"x"}"#)
        XCTAssertEqual(TaskStream.message("progress", Array("{}".utf8)).sse, Array("event: progress\ndata: {\"event\":\"progress\"}\n\n".utf8))
    }

    func testURLCheck() {
        for ok in ["http://a", "https://www.youtube.com/watch?v=x&t=1", "HTTPS://EXAMPLE.COM/x"] { XCTAssertTrue(SubmissionParser.isHTTPURL(ok), ok) }
        for bad in ["", "https://", "ftp://a", "javascript:alert(1)", "http://a b", "//a", "https:/a", "http://a\n"] {
            XCTAssertFalse(SubmissionParser.isHTTPURL(bad), bad)
        }
    }
}
