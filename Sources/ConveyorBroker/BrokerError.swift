/// A broker that cannot start, said in one line for the operator.
public struct BrokerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
}
