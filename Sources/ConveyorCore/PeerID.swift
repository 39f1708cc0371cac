/// A connected peer as the broker's ROUTER sees it: its routing id bytes.
/// Opaque to the core; adapters use it to address replies.
public struct PeerID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var description: String { bytes.map { String($0, radix: 16) }.joined() }
}
