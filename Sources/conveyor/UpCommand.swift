import ArgumentParser
import Foundation

/// The embedded default: the whole system as child processes on loopback,
/// stopped together by Ctrl-C.
struct UpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start a broker, workers and the gateway on loopback in one command (Ctrl-C stops all)."
    )

    @Option(help: "Workers to start.") var workers: Int = 2
    @Option(help: "Shell command the workers run per task (default: a demo that reports progress and echoes the payload).")
    var exec: String = "echo \"10 started $TASK_TYPE\" >&3; sleep 1; echo \"60 working\" >&3; sleep 1; printf 'processed %s: ' \"$TASK_TYPE\"; cat"
    @Option(help: "Journal directory.") var dataDir: String = "./data"
    @Option(help: "Gateway port.") var port: Int = 8001
    @Flag(help: "Do not start the HTTP gateway.") var noGateway = false

    func run() throws {
        let me = CommandLine.arguments[0].contains("/") ? URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
            : (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var children: [Process] = []
        func launch(_ args: [String]) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: me)
            p.arguments = args
            try p.run()
            children.append(p)
        }
        try launch(["broker", "--data-dir", dataDir, "--max-running", "\(max(3, workers))"])
        for i in 1...max(1, workers) {
            try launch(["worker", "--broker", "tcp://127.0.0.1:5556", "--name", "worker-\(i)", "--exec", exec])
        }
        if !noGateway {
            try launch(["gateway", "--port", "\(port)", "--broker", "tcp://127.0.0.1:5555", "--events", "tcp://127.0.0.1:5557",
                        "--events-out", "tcp://127.0.0.1:5558"])
        }
        emit("conveyor up: broker tcp://127.0.0.1:5555 (clients) :5556 (workers) :5557 (events); \(workers) workers"
              + (noGateway ? "" : "; gateway http://127.0.0.1:\(port)") + ". Ctrl-C stops all.")
        let done = DispatchSemaphore(value: 0)
        onTerminationSignal { done.signal() }
        // Also stop if any child dies on its own.
        let watched = children
        let watcher = Thread {
            while watched.allSatisfy({ $0.isRunning }) { Thread.sleep(forTimeInterval: 0.2) }
            done.signal()
        }
        watcher.start()
        done.wait()
        // Workers first so they return their tasks to a live broker, then the rest.
        for p in children.reversed() where p.isRunning { p.terminate() }
        let deadline = Date().addingTimeInterval(10)
        while children.contains(where: { $0.isRunning }) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        for p in children where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        emit("conveyor up: stopped")
    }
}
