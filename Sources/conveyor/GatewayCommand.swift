import ArgumentParser
import ConveyorClient
import ConveyorGateway
import ConveyorProtocol
import Foundation
import Logging
import ConveyorTransport
import ZeroMQ

struct GatewayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Run the HTTP gateway: the REST API, live task streams, metrics and the dashboard over the broker.",
        discussion: """
        Prints one line 'conveyor gateway ready http://HOST:PORT' on stdout once listening (--port 0: an \
        ephemeral port, the line shows the real one). Bearer tokens come from CONVEYOR_API_TOKENS \
        (comma-separated); without any, authentication is off and only requests whose Host is the \
        listening address, localhost, 127.0.0.1 or [::1] (or one of --allowed-hosts) are answered. \
        Request bodies and task payloads above --max-payload are refused with 413 before they reach \
        the broker. At start the gateway raises its open-file soft limit to the hard limit; beyond \
        --max-connections open connections requests are answered 503.
        """
    )

    @Option(help: "Address to listen on (env CONVEYOR_GATEWAY_HOST, default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on, 0-65535, 0 for an ephemeral one (env CONVEYOR_GATEWAY_PORT, default 8001).") var port: Int?
    @OptionGroup var broker: BrokerEndpointOption
    @Option(help: "The broker's event endpoint, or every broker's, comma-separated (env CONVEYOR_EVENTS_ENDPOINT, default tcp://127.0.0.1:5557).") var events: String?
    @Option(help: "Republish the broker's events on this XPUB endpoint, e.g. tcp://127.0.0.1:5558 (env CONVEYOR_EVENTS_OUT; default: off).")
    var eventsOut: String?
    @Option(help: "Milliseconds to wait for the broker before answering 503, 10-600000 (env CONVEYOR_GATEWAY_TIMEOUT_MS, default 5000).")
    var brokerTimeout: Int?
    @Option(help: "Tokens file: one 'name scope+scope sha256hex' per line, see 'conveyor token new' (env CONVEYOR_TOKENS_FILE).")
    var tokensFile: String?
    @Flag(help: "GET /api/queue/stats needs a read token too (default: open, for the seed-compatible clients).")
    var privateStats = false
    @Option(help: "Allowlist directory for --events-out subscribers (DIR/subscribers/*.key, DIR/admins/*.key); the republisher serves with --curve-key (env CONVEYOR_CURVE_DIR).")
    var curveDir: String?
    @Flag(help: "Allow --events-out on a non-loopback endpoint without CURVE.") var insecure = false
    @Option(help: "The broker's payload limit in bytes, 1-268435456: larger bodies and task payloads (uploads after base64) get 413 (env CONVEYOR_MAX_PAYLOAD_BYTES, the broker's setting; default 10485760).")
    var maxPayload: Int?
    @Option(help: "Seconds before an idle connection (or one that sends no request) is closed, 1-86400 (env CONVEYOR_IDLE_TIMEOUT, default 60).")
    var idleTimeout: Int?
    @Option(help: "Open connections beyond which requests get 503 overloaded, 1-1000000 (env CONVEYOR_MAX_CONNECTIONS; default: the open-file limit less 256).")
    var maxConnections: Int?
    @Option(help: "Host names (comma-separated, optionally name:port; '*' for any) answered without tokens besides the listening address, localhost, 127.0.0.1 and [::1] (env CONVEYOR_ALLOWED_HOSTS).")
    var allowedHosts: String?
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        var config = GatewayConfig()
        config.host = host ?? env("CONVEYOR_GATEWAY_HOST") ?? "127.0.0.1"
        guard !config.host.isEmpty, !config.host.contains(where: { $0.isWhitespace || $0 == "/" }) else {
            throw ValidationError("--host '\(config.host)' is not a host name or address")
        }
        config.port = try setting(port, "CONVEYOR_GATEWAY_PORT", 8001, range: 0...65535)
        config.maxPayloadBytes = try setting(maxPayload, "CONVEYOR_MAX_PAYLOAD_BYTES", PayloadLimits.defaultMaxPayloadBytes,
                                             range: 1...PayloadLimits.maxConfigurablePayloadBytes)
        config.idleTimeoutSeconds = Double(try setting(idleTimeout, "CONVEYOR_IDLE_TIMEOUT", 60, range: 1...86_400))
        if maxConnections != nil || env("CONVEYOR_MAX_CONNECTIONS") != nil {
            config.maxConnections = try setting(maxConnections, "CONVEYOR_MAX_CONNECTIONS", 0, range: 1...1_000_000)
        }
        config.allowedHosts = (allowedHosts ?? env("CONVEYOR_ALLOWED_HOSTS") ?? "").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        config.brokerTimeoutMs = try setting(brokerTimeout, "CONVEYOR_GATEWAY_TIMEOUT_MS", 5000, range: 10...600_000)
        config.privateStats = privateStats
        do {
            var all: [APIToken] = []
            if let list = env("CONVEYOR_API_TOKENS") { all += try APITokens(environment: list).tokens }
            if let path = tokensFile ?? env("CONVEYOR_TOKENS_FILE") {
                guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read the tokens file \(path)") }
                all += try APITokens(file: String(decoding: data, as: UTF8.self), path: path).tokens
            }
            config.tokens = APITokens(all)
        } catch let e as TokenParseError {
            throw ValidationError(e.description)
        }
        let brokerEndpoints = try broker.endpoints
        let curveKeys = try broker.curve.keys
        // Every broker's event endpoint when there are several: only the active one publishes.
        let eventsEndpoint = try validateEndpoints(events ?? env("CONVEYOR_EVENTS_ENDPOINT") ?? "tcp://127.0.0.1:5557", "--events")
            .joined(separator: ",")
        let eventsOutEndpoint = try (eventsOut ?? env("CONVEYOR_EVENTS_OUT")).map { try validateEndpoint($0, "--events-out") }

        let logger = try logging.bootstrap("conveyor.gateway")
        // Before anything opens descriptors: the connection limits are sized from the result.
        if let (before, after) = FileDescriptorLimit.raiseSoftToHard() {
            if after.soft > before.soft {
                logger.info("raised the open-file limit from \(before.soft) to \(after.soft) (the hard limit)")
            }
            if after.soft < 4096 {
                logger.warning("the open-file limit is \(after.soft) (hard \(after.hard)): few connections fit; raise LimitNOFILE / ulimit -Hn")
            }
        }
        if config.tokens?.isEnabled != true {
            logger.warning("no API tokens (CONVEYOR_API_TOKENS, --tokens-file): every route is open to anyone who can reach the gateway")
        }
        var clientConfig = AsyncBrokerClient.Configuration(endpoints: brokerEndpoints, eventsEndpoint: eventsEndpoint,
                                                           eventsOutEndpoint: eventsOutEndpoint)
        clientConfig.timeoutMs = config.brokerTimeoutMs
        clientConfig.security = curveKeys?.security ?? .none
        let context = ZMQContext()
        var zap: ZAPHandler?
        if let out = eventsOutEndpoint {
            if let dir = curveDir ?? env("CONVEYOR_CURVE_DIR") {
                guard let curveKeys, let secret = curveKeys.own.secretKey else {
                    throw ValidationError("--curve-dir needs --curve-key: the event republisher serves with the gateway's own key")
                }
                do {
                    let allow = try CurveDirectory(path: dir, serverCertificate: curveKeys.own)
                    let handler = ZAPHandler(context: context, directory: allow, logger: logger)
                    try handler.start() // before the republisher binds
                    zap = handler
                } catch {
                    logger.critical("cannot use the CURVE directory \(dir): \(error)")
                    throw ExitCode(1)
                }
                clientConfig.eventsOutSecurity = .curveServer(secretKey: secret, zapDomain: PeerRole.subscriber.zapDomain)
            } else if !EndpointRule.isLocal(out) && !insecure {
                writeErr("conveyor: " + EndpointRule.refusal(out, flag: "--events-out"))
                throw ExitCode(2)
            }
        }
        let client: AsyncBrokerClient
        do {
            client = try AsyncBrokerClient(context: context, configuration: clientConfig)
        } catch {
            logger.critical("cannot open the broker connection: \(error)")
            throw ExitCode(1)
        }
        let gateway = Gateway(config: config, transport: client)
        logger.info("connection limits", metadata: [
            "idle_timeout_s": "\(Int(config.idleTimeoutSeconds))", "shed_above": "\(gateway.connections.shedAbove)",
            "accept_cap": "\(gateway.connections.acceptCap)", "max_payload": "\(config.maxPayloadBytes)",
        ])
        let outLine = client.eventsOutBound.map { " events-out=\($0)" } ?? ""
        let outcome = RunOutcome()
        let done = DispatchSemaphore(value: 0)
        Task {
            do {
                try await gateway.run(logger: logger) { host, port in
                    emit("conveyor gateway ready http://\(host):\(port)\(outLine)")
                }
            } catch {
                outcome.set(error)
            }
            done.signal()
        }
        done.wait()
        client.shutdown()
        zap?.stop()
        if let error = outcome.error {
            logger.critical("gateway stopped: \(error)")
            throw ExitCode(1)
        }
    }
}

/// Carries the server's failure from its task back to the waiting main thread.
private final class RunOutcome: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: (any Error)?
    func set(_ e: any Error) { lock.lock(); stored = e; lock.unlock() }
    var error: (any Error)? { lock.lock(); defer { lock.unlock() }; return stored }
}
