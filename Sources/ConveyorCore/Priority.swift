/// The four levels web apps already use. Higher raw value = dispatched first.
public enum Priority: UInt8, CaseIterable, Sendable, Comparable, CustomStringConvertible {
    case low = 0, normal = 1, high = 2, urgent = 3

    public static func < (a: Priority, b: Priority) -> Bool { a.rawValue < b.rawValue }

    /// Upper-case name as the REST API and logs show it ("HIGH").
    public var name: String {
        switch self {
        case .low: "LOW"
        case .normal: "NORMAL"
        case .high: "HIGH"
        case .urgent: "URGENT"
        }
    }

    public var description: String { name }

    /// Accepts what users type: `0`–`3` or a name in any case.
    public init?(parsing text: String) {
        switch text.lowercased() {
        case "0", "low": self = .low
        case "1", "normal": self = .normal
        case "2", "high": self = .high
        case "3", "urgent": self = .urgent
        default: return nil
        }
    }

    /// Levels from the one dispatched first to the one dispatched last.
    public static let dispatchOrder: [Priority] = [.urgent, .high, .normal, .low]
}
