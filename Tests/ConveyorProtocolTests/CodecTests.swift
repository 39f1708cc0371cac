import XCTest
import ConveyorCore
@testable import ConveyorProtocol

/// Rules of the spec the vectors do not pin down on their own.
final class CodecTests: XCTestCase {
    private func f(_ parts: String...) -> [[UInt8]] { parts.map { Array($0.utf8) } }

    /// The ProtocolError code `body` throws, nil if it throws nothing.
    private func code(_ body: () throws -> Void) -> String? {
        do { try body() } catch let e as ProtocolError { return e.code } catch { return "not a ProtocolError: \(error)" }
        return nil
    }

    private func submit(_ options: String...) throws(ProtocolError) -> TaskSpec {
        let frames = f("CVYC01", "SUBMIT", "r", "pdf", "1", "", "x") + options.map { Array($0.utf8) }
        guard case .submit(_, let spec) = try ClientRequest.decode(frames) else { fatalError("not a submit") }
        return spec
    }

    func testNumbersFollowSection3_1() throws {
        XCTAssertEqual(Frames.decimal(Array("0".utf8)), 0)
        XCTAssertEqual(Frames.decimal(Array("007".utf8)), 7)
        XCTAssertEqual(Frames.decimal(Array("9223372036854775807".utf8)), UInt64(Int64.max))
        XCTAssertEqual(Frames.decimal(Array(("000000000000" + "9223372036854775807").utf8)), UInt64(Int64.max),
                       "leading zeros are ignored, whatever their number")
        for bad in ["", "9223372036854775808", "18446744073709551616", "99999999999999999999", "-1", "+1", " 1", "1 ", "1.0", "1e3", "0x1"] {
            XCTAssertNil(Frames.decimal(Array(bad.utf8)), bad)
        }
    }

    func testSubmitOptions() throws {
        let s = try submit("max_attempts=100", "idempotency_key=a=b=c", "delay_ms=31536000000", "backoff_ms=0", "backoff_max_ms=10")
        XCTAssertEqual(s.maxAttempts, 100)
        XCTAssertEqual(s.idempotencyKey, "a=b=c", "split at the first '='")
        XCTAssertEqual(s.delayMs, 31_536_000_000)
        XCTAssertEqual(s.backoffMs, 0)
        XCTAssertEqual(s.backoffMaxMs, 10)
        XCTAssertEqual(try submit("run_at_ms=1721036400000").runAt, 1_721_036_400_000_000)
        let defaults = try submit()
        XCTAssertEqual(defaults, TaskSpec(type: "pdf", priority: .normal, payload: Array("x".utf8)))
    }

    /// Numbers without a range in the table are bounded by 2^63−1 only.
    func testUnboundedOptionsAcceptUpTo2p63AndSaturate() throws {
        let max = "9223372036854775807"
        let s = try submit("run_at_ms=\(max)", "backoff_ms=\(max)", "backoff_max_ms=86400001")
        XCTAssertEqual(s.runAt, Int64.max / 1000 * 1000)
        XCTAssertEqual(s.backoffMs, UInt32.max)
        XCTAssertEqual(s.backoffMaxMs, 86_400_001)
        XCTAssertEqual(code { _ = try submit("run_at_ms=9223372036854775808") }, "bad_request")
        // Saturated values still round-trip.
        let again = try ClientRequest.decode(ClientRequest.submit(requestID: [], spec: s).encode())
        XCTAssertEqual(again, .submit(requestID: [], spec: s))
    }

    func testDuplicateOptionKeysAreBadRequestsEvenWithEqualValues() {
        XCTAssertEqual(code { _ = try submit("delay_ms=5", "delay_ms=5") }, "bad_request")
        XCTAssertEqual(code { _ = try submit("idempotency_key=a", "max_attempts=2", "idempotency_key=a") }, "bad_request")
        XCTAssertNil(code { _ = try submit("delay_ms=5", "run_at_ms=5") })
    }

    func testOpaqueIdempotencyKeysSurviveExactly() throws {
        // Two invalid-UTF-8 keys must not collapse into the same replacement text.
        let k1: [UInt8] = [0xff, 0x01], k2: [UInt8] = [0xfe, 0x01]
        func spec(_ key: [UInt8]) throws -> TaskSpec {
            let frames = f("CVYC01", "SUBMIT", "r", "pdf", "1", "", "x") + [Array("idempotency_key=".utf8) + key]
            guard case .submit(_, let s) = try ClientRequest.decode(frames) else { throw ProtocolError("x", "y") }
            return s
        }
        let s1 = try spec(k1), s2 = try spec(k2)
        XCTAssertNotEqual(s1.idempotencyKey, s2.idempotencyKey)
        for (key, s) in [(k1, s1), (k2, s2)] {
            let frames = ClientRequest.submit(requestID: [], spec: s).encode()
            XCTAssertEqual(frames.last, Array("idempotency_key=".utf8) + key)
        }
        // Text keys are kept as text; text that looks like the escape is escaped itself.
        XCTAssertEqual(try spec(Array("order-42".utf8)).idempotencyKey, "order-42")
        let tricky = Array((Frames.opaqueMarker + "ff01").utf8)
        let s3 = try spec(tricky)
        XCTAssertNotEqual(s3.idempotencyKey, s1.idempotencyKey)
        XCTAssertEqual(Frames.opaqueBytes(s3.idempotencyKey!), tricky)
    }

    func testTasksLimit() throws {
        XCTAssertEqual(try ClientRequest.decode(f("CVYC01", "TASKS", "t", "1")), .tasks(requestID: Array("t".utf8), limit: 1))
        XCTAssertEqual(try ClientRequest.decode(f("CVYC01", "TASKS", "t", "")), .tasks(requestID: Array("t".utf8), limit: 100))
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "TASKS", "t", "0")) }, "bad_request")
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "TASKS", "t", "10001")) }, "bad_request")
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "TASKS", "t")) }, "bad_request")
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "TASKS", "t", "5", "")) }, "bad_request")
    }

    /// §3.4: an unknown command is classified before the frame count is looked at.
    func testCheckOrder() {
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "FROB")) }, "unknown_command")
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "PING")) }, "bad_request")
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01")) }, "bad_request")
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC07")) }, "unsupported_version")
        XCTAssertEqual(code { _ = try ClientReply.decode(f("CVYC01", "WELCOME")) }, "unknown_command")
        XCTAssertEqual(code { _ = try WorkerMessage.decode(f("CVYW01", "READY")) }, "bad_request")
        XCTAssertEqual(code { _ = try WorkerMessage.decode(f("CVYW01")) }, "bad_request")
        XCTAssertEqual(code { _ = try BrokerToWorker.decode(f("CVYW01", "NOPE")) }, "unknown_command")
        XCTAssertEqual(code { _ = try WorkerMessage.decode(f("CVYW0", "READY")) }, "unsupported_version")
    }

    /// The broker addresses its ERROR with `requestID`: present when readable (§5.1).
    func testErrorsCarryTheRequestIDWhenReadable() {
        func rid(_ frames: [[UInt8]]) -> [UInt8]?? {
            do { _ = try ClientRequest.decode(frames) } catch { return .some(error.requestID) }
            return .none
        }
        XCTAssertEqual(rid(f("CVYC02", "PING", "p1")), .some(Array("p1".utf8)), "unsupported_version echoes frame 2")
        XCTAssertEqual(rid(f("CVYC01", "FROB", "r1")), .some(Array("r1".utf8)))
        XCTAssertEqual(rid(f("CVYC01", "STATUS", "s1", "nope")), .some(Array("s1".utf8)))
        XCTAssertEqual(rid(f("CVYC01", "PING", String(repeating: "R", count: 65))), .some(nil))
        XCTAssertEqual(rid(f("CVYC02", "PING", String(repeating: "R", count: 65))), .some(nil))
        XCTAssertEqual(rid(f("CVYC01", "FROB")), .some(nil))
    }

    func testDeadCommand() throws {
        let r = Array("d".utf8)
        XCTAssertEqual(try ClientRequest.decode(f("CVYC01", "DEAD", "d", "list", "")), .dead(requestID: r, action: .list(limit: 100)))
        XCTAssertEqual(try ClientRequest.decode(f("CVYC01", "DEAD", "d", "list", "0")), .dead(requestID: r, action: .list(limit: 0)))
        XCTAssertEqual(try ClientRequest.decode(f("CVYC01", "DEAD", "d", "purge", "")), .dead(requestID: r, action: .purge(nil)))
        XCTAssertEqual(try ClientRequest.decode(f("CVYC01", "DEAD", "d", "retry", "0190f3c2a1b20001")),
                       .dead(requestID: r, action: .retry(TaskID(raw: 0x0190_f3c2_a1b2_0001))))
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "DEAD", "d", "list")) }, "bad_request", "frame 4 is required")
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "DEAD", "d", "list", "10001")) }, "bad_request")
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "DEAD", "d", "retry", "")) }, "bad_request")
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "DEAD", "d", "forget", "")) }, "bad_request")
        XCTAssertNoThrow(try ClientReply.decode(f("CVYC01", "DEAD", "d", "{\"purged\":1}")))
    }

    func testTaskIDsAreLowercaseOnTheWire() {
        XCTAssertNoThrow(try ClientRequest.decode(f("CVYC01", "STATUS", "s", "0123456789abcdef")))
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "STATUS", "s", "0123456789ABCDEF")) }, "bad_request")
        XCTAssertEqual(code { _ = try WorkerMessage.decode(f("CVYW01", "DONE", "0123456789abcdeF", "1", "")) }, "bad_request")
        XCTAssertEqual(code { _ = try ClientRequest.decode(f("CVYC01", "STATUS", "s", "+123456789abcdef")) }, "bad_request")
    }

    func testBrokerToWorkerFieldRanges() {
        let id = "0190f3c2a1b20001"
        XCTAssertEqual(code { _ = try BrokerToWorker.decode(f("CVYW01", "TASK", id, "1", "pdf", "2", "0", "x")) }, "bad_request")
        XCTAssertEqual(code { _ = try BrokerToWorker.decode(f("CVYW01", "TASK", id, "1", "pdf", "2", "604800001", "x")) }, "bad_request")
        XCTAssertNoThrow(try BrokerToWorker.decode(f("CVYW01", "TASK", id, "1", "pdf", "2", "604800000", "x")))
        XCTAssertEqual(code { _ = try BrokerToWorker.decode(f("CVYW01", "TASK", id, "1", "p df", "2", "1", "x")) }, "bad_request")
        XCTAssertEqual(code { _ = try BrokerToWorker.decode(f("CVYW01", "CANCEL", id, "1", "")) }, "bad_request")
    }

    func testRepliesValidateStates() {
        let id = "0190f3c2a1b20001"
        for s in ["succeeded", "failed", "timed_out", "cancelled"] {
            XCTAssertNoThrow(try ClientReply.decode(f("CVYC01", "FINISHED", id, s, "")), s)
            XCTAssertEqual(code { _ = try ClientReply.decode(f("CVYC01", "CANCELLED", "c", id, s)) }, "bad_request", s)
        }
        for s in ["queued", "delayed", "running"] {
            XCTAssertNoThrow(try ClientReply.decode(f("CVYC01", "CANCELLED", "c", id, s)), s)
            XCTAssertEqual(code { _ = try ClientReply.decode(f("CVYC01", "FINISHED", id, s, "")) }, "bad_request", s)
        }
        XCTAssertEqual(code { _ = try ClientReply.decode(f("CVYC01", "PONG", String(repeating: "R", count: 65))) }, "bad_request")
        // Unknown codes are the client's to treat as generic failures, not malformed.
        XCTAssertNoThrow(try ClientReply.decode(f("CVYC01", "ERROR", "r", "some_future_code", "")))
    }

    func testEveryMessageRoundTrips() throws {
        let id = TaskID(raw: 0x0190_f3c2_a1b2_0001)
        let requests: [ClientRequest] = [
            .submit(requestID: [0, 255], spec: TaskSpec(type: "a.b:c-d_e", priority: .urgent, payload: [0, 1, 255], timeoutMs: 604_800_000,
                                                        maxAttempts: 7, idempotencyKey: "k=v", runAt: 1_721_036_400_000_000, delayMs: 0,
                                                        backoffMs: 1, backoffMaxMs: 2)),
            .submit(requestID: [], spec: TaskSpec(type: "x")),
            .status(requestID: Array("s".utf8), id: id), .cancel(requestID: [], id: id), .stats(requestID: [1]),
            .tasks(requestID: [], limit: 10_000), .ping(requestID: Array(repeating: 82, count: 64)),
            .dead(requestID: [], action: .list(limit: 5)), .dead(requestID: [], action: .retry(id)),
            .dead(requestID: [], action: .purge(nil)), .dead(requestID: [], action: .purge(id)),
        ]
        for r in requests { XCTAssertEqual(try ClientRequest.decode(r.encode()), r) }
        let replies: [ClientReply] = [
            .accepted(requestID: [], id: id, position: 0), .rejected(requestID: [9], code: "queue_full", message: "full"),
            .status(requestID: [], json: Array("{}".utf8)), .cancelled(requestID: [], id: id, previous: "delayed"),
            .stats(requestID: [], json: []), .tasks(requestID: [], json: []), .dead(requestID: [], json: []), .pong(requestID: []),
            .error(requestID: [], code: "not_found", message: ""), .progress(id: id, percent: nil, message: "m"),
            .progress(id: id, percent: 100, message: ""), .finished(id: id, state: "timed_out", body: [0]),
        ]
        for r in replies { XCTAssertEqual(try ClientReply.decode(r.encode()), r) }
        let fromWorker: [WorkerMessage] = [
            .ready(name: "w", types: [], capacity: 1), .ready(name: "ü", types: ["a", "b.c"], capacity: 1024), .heartbeat,
            .progress(id: id, attempt: 65535, percent: 0, message: ""), .done(id: id, attempt: 1, result: []),
            .fail(id: id, attempt: 2, error: "e"), .drain, .returned(id: id, attempt: 3), .disconnect,
        ]
        for m in fromWorker { XCTAssertEqual(try WorkerMessage.decode(m.encode()), m) }
        let toWorker: [BrokerToWorker] = [
            .task(id: id, attempt: 1, type: "t", priority: .low, timeoutMs: 1, payload: []), .heartbeat,
            .cancel(id: id, attempt: 1, reason: "timed_out"), .disconnect,
        ]
        for m in toWorker { XCTAssertEqual(try BrokerToWorker.decode(m.encode()), m) }
        let e = EventMessage(topic: "task.queued", json: Array("{}".utf8))
        XCTAssertEqual(try EventMessage.decode(e.encode()), e)
    }

    func testTaskTypeValidation() {
        XCTAssertTrue(isValidTaskType("render.page"))
        XCTAssertTrue(isValidTaskType(String(repeating: "t", count: 64)))
        for bad in ["", String(repeating: "t", count: 65), "a b", "a/b", "é", "a,b", "a\n"] { XCTAssertFalse(isValidTaskType(bad), bad) }
    }
}
