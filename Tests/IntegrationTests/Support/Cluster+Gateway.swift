import Foundation
import XCTest

/// A running `conveyor gateway` started by a test.
struct GatewayHandle {
    let process: ManagedProcess
    let port: Int
    /// The bound `--events-out` endpoint, when one was asked for.
    let eventsOut: String?
    var http: GatewayHTTPClient { GatewayHTTPClient(port: port) }
    var baseURL: String { "http://127.0.0.1:\(port)" }
}

extension Cluster {
    /// Starts a gateway on an ephemeral loopback port in front of this cluster's
    /// broker and waits for its ready line. `tokens` become CONVEYOR_API_TOKENS.
    func startGateway(tokens: [String] = [], eventsOut: Bool = false, extra: [String] = [],
                      environment: [String: String] = [:], name: String = "gateway") throws -> GatewayHandle {
        var args = ["gateway", "--host", "127.0.0.1", "--port", "0", "--broker", clients, "--events", events]
        if eventsOut { args += ["--events-out", "tcp://127.0.0.1:*"] }
        var env = environment
        env["CONVEYOR_API_TOKENS"] = tokens.joined(separator: ",")
        let p = try launch(name, args + extra, environment: env)
        let line = try p.waitForLine(containing: "conveyor gateway ready")
        var port: Int?
        var out: String?
        for part in line.split(separator: " ") {
            if part.hasPrefix("http://"), let colon = part.lastIndex(of: ":") { port = Int(part[part.index(after: colon)...]) }
            if part.hasPrefix("events-out=") { out = String(part.dropFirst("events-out=".count)) }
        }
        guard let port else { throw TimedOut(description: "no port in gateway ready line '\(line)'") }
        return GatewayHandle(process: p, port: port, eventsOut: out)
    }

    /// Waits until the gateway has received events from the broker (its dashboard
    /// history has a stats snapshot), so its event subscription is live.
    func waitForGatewayEvents(_ gw: GatewayHandle, token: String? = nil) throws {
        _ = try eventually("gateway to receive broker events") { () -> Bool? in
            let r = try gw.http.json("GET", "/api/dashboard", token: token)
            return ((r.json["history"] as? [Any])?.isEmpty == false) ? true : nil
        }
    }
}
