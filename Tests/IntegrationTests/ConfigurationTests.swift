import Foundation
import XCTest

/// Configuration through the real binary: flag > environment > .env file >
/// default, `conveyor config --json`, `--version`, malformed files, and the
/// warnings about limits that silently cap a workload.
final class ConfigurationTests: ClusterTestCase {
    /// Runs the binary in the test's directory (where `./.env` is looked for) with extra environment.
    func run(_ args: [String], environment: [String: String] = [:]) throws -> ManagedProcess {
        let p = try cluster.launch("run-\(UUID().uuidString.prefix(6))", args, environment: environment)
        XCTAssertNotNil(p.waitForExit(timeout: 30), "\(args) did not finish")
        return p
    }

    func writeEnvFile(_ text: String, name: String = ".env") throws -> String {
        let url = cluster.directory.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    func testVersion() throws {
        for flag in ["--version", "-V"] {
            let p = try run([flag])
            XCTAssertEqual(p.process.terminationStatus, 0)
            XCTAssertEqual(p.stdout, "0.4.0\n")
        }
        let broker = try cluster.startBroker()
        XCTAssertEqual(try cluster.stats()["version"] as? String, "0.4.0")
        XCTAssertTrue(broker.stderr.contains("version=0.4.0"), "the broker logs its version at start:\n\(broker.stderr)")
    }

    func testPrecedenceFlagOverEnvironmentOverFileOverDefault() throws {
        _ = try writeEnvFile("""
        # this host
        ANALYSIS_QUEUE_MAX_SIZE=7
        MAX_CONCURRENT_ANALYSIS_TASKS=5
        export CONVEYOR_RESULT_TTL="600"
        CONVEYOR_API_TOKENS=s3cret-one,s3cret-two
        """)
        let environment = ["MAX_CONCURRENT_ANALYSIS_TASKS": "6"]
        func broker(_ extra: [String]) throws -> [String: Any] {
            let p = try cluster.launch("broker-\(UUID().uuidString.prefix(4))", ["broker", "--clients", "tcp://127.0.0.1:*", "--workers", "tcp://127.0.0.1:*",
                                                                                  "--events", "tcp://127.0.0.1:*", "--durability", "none"] + extra,
                                       environment: environment)
            let line = try p.waitForLine(containing: "conveyor broker ready")
            let clients = String(line.split(separator: " ").first { $0.hasPrefix("clients=") }?.dropFirst(8) ?? "")
            let r = try cluster.cli(["stats", "--broker", clients, "--json"])
            p.stop()
            return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]) ?? [:]
        }
        let fromFileAndEnv = try broker([])
        XCTAssertEqual(fromFileAndEnv["max_queue_size"] as? Int, 7, "file over default")
        XCTAssertEqual(fromFileAndEnv["max_workers"] as? Int, 6, "environment over file")
        let withFlags = try broker(["--max-running", "9", "--max-queue", "8"])
        XCTAssertEqual(withFlags["max_workers"] as? Int, 9, "flag over environment")
        XCTAssertEqual(withFlags["max_queue_size"] as? Int, 8, "flag over file")

        let config = try run(["config", "--json"], environment: environment)
        XCTAssertEqual(config.process.terminationStatus, 0, config.stderr)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(config.stdout.utf8)) as? [String: [String: Any]], config.stdout)
        for (name, entry) in obj {
            XCTAssertEqual(Set(entry.keys), ["value", "source"], name)
            XCTAssertTrue(["flag", "env", "file", "default"].contains(entry["source"] as? String ?? ""), name)
        }
        XCTAssertEqual(obj["ANALYSIS_QUEUE_MAX_SIZE"]?["value"] as? String, "7")
        XCTAssertEqual(obj["ANALYSIS_QUEUE_MAX_SIZE"]?["source"] as? String, "file")
        XCTAssertEqual(obj["MAX_CONCURRENT_ANALYSIS_TASKS"]?["value"] as? String, "6")
        XCTAssertEqual(obj["MAX_CONCURRENT_ANALYSIS_TASKS"]?["source"] as? String, "env")
        XCTAssertEqual(obj["CONVEYOR_RESULT_TTL"]?["value"] as? String, "600")
        XCTAssertEqual(obj["CONVEYOR_DURABILITY"]?["value"] as? String, "fsync")
        XCTAssertEqual(obj["CONVEYOR_DURABILITY"]?["source"] as? String, "default")
        XCTAssertTrue(obj["CONVEYOR_TASK_TYPES"]?["value"] is NSNull, "unset without a default is null")
        XCTAssertEqual(obj["CONVEYOR_API_TOKENS"]?["source"] as? String, "file")
        XCTAssertEqual(obj["CONVEYOR_API_TOKENS"]?["value"] as? String, "****** (2 values)")
        XCTAssertFalse(config.stdout.contains("s3cret"), "secrets are masked")
        XCTAssertEqual(obj["CONVEYOR_ENV_FILE"]?["value"] as? String, ".env")

        // --env-file (anywhere on the line) replaces ./.env; the text form shows the same sources.
        let other = try writeEnvFile("ANALYSIS_QUEUE_MAX_SIZE=42\n", name: "other.env")
        let text = try run(["config", "--env-file", other])
        XCTAssertTrue(text.stdout.split(separator: "\n").contains { $0.hasPrefix("ANALYSIS_QUEUE_MAX_SIZE ") && $0.contains(" 42 ") && $0.contains(" file ") },
                      text.stdout)
        XCTAssertTrue(text.stdout.split(separator: "\n").contains { $0.hasPrefix("MAX_CONCURRENT_ANALYSIS_TASKS ") && $0.contains(" default ") }, text.stdout)
        XCTAssertTrue(text.stdout.contains("CONVEYOR_ENV_FILE"), text.stdout)
    }

    func testMalformedOrMissingEnvFileIsAUsageError() throws {
        _ = try writeEnvFile("GOOD=1\n\nthis line is wrong\n")
        let bad = try run(["config"])
        XCTAssertEqual(bad.process.terminationStatus, 2)
        XCTAssertEqual(bad.stderr, "conveyor: .env:3: expected KEY=VALUE\n")
        let missing = try run(["config"], environment: ["CONVEYOR_ENV_FILE": "/nonexistent/conveyor.env"])
        XCTAssertEqual(missing.process.terminationStatus, 2)
        XCTAssertTrue(missing.stderr.contains("cannot read env file /nonexistent/conveyor.env"), missing.stderr)
    }

    func testLimitsThatCapAWorkloadAreLogged() throws {
        let broker = try cluster.startBroker(["--max-running", "1"])
        try cluster.startWorker(name: "cap-1")
        XCTAssertFalse(broker.stderr.contains("exceeds --max-running"))
        try cluster.startWorker(name: "cap-2")
        try broker.waitForLog("workers' total capacity 2 exceeds --max-running 1")
        try cluster.startWorker(name: "cap-3")
        _ = try eventually("the third worker's join logged") { broker.stderr.contains("worker=cap-3") ? true : nil }
        XCTAssertEqual(broker.stderr.components(separatedBy: "exceeds --max-running").count - 1, 1, "once per crossing")

        let zero = try cluster.startBroker(["--max-queue", "0"], name: "zero")
        try zero.waitForLog("--max-queue is 0")
        let help = try cluster.cli(["broker", "--help"])
        XCTAssertTrue(help.out.contains("1-100000") && help.out.contains("0-100000000"), "ranges in --help")
    }
}
