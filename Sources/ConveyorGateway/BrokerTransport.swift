import ConveyorClient
import ConveyorCore
import ConveyorProtocol

/// What the gateway needs from the broker, as a protocol so router tests can run
/// the real routes against a fake broker (no processes, no sockets).
///
/// `AsyncBrokerClient` is the production implementation.
public protocol BrokerTransport: Sendable {
    /// The broker's client endpoint, for error messages.
    var brokerEndpoint: String { get }
    /// One request/reply exchange; throws `ClientError` when the broker is unreachable or silent.
    func call(timeoutMs: Int?, _ make: ([UInt8]) -> ClientRequest) async throws -> ClientReply
    /// Events and FINISHED notifications for one task, from now on.
    func updates(for id: TaskID) -> AsyncStream<TaskUpdate>
    /// The event stream, filtered by topic prefix.
    func events(prefixes: [String], buffer: Int) -> AsyncStream<BrokerEvent>
}

extension AsyncBrokerClient: BrokerTransport {
    public var brokerEndpoint: String { configuration.endpoint }
}
