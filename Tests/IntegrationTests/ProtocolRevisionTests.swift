import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import Foundation
import XCTest
import ZeroMQ

/// Protocol 1.1 against a real broker process (spec §5.2, §5.13, §6.2–6.4):
/// `notify`, the long ACCEPTED only for clients that asked, SUBMIT_BATCH,
/// WELCOME, TASK_BATCH and DONE_BATCH — and that 1.0 peers see none of it.
final class ProtocolRevisionTests: ClusterTestCase {
    /// A hand-driven worker connection, for what the CLI worker does not show.
    private func rawWorker(_ ready: WorkerMessage) throws -> ZMQSocket {
        let w = try cluster.context.socket(.dealer)
        try w.connect(cluster.workers)
        try w.send(ready.encode())
        return w
    }

    private func next(_ s: ZMQSocket, _ what: String, skipHeartbeats: Bool = true) throws -> BrokerToWorker {
        try eventually(what) { () -> BrokerToWorker? in
            guard let m = try s.receive(dontWait: true) else { return nil }
            let decoded = try BrokerToWorker.decode(m)
            return skipHeartbeats && decoded == .heartbeat ? nil : decoded
        }
    }

    private func rawClient() throws -> ZMQSocket {
        let c = try cluster.context.socket(.dealer)
        try c.connect(cluster.clients)
        return c
    }

    /// The next reply, past any PROGRESS or FINISHED push.
    private func reply(_ c: ZMQSocket) throws -> [[UInt8]] {
        try eventually("a reply") { () -> [[UInt8]]? in
            guard let m = try c.receive(dontWait: true) else { return nil }
            return m.count > 1 && (m[1] == Array("FINISHED".utf8) || m[1] == Array("PROGRESS".utf8)) ? nil : m
        }
    }

    func testNotifyChoosesThePushes() throws {
        try cluster.startBroker()
        let w = try rawWorker(.ready(name: "fake", types: [], capacity: 1))
        guard case .welcome = try next(w, "WELCOME") else { return XCTFail("READY not answered with WELCOME") }
        let client = try cluster.client()
        var ids: [Notify: TaskID] = [:]
        for n in [Notify.all, .final, .none] {
            let id = try submit(client) { $0.notify = n }
            ids[n] = id
            guard case .task(let tid, let a, _, _, _, _) = try next(w, "TASK") else { return XCTFail("expected TASK") }
            XCTAssertEqual(tid, id)
            try w.send(WorkerMessage.progress(id: tid, attempt: a, percent: 50, message: "half").encode())
            try w.send(WorkerMessage.done(id: tid, attempt: a, result: Array("ok".utf8)).encode())
            try cluster.waitForState(id, "succeeded")
        }
        // Replies and pushes share the connection in order: after this reply, every push has arrived.
        _ = try client.call { .ping(requestID: $0) }
        var pushes: [String] = []
        while let n = try client.nextNotification(timeoutMs: 0) {
            switch n {
            case .progress(let id, _, _): pushes.append("progress \(id == ids[.all] ? "all" : id == ids[.final] ? "final" : "none")")
            case .finished(let id, _, _): pushes.append("finished \(id == ids[.all] ? "all" : id == ids[.final] ? "final" : "none")")
            default: XCTFail("unexpected \(n)")
            }
        }
        XCTAssertEqual(pushes, ["progress all", "finished all", "finished final"])
    }

    func testLongAcceptedOnlyForClientsThatSayNotify() throws {
        try cluster.startBroker()
        try cluster.startWorker(name: "w")
        let c = try rawClient()
        try c.send(["CVYC01", "SUBMIT", "r1", "t", "1", "", "x", "idempotency_key=k"].map { Array($0.utf8) })
        let old = try reply(c)
        XCTAssertEqual(old.count, 5, "a 1.0 SUBMIT gets the 1.0 ACCEPTED")
        guard case .accepted(_, let id, _, nil) = try ClientReply.decode(old) else { return XCTFail("not ACCEPTED: \(old)") }
        try cluster.waitForState(id, "succeeded")
        try c.send(["CVYC01", "SUBMIT", "r2", "t", "1", "", "x", "idempotency_key=k", "notify=none"].map { Array($0.utf8) })
        let again = try ClientReply.decode(try reply(c))
        XCTAssertEqual(again, .accepted(requestID: Array("r2".utf8), id: id, position: 0, info: Acceptance(duplicate: true, state: .succeeded)))
        try c.send(["CVYC01", "SUBMIT", "r3", "t", "1", "", "x", "notify=all"].map { Array($0.utf8) })
        guard case .accepted(_, let other, _, let info?) = try ClientReply.decode(try reply(c)) else { return XCTFail("no 1.1 ACCEPTED") }
        XCTAssertNotEqual(other, id)
        XCTAssertFalse(info.duplicate)
        XCTAssertEqual(try cluster.stats()["tasks_submitted"] as? Int, 2, "the duplicate is not counted")
    }

    func testSubmitBatchIsProcessedInOrderAcrossTheQueueBound() throws {
        try cluster.startBroker(["--max-queue", "3"])
        let client = try cluster.client()
        let specs = (0..<5).map { i in TaskSpec(type: "t", priority: .normal, payload: Array("p\(i)".utf8)) }
        guard case .submitted(_, let outcomes) = try client.call({ .submitBatch(requestID: $0, specs: specs) }) else {
            return XCTFail("SUBMIT_BATCH not answered with SUBMITTED")
        }
        XCTAssertEqual(outcomes.count, 5)
        var accepted: [TaskID] = []
        for (i, o) in outcomes.enumerated() {
            switch o {
            case .accepted(let id, let position, let info):
                XCTAssertLessThan(i, 3)
                XCTAssertEqual(position, i)
                XCTAssertEqual(info, Acceptance(duplicate: false, state: .queued))
                accepted.append(id)
            case .rejected(let code, _):
                XCTAssertGreaterThanOrEqual(i, 3)
                XCTAssertEqual(code, "queue_full")
            }
        }
        XCTAssertEqual(accepted.count, 3)
        // Malformed anywhere: one REJECTED for the whole batch and nothing enqueued.
        let c = try rawClient()
        try c.send(["CVYC01", "SUBMIT_BATCH", "b", "2", "u", "1", "", "", "0", "bad type", "1", "", "", "0"].map { Array($0.utf8) })
        guard case .rejected(_, let code, let message) = try ClientReply.decode(try reply(c)) else { return XCTFail("expected REJECTED") }
        XCTAssertEqual(code, "bad_request")
        XCTAssertTrue(message.contains("submission 1"), message)
        XCTAssertEqual(try cluster.stats()["queue_size"] as? Int, 3)
        for id in accepted { XCTAssertEqual(try cluster.status(id)["state"] as? String, "queued") }
    }

    func testBatchWorkerGetsTaskBatchesAndMaySendDoneBatch() throws {
        try cluster.startBroker(["--max-running", "8"])
        let w = try rawWorker(.ready(name: "batcher", types: [], capacity: 4, batch: 4))
        XCTAssertEqual(try next(w, "WELCOME", skipHeartbeats: false), .welcome(heartbeatMs: 200, liveness: 3),
                       "WELCOME comes first and carries the broker's settings")
        let client = try cluster.client()
        let specs = (0..<8).map { i in TaskSpec(type: "t", priority: .normal, payload: Array("p\(i)".utf8)) }
        guard case .submitted(_, let outcomes) = try client.call({ .submitBatch(requestID: $0, specs: specs) }) else { return XCTFail() }
        var results: [String: String] = [:]
        for round in 0..<2 {
            guard case .taskBatch(let tasks) = try next(w, "TASK_BATCH \(round)") else { return XCTFail("expected TASK_BATCH in round \(round)") }
            XCTAssertEqual(tasks.count, 4, "four free slots, four tasks in one message")
            try w.send(WorkerMessage.doneBatch(tasks.map { .init(id: $0.id, attempt: $0.attempt, result: $0.payload, cost: 1) }).encode())
        }
        for o in outcomes {
            guard case .accepted(let id, _, _) = o else { return XCTFail("\(o)") }
            try cluster.waitForState(id, "succeeded")
            results[id.description] = try cluster.status(id)["result"] as? String
        }
        XCTAssertEqual(Set(results.values), Set((0..<8).map { "p\($0)" }))

        // A worker that did not ask for batches gets TASK, one at a time.
        try w.send(WorkerMessage.disconnect.encode())
        let plain = try rawWorker(.ready(name: "plain", types: ["solo"], capacity: 2))
        guard case .welcome = try next(plain, "WELCOME") else { return XCTFail() }
        let two = [TaskSpec(type: "solo"), TaskSpec(type: "solo")]
        _ = try client.call { .submitBatch(requestID: $0, specs: two) }
        for _ in 0..<2 {
            guard case .task = try next(plain, "TASK") else { return XCTFail("a 1.0-style worker got something else") }
        }
    }

    /// §3.4 and §6.2: DISCONNECT answers our own header only; another version is dropped.
    func testForeignHeaderOnAnUnregisteredConnectionIsDropped() throws {
        try cluster.startBroker()
        let w = try cluster.context.socket(.dealer)
        try w.connect(cluster.workers)
        try w.send(["CVYW02", "HEARTBEAT"].map { Array($0.utf8) })
        try w.send(["CVYC01", "HEARTBEAT"].map { Array($0.utf8) })
        try w.send(["CVYW01", "HEARTBEAT"].map { Array($0.utf8) })
        XCTAssertEqual(try next(w, "DISCONNECT", skipHeartbeats: false), .disconnect)
        _ = try cluster.client().call { .ping(requestID: $0) }
        XCTAssertEqual(try cluster.stats()["malformed_messages"] as? Int, 2)
        XCTAssertNil(try w.receive(dontWait: true), "one DISCONNECT, for the CVYW01 message only")
    }

    /// The issue's case: a worker configured for much faster heartbeats than the
    /// broker's used to declare it dead and reconnect over and over.
    func testWorkerAdoptsTheBrokersHeartbeat() throws {
        let broker = try cluster.startBroker(["--heartbeat-interval", "1500", "--heartbeat-liveness", "3"])
        _ = broker
        let worker = try cluster.startWorker(name: "eager", ["--builtin", "sleep:3500"])
        try worker.waitForLog("using the broker's heartbeat")
        let client = try cluster.client()
        let id = try submit(client)
        // With its own 200 ms × 3 the worker would give the broker up within a
        // second and abandon the task; it runs to the end on its first attempt.
        try cluster.waitForState(id, "succeeded")
        XCTAssertEqual(try cluster.status(id)["attempt"] as? Int, 1)
        XCTAssertFalse(worker.stderr.contains("broker silent"), worker.stderr)
        XCTAssertEqual(try cluster.stats()["tasks_reassigned"] as? Int, 0)
    }

    /// The broker writes exactly the members ConveyorProtocol names (which
    /// ContractTests holds to the spec), for stats and for status objects.
    func testStatsAndStatusCarryTheContractMembers() throws {
        try cluster.startBroker()
        XCTAssertEqual(Set(try cluster.stats().keys), Set(StatsMember.allCases.map(\.rawValue)))
        let client = try cluster.client()
        let delayed = try submit(client) { $0.delayMs = 60_000 }
        let queued = try submit(client)
        for id in [delayed, queued] {
            let keys = Set(try cluster.status(id).keys)
            XCTAssertTrue(keys.isSubset(of: Set(StatusMember.allCases.map(\.rawValue))), "\(keys)")
            XCTAssertFalse(keys.contains("worker"), "worker is omitted unless running")
        }
        XCTAssertTrue(try cluster.status(delayed).keys.contains("run_at"))
    }

    /// §7.3: `attempt` is the dispatches so far *when the event happened*, even
    /// when the task was queued and dispatched in the same loop turn.
    func testEventAttemptsAreThoseOfTheirMoment() throws {
        try cluster.startBroker()
        let log = EventLog(try cluster.subscribe(["task."]))
        try cluster.startWorker(name: "w")
        // The subscription must have reached the broker before the task exists.
        let probe = try submit(try cluster.client())
        _ = try log.waitFor("the probe's events") { $0.topic == "task.succeeded" && $0.taskID == probe }
        let id = try submit(try cluster.client())
        let queued = try log.waitFor("task.queued") { $0.topic == "task.queued" && $0.taskID == id }
        let started = try log.waitFor("task.started") { $0.topic == "task.started" && $0.taskID == id }
        let done = try log.waitFor("task.succeeded") { $0.topic == "task.succeeded" && $0.taskID == id }
        XCTAssertEqual(queued.json["attempt"] as? Int, 0)
        XCTAssertEqual(started.json["attempt"] as? Int, 1)
        XCTAssertEqual(done.json["attempt"] as? Int, 1)
    }
}
