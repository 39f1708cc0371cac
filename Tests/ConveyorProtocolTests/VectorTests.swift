import Foundation
import XCTest
import ConveyorCore
@testable import ConveyorProtocol

/// Every vector of proto/vectors.json through the matching codec (spec §16).
final class VectorTests: XCTestCase {
    /// Valid vectors whose frames are not what the encoder writes for the same
    /// message (the decoder must still accept them).
    static let nonCanonical: Set<String> = [
        "submit delayed, leading zeros accepted", // "007", "0005000"
        "tasks default limit", // empty limit frame; decodes to the default 100, re-encoded as "100"
        "done unknown option ignored (1.1)", // input only: the unknown option is dropped
        "ready unknown option ignored (1.1)", // likewise
    ]

    static let directions = ["client->broker", "broker->client", "worker->broker", "broker->worker", "events"]

    private var vectors: (valid: [Vector], invalid: [Vector]) { get throws { try VectorFile.load() } }

    func testFileIsWellFormedAndCoversEveryCommand() throws {
        let (valid, invalid) = try vectors
        XCTAssertGreaterThan(valid.count, 50)
        XCTAssertGreaterThan(invalid.count, 50)
        let names = (valid + invalid).map(\.name)
        XCTAssertEqual(Set(names).count, names.count, "vector names are unique")
        for v in valid + invalid { XCTAssertTrue(Self.directions.contains(v.direction), "\(v.name): direction \(v.direction)") }
        for v in valid { XCTAssertNotNil(v.decoded, v.name); XCTAssertNil(v.error, v.name) }
        for v in invalid {
            XCTAssertNil(v.decoded, v.name)
            XCTAssertTrue(["bad_request", "unsupported_version", "unknown_command"].contains(v.error ?? ""), "\(v.name): \(v.error ?? "nil")")
        }
        // Every command of §4 in every direction has at least one valid vector.
        let expected: [String: Set<String>] = [
            "client->broker": ["SUBMIT", "SUBMIT_BATCH", "STATUS", "CANCEL", "STATS", "TASKS", "PING", "DEAD", "TYPE"],
            "broker->client": ["ACCEPTED", "REJECTED", "SUBMITTED", "STATUS", "CANCELLED", "STATS", "TASKS", "PONG", "ERROR", "PROGRESS", "FINISHED"],
            "worker->broker": ["READY", "HEARTBEAT", "PROGRESS", "DONE", "DONE_BATCH", "FAIL", "DRAIN", "RETURN", "RETRY_LATER", "DISCONNECT"],
            "broker->worker": ["WELCOME", "TASK", "TASK_BATCH", "CANCEL", "HEARTBEAT", "DISCONNECT"],
        ]
        for (direction, commands) in expected {
            let covered = Set(valid.filter { $0.direction == direction }.compactMap { v -> String? in
                guard case .object(let o) = v.decoded, case .bytes(let c) = o["command"] else { return nil }
                return String(decoding: c, as: UTF8.self)
            })
            XCTAssertTrue(covered.isSuperset(of: commands), "\(direction): no valid vector for \(commands.subtracting(covered).sorted())")
        }
        // And each invalid classification on each endpoint where it can happen.
        for e in ["bad_request", "unsupported_version", "unknown_command"] {
            XCTAssertTrue(invalid.contains { $0.error == e && $0.direction == "client->broker" }, e)
            XCTAssertTrue(invalid.contains { $0.error == e && $0.direction == "worker->broker" }, e)
        }
    }

    func testEveryValidVectorDecodesToItsFields() throws {
        for v in try vectors.valid {
            let result: (value: Value, encoded: [[UInt8]])
            do { result = try decode(v.direction, v.frames) } catch {
                XCTFail("\(v.name): \(error)")
                continue
            }
            XCTAssertEqual(result.value, expectation(v), v.name)
        }
    }

    func testEveryCanonicalValidVectorReEncodesToTheSameFrames() throws {
        let valid = try vectors.valid
        for name in Self.nonCanonical { XCTAssertTrue(valid.contains { $0.name == name }, "stale exception: \(name)") }
        for v in valid {
            guard let (value, encoded) = try? decode(v.direction, v.frames) else { continue } // reported above
            if Self.nonCanonical.contains(v.name) {
                XCTAssertNotEqual(encoded, v.frames, "\(v.name) is canonical after all")
            } else {
                XCTAssertEqual(encoded, v.frames, v.name)
            }
            // Whatever the input, the re-encoding decodes to the same message.
            XCTAssertEqual(try? decode(v.direction, encoded).value, value, v.name)
        }
    }

    func testJSONFramesAreJSONObjects() throws {
        for v in try vectors.valid {
            guard case .object(let o) = v.decoded, case .bytes(let json) = o["json"] else { continue }
            let parsed = try? JSONSerialization.jsonObject(with: Data(json))
            XCTAssertTrue(parsed is [String: Any], "\(v.name): not a JSON object")
            if v.direction == "events" {
                XCTAssertEqual(v.frames.count, 2, v.name)
                XCTAssertFalse(v.frames[0].isEmpty, v.name)
                let d = parsed as? [String: Any]
                XCTAssertNotNil(d?["ts"] ?? d?["timestamp"], "\(v.name): no time")
            }
        }
    }

    func testEveryInvalidVectorIsRejectedWithItsCode() throws {
        for v in try vectors.invalid {
            do {
                let decoded = try decode(v.direction, v.frames)
                XCTFail("\(v.name): decoded as \(decoded.value), expected \(v.error ?? "?")")
            } catch let e as ProtocolError {
                XCTAssertEqual(e.code, v.error, "\(v.name): \(e.message)")
                XCTAssertFalse(e.message.isEmpty, v.name)
            } catch {
                XCTFail("\(v.name): threw \(error), not a ProtocolError")
            }
        }
    }

    /// The vector's `decoded` in the codec's terms: option values are numbers
    /// where the spec says so, and an empty TASKS limit is the default 100.
    private func expectation(_ v: Vector) -> Value? {
        guard case .object(var o) = v.decoded else { return v.decoded }
        func numeric(_ o: inout [String: Value]) {
            guard case .object(var options) = o["options"] else { return }
            for (k, raw) in options where numericOptions.contains(k) {
                if case .bytes(let b) = raw, let n = Int(String(decoding: b, as: UTF8.self)) { options[k] = .int(n) }
            }
            o["options"] = .object(options)
        }
        numeric(&o)
        if case .list(let subs) = o["submissions"] {
            o["submissions"] = .list(subs.map { sub in
                guard case .object(var so) = sub else { return sub }
                numeric(&so)
                return .object(so)
            })
        }
        if o["command"] == .string("TASKS"), v.direction == "client->broker", o["limit"] == .null { o["limit"] = .int(100) }
        return .object(o)
    }
}
