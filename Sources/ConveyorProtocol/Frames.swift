import ConveyorCore

/// Frame-level helpers shared by every command's codec: ASCII decimals,
/// bounded strings and field validation, all without going through Foundation.
enum Frames {
    static let clientHeader: [UInt8] = Array("CVYC01".utf8)
    static let workerHeader: [UInt8] = Array("CVYW01".utf8)

    /// Unsigned ASCII decimal (§3.1): one or more digits, leading zeros ignored,
    /// at most 2^63−1; nil for empty, non-digits or anything larger.
    static func decimal(_ f: [UInt8]) -> UInt64? {
        if f.isEmpty { return nil }
        let limit = UInt64(Int64.max)
        var v: UInt64 = 0
        for b in f {
            guard b >= 48 && b <= 57 else { return nil }
            let d = UInt64(b - 48)
            guard v <= (limit - d) / 10 else { return nil }
            v = v * 10 + d
        }
        return v
    }

    static func decimal(_ f: [UInt8], in range: ClosedRange<UInt64>, _ what: String, _ rid: [UInt8]?) throws(ProtocolError) -> UInt64 {
        guard let v = decimal(f), range.contains(v) else {
            throw .bad("\(what) must be a decimal number in \(range.lowerBound)...\(range.upperBound), got '\(printable(f))'", rid)
        }
        return v
    }

    static func ascii(_ n: some BinaryInteger) -> [UInt8] { Array(String(n).utf8) }

    static func string(_ f: [UInt8]) -> String { String(decoding: f, as: UTF8.self) }

    /// For error messages: at most 40 bytes, non-printables escaped.
    static func printable(_ f: [UInt8]) -> String {
        var s = ""
        for b in f.prefix(40) { s += (b >= 32 && b < 127) ? String(UnicodeScalar(b)) : "\\x" + String(b, radix: 16) }
        return f.count > 40 ? s + "…" : s
    }

    static func isTypeByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "-"):
            true
        default: false
        }
    }

    /// Task types: 1–64 bytes of `[A-Za-z0-9_.:-]`.
    static func taskType(_ f: [UInt8], _ rid: [UInt8]?) throws(ProtocolError) -> String {
        guard !f.isEmpty, f.count <= 64, f.allSatisfy(isTypeByte) else {
            throw .bad("type must be 1-64 characters of [A-Za-z0-9_.:-], got '\(printable(f))'", rid)
        }
        return string(f)
    }

    static func isValidType(_ s: String) -> Bool {
        let u = Array(s.utf8)
        return !u.isEmpty && u.count <= 64 && u.allSatisfy(isTypeByte)
    }

    /// Exactly 16 *lowercase* hex digits (§3.2); `TaskID(bytes:)` also takes upper case.
    static func taskID(_ f: [UInt8], _ rid: [UInt8]?) throws(ProtocolError) -> TaskID {
        guard f.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }), let id = TaskID(bytes: f) else {
            throw .bad("task_id must be 16 lowercase hex digits, got '\(printable(f))'", rid)
        }
        return id
    }

    /// A request_id that an error reply can echo: present and at most 64 bytes (§5.1).
    static func readableRequestID(_ frames: [[UInt8]]) -> [UInt8]? {
        frames.count > 2 && frames[2].count <= 64 ? frames[2] : nil
    }

    /// Opaque bytes (§3.1) carried in a `String` field without loss: valid UTF-8
    /// is kept as is; anything else (or text that starts with the marker) becomes
    /// the marker U+FFFE followed by the bytes in hex. `String(decoding:)` alone
    /// would map different invalid keys to the same replacement characters.
    static func opaqueString(_ f: [UInt8]) -> String {
        if let s = String(validating: f, as: UTF8.self), !s.hasPrefix(opaqueMarker) { return s }
        var out = opaqueMarker
        for b in f { out += String(hexDigit(b >> 4)) + String(hexDigit(b & 15)) }
        return out
    }

    /// The inverse of `opaqueString`.
    static func opaqueBytes(_ s: String) -> [UInt8] {
        guard s.hasPrefix(opaqueMarker) else { return Array(s.utf8) }
        let hex = Array(s.utf8.dropFirst(opaqueMarker.utf8.count))
        var out: [UInt8] = []
        out.reserveCapacity(hex.count / 2)
        var i = 0
        while i + 1 < hex.count, let hi = hexValue(hex[i]), let lo = hexValue(hex[i + 1]) {
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    static let opaqueMarker = "\u{FFFE}"

    private static func hexDigit(_ v: UInt8) -> Character { Character(UnicodeScalar(v < 10 ? 48 + v : 87 + v)) }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 48...57: b - 48
        case 97...102: b - 87
        default: nil
        }
    }

    static func priority(_ f: [UInt8], _ rid: [UInt8]?) throws(ProtocolError) -> Priority {
        guard f.count == 1, let p = Priority(rawValue: f[0] &- 48), f[0] >= 48 else {
            throw .bad("priority must be one digit 0-3, got '\(printable(f))'", rid)
        }
        return p
    }

    static func attempt(_ f: [UInt8]) throws(ProtocolError) -> UInt16 {
        UInt16(try decimal(f, in: 1...UInt64(UInt16.max), "attempt", nil))
    }

    /// Empty, or 0–100.
    static func percent(_ f: [UInt8], _ rid: [UInt8]?) throws(ProtocolError) -> UInt8? {
        if f.isEmpty { return nil }
        return UInt8(try decimal(f, in: 0...100, "percent", rid))
    }

    static func expect(_ frames: [[UInt8]], count: ClosedRange<Int>, _ command: String, _ rid: [UInt8]?) throws(ProtocolError) {
        guard count.contains(frames.count) else {
            let want = count.lowerBound == count.upperBound ? "\(count.lowerBound)" : "\(count.lowerBound)-\(count.upperBound)"
            throw .bad("\(command) takes \(want) frames, got \(frames.count)", rid)
        }
    }

    /// §3.4 steps 1 and 2: the header, then at least a command frame.
    static func checkHeader(_ frames: [[UInt8]], _ header: [UInt8], requestID: [UInt8]? = nil) throws(ProtocolError) {
        guard let first = frames.first else { throw .bad("empty message") }
        if first != header {
            if first.count >= 4 && Array(first.prefix(4)) == Array(header.prefix(4)) {
                throw ProtocolError("unsupported_version", "this broker speaks \(string(header)), not \(printable(first))", requestID: requestID)
            }
            throw .bad("first frame must be the protocol header \(string(header))")
        }
        guard frames.count >= 2 else { throw .bad("missing command frame", requestID) }
    }
}

/// Task types as the protocol allows them: 1–64 bytes of `[A-Za-z0-9_.:-]`.
public func isValidTaskType(_ s: String) -> Bool { Frames.isValidType(s) }
