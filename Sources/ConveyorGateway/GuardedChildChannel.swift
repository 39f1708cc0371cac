import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// Hummingbird's HTTP/1 + WebSocket child channel, with the gateway's connection
/// accounting and a `RequestHeadGuard` added to each connection's pipeline.
///
/// Why a wrapper rather than a fork: Hummingbird builds the pipeline, and this
/// only counts the connection in `ConnectionGuard` (until its channel closes),
/// inserts the guard after NIO's HTTP decoder, and closes the channel when
/// Hummingbird is done with it — a failed upgrade negotiation otherwise left the
/// descriptor open for as long as the peer kept it.
struct GuardedChildChannel<Inner: ServerChildChannel>: ServerChildChannel {
    struct Value: ServerChildChannelValue {
        let inner: Inner.Value
        var channel: any Channel { inner.channel }
    }

    let inner: Inner
    let connections: ConnectionGuard
    let onMalformed: @Sendable () -> Void

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let connections = self.connections
        connections.opened()
        channel.closeFuture.whenComplete { _ in connections.closed() }
        let timeout = TimeAmount.nanoseconds(Int64(connections.firstRequestTimeoutSeconds * 1e9))
        let onMalformed = self.onMalformed
        return inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let pipeline = channel.pipeline.syncOperations
            let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try pipeline.addHandler(RequestHeadGuard(timeout: timeout, onRefused: onMalformed), position: .after(decoder))
            return Value(inner: value)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value.inner, logger: logger)
        value.channel.close(promise: nil)
    }
}
