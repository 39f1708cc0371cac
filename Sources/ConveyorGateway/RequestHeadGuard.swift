import NIOCore
import NIOHTTP1

/// Sits right after NIO's HTTP decoder on every connection and takes care of the
/// first request head, which nothing else in the pipeline does:
///
/// * a connection that does not produce a complete request head within the
///   first-request timeout (silent, or a slow trickle of header bytes) is closed;
/// * bytes that do not parse as HTTP/1.1 before that head (a TLS ClientHello, a
///   header over the size or count limits) are answered 400 with the API's JSON
///   error, and the connection is closed.
///
/// Why: until the first head, the connection belongs to the WebSocket upgrade
/// handler, which neither answers a parse error nor times out; Hummingbird's idle
/// timeout and its own 400 only start after it. Both exits tell the upgrade handler
/// that input is over first, so it ends its negotiation quietly.
final class RequestHeadGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let timeout: TimeAmount
    private let onRefused: @Sendable () -> Void
    private var sawHead = false
    private var finished = false
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount, onRefused: @escaping @Sendable () -> Void) {
        self.timeout = timeout
        self.onRefused = onRefused
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loop = context.eventLoop.assumeIsolated()
        timer = loop.scheduleTask(in: timeout) { [self] in
            timer = nil
            guard !sawHead, !finished else { return }
            finished = true
            end(context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if finished { return }
        if !sawHead, case .head = unwrapInboundIn(data) {
            sawHead = true
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if finished { return } // the decoder repeats itself for data after its error
        guard !sawHead, error is HTTPParserError || error is ByteToMessageDecoderError else {
            context.fireErrorCaught(error)
            return
        }
        finished = true
        onRefused()
        let body = APIError.badRequest("the request is not HTTP/1.1 this gateway can parse (\(error)); the connection is closed",
                                       field: nil).json
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(body.count)")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { [self] _ in
            end(context)
        }
    }

    /// Tells the handlers after this one that input is over, then closes.
    private func end(_ context: ChannelHandlerContext) {
        context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        context.close(promise: nil)
    }
}
