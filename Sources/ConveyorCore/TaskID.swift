/// A task's identity: 64 bits shown as 16 lowercase hex digits.
///
/// The high bits come from the clock when the broker starts, so ids keep
/// increasing across restarts even without a journal, and sort by submission.
public struct TaskID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let raw: UInt64

    public init(raw: UInt64) { self.raw = raw }

    /// Parses exactly 16 hex digits (either case); anything else is nil.
    public init?(_ text: some StringProtocol) {
        // Not `UInt64(text, radix: 16)`: it also accepts a sign ("+00000000000000f").
        self.init(bytes: Array(text.utf8))
    }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        var v: UInt64 = 0
        for b in bytes {
            let d: UInt8
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = b &- UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = b &- UInt8(ascii: "a") &+ 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = b &- UInt8(ascii: "A") &+ 10
            default: return nil
            }
            v = v << 4 | UInt64(d)
        }
        raw = v
    }

    public static func < (a: TaskID, b: TaskID) -> Bool { a.raw < b.raw }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// The 16 ASCII bytes of the wire form, without going through String.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        var v = raw
        for i in stride(from: 15, through: 0, by: -1) {
            out[i] = TaskID.hexDigits[Int(v & 0xf)]
            v >>= 4
        }
        return out
    }

    public var description: String { String(decoding: bytes, as: UTF8.self) }
}

/// Hands out increasing ids: `max(clock-derived start, last id seen + 1)`.
public struct TaskIDGenerator: Sendable {
    private var next: UInt64

    /// - Parameters:
    ///   - now: the start time; its milliseconds fill the high bits.
    ///   - after: the largest id already handed out (from the journal), if any.
    public init(now: Timestamp, after last: TaskID? = nil) {
        let fromClock = UInt64(max(0, now / 1000)) << 16
        next = max(fromClock, (last?.raw ?? 0) &+ 1)
    }

    public mutating func make() -> TaskID {
        defer { next &+= 1 }
        return TaskID(raw: next)
    }
}
