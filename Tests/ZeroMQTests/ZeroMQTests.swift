import Foundation
import XCTest
@testable import ZeroMQ

/// The wrapper over real libzmq sockets (inproc and loopback TCP). Every wait
/// is a bounded poll on the socket itself, never a sleep.
final class ZeroMQTests: XCTestCase {
    private let ctx = ZMQContext()
    private var counter = 0

    private func endpoint() -> String {
        counter += 1
        return "inproc://zmq-tests-\(ObjectIdentifier(self).hashValue)-\(counter)"
    }

    /// Waits (bounded) until the socket is readable, then takes one message.
    private func receive(_ s: ZMQSocket, timeoutMs: Int = 5000, file: StaticString = #filePath, line: UInt = #line) throws -> [[UInt8]]? {
        var poller = ZMQPoller()
        poller.add(s)
        guard try poller.poll(timeoutMs: timeoutMs)[0] else {
            XCTFail("nothing arrived within \(timeoutMs) ms", file: file, line: line)
            return nil
        }
        let m = try s.receive(dontWait: true)
        XCTAssertNotNil(m, "poll said readable", file: file, line: line)
        return m
    }

    func testMultipartRoundTripKeepsEmptyFramesOverInproc() throws {
        let a = try ctx.socket(.pair), b = try ctx.socket(.pair)
        let ep = endpoint()
        try a.bind(ep)
        try b.connect(ep)
        let messages: [[[UInt8]]] = [
            [[]], [[], []], [[], [1, 2, 3], [], []], [Array("CVYC01".utf8), Array("PING".utf8), []],
            [[UInt8](repeating: 0xAB, count: 100_000), [0]], (0..<50).map { [UInt8($0)] },
        ]
        for m in messages {
            XCTAssertTrue(try a.send(m))
            XCTAssertEqual(try receive(b), m)
        }
        // Both directions.
        XCTAssertTrue(try b.send([[], [9]]))
        XCTAssertEqual(try receive(a), [[], [9]])
        XCTAssertEqual(a.type, .pair)
    }

    func testRouterDealerAddsAndRoutesByIdentity() throws {
        let router = try ctx.socket(.router), dealer = try ctx.socket(.dealer)
        let ep = endpoint()
        try router.bind(ep)
        try dealer.setRoutingID(Array("client-7".utf8))
        try dealer.connect(ep)
        XCTAssertTrue(try dealer.send([Array("CVYC01".utf8), [], Array("x".utf8)]))
        let got = try receive(router)
        XCTAssertEqual(got, [Array("client-7".utf8), Array("CVYC01".utf8), [], Array("x".utf8)],
                       "ROUTER prepends the identity; a DEALER adds no delimiter")
        try router.setRouterMandatory()
        XCTAssertTrue(try router.send([Array("client-7".utf8), Array("reply".utf8), []]))
        XCTAssertEqual(try receive(dealer), [Array("reply".utf8), []])
    }

    func testRouterMandatoryUnknownPeerIsHostUnreachable() throws {
        let router = try ctx.socket(.router)
        try router.bind(endpoint())
        try router.setRouterMandatory()
        for dontWait in [false, true] {
            do {
                try router.send([Array("nobody".utf8), Array("hello".utf8)], dontWait: dontWait)
                XCTFail("sending to an unknown peer must fail")
            } catch {
                XCTAssertTrue(error.isHostUnreachable, "\(error)")
                XCTAssertFalse(error.isAgain)
                XCTAssertFalse(error.description.isEmpty)
            }
        }
        // Without ROUTER_MANDATORY the message is silently dropped.
        try router.setRouterMandatory(false)
        XCTAssertTrue(try router.send([Array("nobody".utf8), Array("hello".utf8)]))
    }

    func testDontWaitReceiveOnAnEmptySocketIsNil() throws {
        let a = try ctx.socket(.pair), b = try ctx.socket(.pair)
        let ep = endpoint()
        try a.bind(ep)
        try b.connect(ep)
        XCTAssertNil(try a.receive(dontWait: true))
        XCTAssertNil(try b.receive(dontWait: true))
        try b.send([[1]])
        XCTAssertEqual(try receive(a), [[1]])
        XCTAssertNil(try a.receive(dontWait: true), "exactly one message was sent")
    }

    func testPollerReportsOnlyReadableItems() throws {
        let a = try ctx.socket(.pair), b = try ctx.socket(.pair)
        let ep = endpoint()
        try a.bind(ep)
        try b.connect(ep)
        let box = Mailbox<Int>()
        var poller = ZMQPoller()
        XCTAssertEqual(poller.add(a), 0)
        XCTAssertEqual(poller.add(fd: box.pollFD), 1)
        XCTAssertEqual(try poller.poll(timeoutMs: 0), [false, false])
        try b.send([[7]])
        XCTAssertEqual(try poller.poll(timeoutMs: 5000), [true, false])
        XCTAssertEqual(try a.receive(dontWait: true), [[7]])
        XCTAssertEqual(try poller.poll(timeoutMs: 0), [false, false])
    }

    func testMailboxWakesAPollerFromAnotherThread() throws {
        let box = Mailbox<String>()
        var poller = ZMQPoller()
        poller.add(fd: box.pollFD)
        XCTAssertEqual(try poller.poll(timeoutMs: 0), [false])
        XCTAssertEqual(box.drain(), [])
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            for i in 0..<100 { box.post("m\(i)") }
            done.signal()
        }
        thread.start()
        // Each poll blocks until a post's wake-up byte arrives (bounded); a post
        // onto an empty queue after a drain writes a new one.
        var got: [String] = []
        while got.count < 100 {
            guard try poller.poll(timeoutMs: 10_000) == [true] else { return XCTFail("no wake-up after \(got.count) messages") }
            got += box.drain()
        }
        XCTAssertEqual(got, (0..<100).map { "m\($0)" }, "every message, in order")
        // Once the poster is done, one more drain leaves nothing pending (a post's
        // wake-up byte can land after the drain that took its message).
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(box.drain(), [])
        XCTAssertEqual(try poller.poll(timeoutMs: 0), [false], "drain consumes the wake-ups")
        XCTAssertEqual(box.drain(), [])
        // Posting again wakes it again.
        box.post("again")
        XCTAssertEqual(try poller.poll(timeoutMs: 5000), [true])
        XCTAssertEqual(box.drain(), ["again"])
    }

    func testManyPostsWithoutDrainingDoNotBlock() throws {
        let box = Mailbox<Int>()
        // Far more than a pipe buffer of wake-up bytes if each post wrote one.
        for i in 0..<200_000 { box.post(i) }
        var poller = ZMQPoller()
        poller.add(fd: box.pollFD)
        XCTAssertEqual(try poller.poll(timeoutMs: 0), [true])
        let all = box.drain()
        XCTAssertEqual(all.count, 200_000)
        XCTAssertEqual(all.first, 0)
        XCTAssertEqual(all.last, 199_999)
    }

    func testLastEndpointResolvesTheWildcardPortAndPeersConnect() throws {
        let router = try ctx.socket(.router)
        try router.bind("tcp://127.0.0.1:*")
        let ep = try router.lastEndpoint()
        XCTAssertTrue(ep.hasPrefix("tcp://127.0.0.1:"), ep)
        let port = Int(ep.dropFirst("tcp://127.0.0.1:".count))
        XCTAssertNotNil(port)
        XCTAssertGreaterThan(port ?? 0, 0)
        XCTAssertLessThan(port ?? 0, 65536)
        let dealer = try ctx.socket(.dealer)
        try dealer.connect(ep)
        try dealer.send([Array("CVYW01".utf8), Array("HEARTBEAT".utf8)])
        let got = try receive(router)
        XCTAssertEqual(got?.count, 3)
        XCTAssertEqual(got?.dropFirst().map { $0 }, [Array("CVYW01".utf8), Array("HEARTBEAT".utf8)])
        XCTAssertEqual(got?.first?.isEmpty, false, "the ROUTER's identity frame")
    }

    func testErrorsCarryErrno() throws {
        let s = try ctx.socket(.pair)
        do {
            try s.bind("tcp://not-an-endpoint")
            XCTFail("bind must fail")
        } catch {
            XCTAssertNotEqual(error.errno, 0)
            XCTAssertTrue(error.operation.contains("zmq_bind"), error.operation)
        }
        s.close()
        XCTAssertThrowsError(try s.send([[1]])) { XCTAssertFalse(($0 as? ZMQError)?.isAgain ?? true) }
        XCTAssertThrowsError(try s.receive(dontWait: true))
        s.close() // closing twice is harmless
    }

    func testSubscriberGetsOnlyMatchingTopicsFromXPUB() throws {
        let pub = try ctx.socket(.xpub), sub = try ctx.socket(.sub)
        let ep = endpoint()
        try pub.bind(ep)
        try sub.connect(ep)
        try sub.subscribe("task.")
        // XPUB reports the subscription: once it is seen, publishing reaches the subscriber.
        XCTAssertEqual(try receive(pub), [[1] + Array("task.".utf8)])
        try pub.send([Array("stats".utf8), Array("{}".utf8)])
        try pub.send([Array("task.queued".utf8), Array("{\"a\":1}".utf8)])
        XCTAssertEqual(try receive(sub), [Array("task.queued".utf8), Array("{\"a\":1}".utf8)])
        XCTAssertNil(try sub.receive(dontWait: true))
    }

    func testLibraryVersionIsFour() {
        XCTAssertEqual(ZMQContext.version.major, 4)
    }
}
