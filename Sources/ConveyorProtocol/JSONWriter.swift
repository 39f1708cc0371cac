/// Writes a JSON object straight into bytes. The broker publishes events and
/// stats with it: no Foundation, no Codable, no intermediate dictionaries.
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []
    private var needsComma: [Bool] = [false]

    public init(capacity: Int = 256) {
        bytes.reserveCapacity(capacity)
        bytes.append(UInt8(ascii: "{"))
    }

    private mutating func key(_ k: String) {
        if needsComma[needsComma.count - 1] { bytes.append(UInt8(ascii: ",")) }
        needsComma[needsComma.count - 1] = true
        appendString(k)
        bytes.append(UInt8(ascii: ":"))
    }

    public mutating func field(_ k: String, _ v: String) {
        key(k)
        appendString(v)
    }

    public mutating func field(_ k: String, _ v: String?) {
        key(k)
        if let v { appendString(v) } else { bytes.append(contentsOf: "null".utf8) }
    }

    public mutating func field(_ k: String, _ v: some BinaryInteger) {
        key(k)
        bytes.append(contentsOf: String(v).utf8)
    }

    public mutating func field(_ k: String, _ v: Int?) {
        key(k)
        bytes.append(contentsOf: (v.map { String($0) } ?? "null").utf8)
    }

    public mutating func field(_ k: String, _ v: Double) {
        key(k)
        let s = v.isFinite ? String(v) : "null"
        bytes.append(contentsOf: s.utf8)
    }

    public mutating func field(_ k: String, _ v: Bool) {
        key(k)
        bytes.append(contentsOf: (v ? "true" : "false").utf8)
    }

    public mutating func fieldNull(_ k: String) {
        key(k)
        bytes.append(contentsOf: "null".utf8)
    }

    /// Embeds already-encoded JSON (an object or array).
    public mutating func field(_ k: String, raw: [UInt8]) {
        key(k)
        bytes.append(contentsOf: raw)
    }

    public mutating func field(_ k: String, strings: [String]) {
        key(k)
        bytes.append(UInt8(ascii: "["))
        for (i, s) in strings.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            appendString(s)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    public mutating func beginObject(_ k: String) {
        key(k)
        bytes.append(UInt8(ascii: "{"))
        needsComma.append(false)
    }

    public mutating func endObject() {
        needsComma.removeLast()
        bytes.append(UInt8(ascii: "}"))
    }

    /// Closes the top-level object and returns the bytes.
    public mutating func finish() -> [UInt8] {
        bytes.append(UInt8(ascii: "}"))
        return bytes
    }

    private static let hex = Array("0123456789abcdef".utf8)

    private mutating func appendString(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [92, 34])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [92, 92])
            case 10: bytes.append(contentsOf: [92, UInt8(ascii: "n")])
            case 13: bytes.append(contentsOf: [92, UInt8(ascii: "r")])
            case 9: bytes.append(contentsOf: [92, UInt8(ascii: "t")])
            case 0..<32:
                bytes.append(contentsOf: [92, UInt8(ascii: "u"), 48, 48, JSONWriter.hex[Int(b >> 4)], JSONWriter.hex[Int(b & 15)]])
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// Joins already-encoded objects into a JSON array.
    public static func array(_ items: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "[")]
        for (i, it) in items.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: it)
        }
        out.append(UInt8(ascii: "]"))
        return out
    }
}
