import ArgumentParser

struct GatewayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gateway", abstract: "Run the HTTP gateway (not yet available).")
    func run() throws { throw ValidationError("the gateway is not built yet") }
}
