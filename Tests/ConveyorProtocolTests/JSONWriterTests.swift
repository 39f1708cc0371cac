import ConveyorCore
import Foundation
import XCTest
@testable import ConveyorProtocol

final class JSONWriterTests: XCTestCase {
    private func parse(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> [String: Any]? {
        do {
            let o = try JSONSerialization.jsonObject(with: Data(bytes))
            guard let d = o as? [String: Any] else {
                XCTFail("not an object: \(String(decoding: bytes, as: UTF8.self))", file: file, line: line)
                return nil
            }
            return d
        } catch {
            XCTFail("invalid JSON \(String(decoding: bytes, as: UTF8.self)): \(error)", file: file, line: line)
            return nil
        }
    }

    func testEveryControlCharacterAndSpecialCharacterIsEscaped() {
        var all = ""
        for v in 0..<128 { all.unicodeScalars.append(UnicodeScalar(UInt8(v))) }
        let samples = [
            all, "\"", "\\", "\\\"", "\"\\n\"", "line\nbreak\r\ttab", "\u{0}nul", "\u{1F}", "\u{7F}del", "é ü 中文 🚀",
            // (Not U+FEFF: Foundation's parser drops it even inside a string.)
            "\u{2028}\u{2029}", "</script>", "{\"not\":\"nested\"}", "",
        ]
        for s in samples {
            var w = JSONWriter()
            w.field("k", s)
            w.field(s, "value-under-an-escaped-key")
            let bytes = w.finish()
            XCTAssertFalse(bytes.contains { $0 < 0x20 }, "raw control byte in \(s.debugDescription)")
            guard let d = parse(bytes) else { continue }
            XCTAssertEqual(d["k"] as? String, s, s.debugDescription)
            XCTAssertEqual(d[s] as? String, "value-under-an-escaped-key", s.debugDescription)
        }
    }

    func testValuesOfEveryKind() {
        var w = JSONWriter()
        w.field("s", "x")
        w.field("nil", nil as String?)
        w.field("i", Int(42))
        w.field("neg", Int64.min)
        w.field("u", Int64.max)
        w.field("oi", nil as Int?)
        w.field("oi2", 7 as Int?)
        w.field("d", 0.1)
        w.field("big", 1e300)
        w.field("nan", Double.nan)
        w.field("inf", -Double.infinity)
        w.field("t", true)
        w.field("f", false)
        w.fieldNull("n")
        w.field("types", strings: ["a", "b\"c", ""])
        w.field("empty", strings: [])
        w.beginObject("o")
        w.field("x", 1)
        w.beginObject("inner")
        w.endObject()
        w.field("y", 2)
        w.endObject()
        w.field("raw", raw: JSONWriter.array([Array("{\"a\":1}".utf8), Array("[]".utf8)]))
        w.field("last", "z")
        guard let d = parse(w.finish()) else { return }
        XCTAssertEqual(d["s"] as? String, "x")
        XCTAssertTrue(d["nil"] is NSNull)
        XCTAssertEqual((d["i"] as? NSNumber)?.intValue, 42)
        XCTAssertEqual((d["neg"] as? NSNumber)?.int64Value, Int64.min)
        XCTAssertEqual((d["u"] as? NSNumber)?.int64Value, Int64.max)
        XCTAssertTrue(d["oi"] is NSNull)
        XCTAssertEqual((d["oi2"] as? NSNumber)?.intValue, 7)
        XCTAssertEqual((d["d"] as? NSNumber)?.doubleValue, 0.1)
        XCTAssertEqual((d["big"] as? NSNumber)?.doubleValue, 1e300)
        XCTAssertTrue(d["nan"] is NSNull, "non-finite numbers are not JSON")
        XCTAssertTrue(d["inf"] is NSNull)
        XCTAssertEqual(d["t"] as? Bool, true)
        XCTAssertEqual(d["f"] as? Bool, false)
        XCTAssertTrue(d["n"] is NSNull)
        XCTAssertEqual(d["types"] as? [String], ["a", "b\"c", ""])
        XCTAssertEqual((d["empty"] as? [Any])?.count, 0)
        let o = d["o"] as? [String: Any]
        XCTAssertEqual((o?["x"] as? NSNumber)?.intValue, 1)
        XCTAssertEqual((o?["y"] as? NSNumber)?.intValue, 2)
        XCTAssertEqual((o?["inner"] as? [String: Any])?.count, 0)
        XCTAssertEqual((d["raw"] as? [Any])?.count, 2)
        XCTAssertEqual(d["last"] as? String, "z")
        XCTAssertEqual(d.count, 19)
    }

    func testEmptyObjectAndArray() {
        var w = JSONWriter()
        XCTAssertEqual(w.finish(), Array("{}".utf8))
        XCTAssertEqual(JSONWriter.array([]), Array("[]".utf8))
    }

    func testRandomStringsAlwaysRoundTrip() {
        var rng = FuzzTests.RNG(seed: 9)
        for _ in 0..<500 {
            var s = ""
            for _ in 0..<Int.random(in: 0...30, using: &rng) {
                let v: UInt32 = switch Int.random(in: 0..<4, using: &rng) {
                case 0: UInt32.random(in: 0..<0x20, using: &rng)
                case 1: [0x22, 0x5C, 0x2F, 0x7F].randomElement(using: &rng)!
                case 2: UInt32.random(in: 0x20..<0x7F, using: &rng)
                default: UInt32.random(in: 0xA0...0x10FFFF, using: &rng)
                }
                if let u = UnicodeScalar(v) { s.unicodeScalars.append(u) }
            }
            var w = JSONWriter()
            w.field("k", s)
            XCTAssertEqual(parse(w.finish())?["k"] as? String, s, s.debugDescription)
        }
    }
}
