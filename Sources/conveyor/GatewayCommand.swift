import ArgumentParser
import ConveyorClient
import ConveyorGateway
import Foundation
import Logging
import ZeroMQ

struct GatewayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Run the HTTP gateway: the REST API, live task streams, metrics and the dashboard over the broker.",
        discussion: """
        Prints one line 'conveyor gateway ready http://HOST:PORT' on stdout once listening (--port 0: an \
        ephemeral port, the line shows the real one). Bearer tokens come from CONVEYOR_API_TOKENS \
        (comma-separated); without any, authentication is off. Request bodies above \
        CONVEYOR_MAX_PAYLOAD_BYTES (default 10485760) are refused with 413.
        """
    )

    @Option(help: "Address to listen on (env CONVEYOR_GATEWAY_HOST, default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on, 0-65535, 0 for an ephemeral one (env CONVEYOR_GATEWAY_PORT, default 8001).") var port: Int?
    @OptionGroup var broker: BrokerEndpointOption
    @Option(help: "The broker's event endpoint (env CONVEYOR_EVENTS_ENDPOINT, default tcp://127.0.0.1:5557).") var events: String?
    @Option(help: "Republish the broker's events on this XPUB endpoint, e.g. tcp://127.0.0.1:5558 (env CONVEYOR_EVENTS_OUT; default: off).")
    var eventsOut: String?
    @Option(help: "Milliseconds to wait for the broker before answering 503, 10-600000 (env CONVEYOR_GATEWAY_TIMEOUT_MS, default 5000).")
    var brokerTimeout: Int?
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        var config = GatewayConfig()
        config.host = host ?? env("CONVEYOR_GATEWAY_HOST") ?? "127.0.0.1"
        guard !config.host.isEmpty, !config.host.contains(where: { $0.isWhitespace || $0 == "/" }) else {
            throw ValidationError("--host '\(config.host)' is not a host name or address")
        }
        config.port = try setting(port, "CONVEYOR_GATEWAY_PORT", 8001, range: 0...65535)
        config.maxPayloadBytes = try setting(nil, "CONVEYOR_MAX_PAYLOAD_BYTES", 10 * 1024 * 1024, range: 1...(256 * 1024 * 1024))
        config.brokerTimeoutMs = try setting(brokerTimeout, "CONVEYOR_GATEWAY_TIMEOUT_MS", 5000, range: 10...600_000)
        config.apiTokens = (env("CONVEYOR_API_TOKENS") ?? "").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let brokerEndpoint = try broker.endpoint
        let eventsEndpoint = try validateEndpoint(events ?? env("CONVEYOR_EVENTS_ENDPOINT") ?? "tcp://127.0.0.1:5557", "--events")
        let eventsOutEndpoint = try (eventsOut ?? env("CONVEYOR_EVENTS_OUT")).map { try validateEndpoint($0, "--events-out") }

        let logger = try logging.bootstrap("conveyor.gateway")
        if config.apiTokens.isEmpty {
            logger.warning("CONVEYOR_API_TOKENS is not set: every route is open to anyone who can reach the gateway")
        }
        var clientConfig = AsyncBrokerClient.Configuration(endpoint: brokerEndpoint, eventsEndpoint: eventsEndpoint,
                                                           eventsOutEndpoint: eventsOutEndpoint)
        clientConfig.timeoutMs = config.brokerTimeoutMs
        let client: AsyncBrokerClient
        do {
            client = try AsyncBrokerClient(context: ZMQContext(), configuration: clientConfig)
        } catch {
            logger.critical("cannot open the broker connection: \(error)")
            throw ExitCode(1)
        }
        let gateway = Gateway(config: config, transport: client)
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
