import ConveyorClient
import ConveyorCore
import ConveyorProtocol
import XCTest

/// The client side of active/standby (spec §9.7), as both clients decide it.
final class BrokerEndpointsTests: XCTestCase {
    func testFollowsTheLeaderAndRingsOnSilence() {
        var e = BrokerEndpoints(parsing: "tcp://a:1, tcp://b:1,tcp://c:1")
        XCTAssertEqual(e.list, ["tcp://a:1", "tcp://b:1", "tcp://c:1"])
        XCTAssertTrue(e.failsOver)
        XCTAssertEqual(e.current, "tcp://a:1")
        let hop = e.notLeader(leader: "tcp://c:1")
        XCTAssertEqual(hop.endpoint, "tcp://c:1")
        XCTAssertEqual(hop.pauseMs, 0)
        XCTAssertEqual(e.next(), "tcp://a:1", "a ring: after the last comes the first")
        let unknown = e.notLeader(leader: "")
        XCTAssertEqual(unknown.endpoint, "tcp://b:1")
        XCTAssertEqual(unknown.pauseMs, BrokerEndpoints.unknownLeaderPauseMs)
        let itself = e.notLeader(leader: "tcp://b:1")
        XCTAssertEqual(itself.endpoint, "tcp://c:1", "a leader naming the broker that answered counts as unknown")
        let outside = e.notLeader(leader: "tcp://z:9")
        XCTAssertEqual(outside.endpoint, "tcp://z:9", "a leader outside the list is followed too")
    }

    func testSubmissionsGetKeysOnlyWhenAResendIsPossible() {
        let one = BrokerEndpoints(["tcp://a:1"])
        let spec = TaskSpec(type: "t")
        XCTAssertEqual(one.keyed(.submit(requestID: [1], spec: spec)), .submit(requestID: [1], spec: spec), "one broker: unchanged")
        let two = BrokerEndpoints(["tcp://a:1", "tcp://b:1"])
        guard case .submit(_, let keyed) = two.keyed(.submit(requestID: [1], spec: spec)) else { return XCTFail() }
        XCTAssertEqual(keyed.idempotencyKey?.count, 32)
        XCTAssertTrue(keyed.idempotencyKey?.allSatisfy(\.isHexDigit) ?? false)
        var mine = spec
        mine.idempotencyKey = "order-1"
        XCTAssertEqual(two.keyed(.submit(requestID: [1], spec: mine)), .submit(requestID: [1], spec: mine), "a caller's key is kept")
        guard case .submitBatch(_, let specs) = two.keyed(.submitBatch(requestID: [2], specs: [spec, mine])) else { return XCTFail() }
        XCTAssertEqual(specs[1].idempotencyKey, "order-1")
        XCTAssertNotNil(specs[0].idempotencyKey)
        XCTAssertNotEqual(specs[0].idempotencyKey, keyed.idempotencyKey, "random per submission")
        XCTAssertEqual(two.keyed(.ping(requestID: [3])), .ping(requestID: [3]))
    }
}
