import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import Foundation
import XCTest
import ZeroMQ

/// The gateway's transport against scripted ZeroMQ peers on loopback: request
/// multiplexing, fail-fast when unreachable, timeouts, and event routing.
final class AsyncBrokerClientTests: XCTestCase {
    let context = ZMQContext()

    /// A ROUTER on an ephemeral loopback port, served by its own thread until `stop`.
    final class ScriptedBroker: Sendable {
        let endpoint: String
        private let stopped = Locked(false)
        private let done = DispatchSemaphore(value: 0)

        /// `answer` gets each request; nil means "never answer". PINGs are answered at
        /// once; replies to other requests are held until `batch` of them are ready and
        /// then sent in reverse order, to prove matching by request id.
        init(context: ZMQContext, batch: Int = 1, answer: @escaping @Sendable (ClientRequest) -> ClientReply?) throws {
            // The socket is created, used and closed by the serving thread only.
            let bound = Locked<Result<String, ZMQError>?>(nil)
            let ready = DispatchSemaphore(value: 0)
            let done = self.done
            let stopped = self.stopped
            Thread {
                let router: ZMQSocket
                do {
                    router = try context.socket(.router)
                    try router.bind("tcp://127.0.0.1:*")
                    bound.set(.success(try router.lastEndpoint()))
                } catch {
                    bound.set(.failure(error as? ZMQError ?? ZMQError(errno: 0, operation: "\(error)")))
                    ready.signal()
                    done.signal()
                    return
                }
                ready.signal()
                var poller = ZMQPoller()
                poller.add(router)
                var held: [[[UInt8]]] = []
                while !stopped.get() {
                    guard (try? poller.poll(timeoutMs: 20))?.first == true else { continue }
                    while let m = try? router.receive(dontWait: true) {
                        guard m.count > 1, let req = try? ClientRequest.decode(Array(m[1...])), let reply = answer(req) else { continue }
                        if case .ping = req {
                            _ = try? router.send([m[0]] + reply.encode())
                            continue
                        }
                        held.append([m[0]] + reply.encode())
                        if held.count >= batch {
                            for r in held.reversed() { _ = try? router.send(r) }
                            held.removeAll()
                        }
                    }
                }
                router.close()
                done.signal()
            }.start()
            ready.wait()
            switch bound.get() {
            case .success(let e)?: endpoint = e
            case .failure(let e)?: throw e
            case nil: throw ZMQError(errno: 0, operation: "scripted broker did not start")
            }
        }

        func stop() {
            stopped.set(true)
            done.wait()
        }
    }

    func testUnreachableBrokerFailsFast() async throws {
        // Nothing listens on port 1 of loopback.
        let client = try AsyncBrokerClient(context: context, configuration: .init(endpoint: "tcp://127.0.0.1:1"))
        defer { client.shutdown() }
        let start = Date()
        do {
            _ = try await client.call(timeoutMs: 5000) { .ping(requestID: $0) }
            XCTFail("expected notConnected")
        } catch ClientError.notConnected {
            XCTAssertLessThan(Date().timeIntervalSince(start), 1.0, "ZMQ_IMMEDIATE must make this immediate")
        }
    }

    func testManyConcurrentCallsShareOneSocketAndMatchTheirReplies() async throws {
        let broker = try ScriptedBroker(context: context, batch: 10) { req in
            switch req {
            case .ping(let r): return .pong(requestID: r)
            case .status(let r, let id): return .status(requestID: r, json: Array("{\"task_id\":\"\(id)\"}".utf8))
            default: return .error(requestID: req.requestID, code: "bad_request", message: "")
            }
        }
        defer { broker.stop() }
        let client = try AsyncBrokerClient(context: context, configuration: .init(endpoint: broker.endpoint))
        defer { client.shutdown() }
        // Wait for the connection (ZMQ_IMMEDIATE refuses sends until it exists).
        let deadline = Date().addingTimeInterval(10)
        while true {
            do {
                _ = try await client.call(timeoutMs: 2000) { .ping(requestID: $0) }
                break
            } catch ClientError.notConnected where Date() < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        // 200 concurrent calls, answered in batches of 10 in reverse order.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 1...200 {
                group.addTask {
                    let id = TaskID(raw: UInt64(i))
                    let reply = try await client.call(timeoutMs: 10_000) { .status(requestID: $0, id: id) }
                    guard case .status(_, let json) = reply else { return XCTFail("\(reply)") }
                    XCTAssertEqual(String(decoding: json, as: UTF8.self), "{\"task_id\":\"\(id)\"}")
                }
            }
            try await group.waitForAll()
        }
    }

    func testUnansweredRequestTimesOut() async throws {
        let broker = try ScriptedBroker(context: context) { _ in nil }
        defer { broker.stop() }
        let client = try AsyncBrokerClient(context: context, configuration: .init(endpoint: broker.endpoint))
        defer { client.shutdown() }
        let deadline = Date().addingTimeInterval(10)
        while true {
            let start = Date()
            do {
                _ = try await client.call(timeoutMs: 200) { .ping(requestID: $0) }
                return XCTFail("no reply expected")
            } catch ClientError.timeout(_, let ms) {
                XCTAssertEqual(ms, 200)
                XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.19)
                return
            } catch ClientError.notConnected where Date() < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
        }
    }

    func testTaskSubscriptionsEndWithTheirReader() async throws {
        let client = try AsyncBrokerClient(context: context, configuration: .init(endpoint: "tcp://127.0.0.1:1"))
        defer { client.shutdown() }
        do {
            let s = client.updates(for: TaskID(raw: 7))
            XCTAssertEqual(client.taskSubscriberCount, 1)
            _ = s
        }
        XCTAssertEqual(client.taskSubscriberCount, 0, "dropping the stream unsubscribes")
        let s2 = client.updates(for: TaskID(raw: 8))
        let reader = Task { for await _ in s2 {} }
        XCTAssertEqual(client.taskSubscriberCount, 1)
        reader.cancel()
        _ = await reader.value
        XCTAssertEqual(client.taskSubscriberCount, 0, "cancelling the reader unsubscribes")
    }

    /// Synchronous on purpose: the test's own sockets stay on one thread.
    func testEventsAreRoutedByTaskAndRepublished() throws {
        let pub = try context.socket(.xpub)
        try pub.bind("tcp://127.0.0.1:*")
        let eventsEndpoint = try pub.lastEndpoint()
        var config = AsyncBrokerClient.Configuration(endpoint: "tcp://127.0.0.1:1", eventsEndpoint: eventsEndpoint,
                                                     eventsOutEndpoint: "tcp://127.0.0.1:*")
        config.topics = ["task.", "stats"]
        let client = try AsyncBrokerClient(context: context, configuration: config)
        defer { client.shutdown() }
        let out = try XCTUnwrap(client.eventsOutBound)
        XCTAssertFalse(out.hasSuffix(":*"))
        let downstream = try context.socket(.sub)
        try downstream.connect(out)
        try downstream.subscribe("task.progress")

        let id = TaskID(raw: 0x0190_f3c2_a1b2_0001)
        let updates = client.updates(for: id)
        let other = client.updates(for: TaskID(raw: 2))
        let event = Array("{\"event\":\"progress\",\"task_id\":\"\(id)\",\"percent\":50,\"message\":\"half\"}".utf8)
        let received = Locked<TaskUpdate?>(nil)
        let got = Task { () -> TaskUpdate? in
            for await u in updates {
                received.set(u)
                return u
            }
            return nil
        }
        let otherGot = Locked(false)
        let otherReader = Task { for await _ in other { otherGot.set(true) } }
        // Publish until the subscription has propagated (slow joiner), bounded.
        var republished: [[UInt8]]?
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            _ = try? pub.receive(dontWait: true) // subscription messages
            try pub.send([Array("task.progress".utf8), event])
            try pub.send([Array("worker.joined".utf8), Array("{}".utf8)])
            if republished == nil, let m = try downstream.receive(dontWait: true) { republished = m }
            if republished != nil, received.get() != nil { break }
            usleep(20_000)
        }
        got.cancel()
        XCTAssertEqual(received.get(), .event(BrokerEvent(topic: Array("task.progress".utf8), json: event)))
        XCTAssertEqual(republished, [Array("task.progress".utf8), event], "the raw stream is republished on --events-out")
        otherReader.cancel()
        XCTAssertFalse(otherGot.get(), "events go only to subscribers of their task")
        downstream.close()
        pub.close()
    }
}

final class Locked<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func get() -> T { lock.lock(); defer { lock.unlock() }; return value }
    func set(_ v: T) { lock.lock(); value = v; lock.unlock() }
}
