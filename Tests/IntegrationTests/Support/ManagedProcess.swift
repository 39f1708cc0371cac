import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A child process started by a test: its output goes to files under a
/// temporary directory (kept on failure for reading), and it is killed by PID
/// when the test ends. Tests never kill anything they did not start.
final class ManagedProcess: @unchecked Sendable {
    let name: String
    let process = Process()
    let stdoutURL: URL
    let stderrURL: URL

    init(name: String, executable: String, arguments: [String], environment: [String: String] = [:], directory: URL) throws {
        self.name = name
        stdoutURL = directory.appendingPathComponent("\(name).out")
        stderrURL = directory.appendingPathComponent("\(name).err")
        FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
        FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.currentDirectoryURL = directory
        process.standardOutput = try FileHandle(forWritingTo: stdoutURL)
        process.standardError = try FileHandle(forWritingTo: stderrURL)
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }
    var stdout: String { (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }

    /// Waits until stdout has a line containing `text`; returns that line.
    func waitForLine(containing text: String, timeout: TimeInterval = 20) throws -> String {
        let line = try eventually(timeout: timeout, "\(name) to print '\(text)'\nstderr:\n\(stderr.suffix(2000))") {
            stdout.split(separator: "\n").first { $0.contains(text) }.map(String.init)
        }
        return line
    }

    /// Waits until stderr contains `text` (log lines are events tests can await).
    func waitForLog(_ text: String, timeout: TimeInterval = 20) throws {
        _ = try eventually(timeout: timeout, "\(name) to log '\(text)'\nstderr:\n\(stderr.suffix(2000))") {
            stderr.contains(text) ? true : nil
        }
    }

    func signal(_ sig: Int32) { if isRunning { kill(pid, sig) } }

    /// SIGKILL and reap.
    func kill9() {
        signal(SIGKILL)
        process.waitUntilExit()
    }

    /// Waits for exit and returns the status, or nil on timeout.
    @discardableResult
    func waitForExit(timeout: TimeInterval = 20) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// SIGTERM, then SIGKILL if it does not go.
    func stop() {
        guard isRunning else { return }
        signal(SIGTERM)
        if waitForExit(timeout: 10) == nil { kill9() }
    }
}

struct TimedOut: Error, CustomStringConvertible {
    let description: String
}

/// Polls `check` until it returns a value: waiting for an observable event
/// (a line, a state), never sleeping a fixed time and hoping.
func eventually<T>(timeout: TimeInterval = 20, _ what: @autoclosure () -> String, _ check: () throws -> T?) throws -> T {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if let v = try check() { return v }
        if Date() > deadline { throw TimedOut(description: "timed out after \(timeout)s waiting for \(what())") }
        usleep(20_000)
    }
}
