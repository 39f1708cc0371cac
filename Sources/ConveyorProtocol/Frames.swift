import ConveyorCore

/// Frame-level helpers shared by every command's codec: ASCII decimals,
/// bounded strings and field validation, all without going through Foundation.
enum Frames {
    static let clientHeader: [UInt8] = Array("CVYC01".utf8)
    static let workerHeader: [UInt8] = Array("CVYW01".utf8)

    /// Unsigned ASCII decimal; nil for empty, non-digits or overflow.
    static func decimal(_ f: [UInt8]) -> UInt64? {
        if f.isEmpty || f.count > 19 { return nil }
        var v: UInt64 = 0
        for b in f {
            guard b >= 48 && b <= 57 else { return nil }
            v = v * 10 + UInt64(b - 48)
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

    static func taskID(_ f: [UInt8], _ rid: [UInt8]?) throws(ProtocolError) -> TaskID {
        guard let id = TaskID(bytes: f) else { throw .bad("task_id must be 16 hex digits, got '\(printable(f))'", rid) }
        return id
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

    static func checkHeader(_ frames: [[UInt8]], _ header: [UInt8]) throws(ProtocolError) {
        guard let first = frames.first else { throw .bad("empty message") }
        if first == header { return }
        if first.count >= 4 && Array(first.prefix(4)) == Array(header.prefix(4)) {
            throw ProtocolError("unsupported_version", "this broker speaks \(string(header)), not \(printable(first))")
        }
        throw .bad("first frame must be the protocol header \(string(header))")
    }
}

/// Task types as the protocol allows them: 1–64 bytes of `[A-Za-z0-9_.:-]`.
public func isValidTaskType(_ s: String) -> Bool { Frames.isValidType(s) }
