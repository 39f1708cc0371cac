import ConveyorClient
import ConveyorCore
import XCTest

final class BrokerSmokeTests: ClusterTestCase {
    func testSubmitAndWaitRoundTrip() throws {
        try cluster.startBroker()
        try cluster.startWorker(name: "w1")
        let r = try cluster.cli(["submit", "--broker", cluster.clients, "--type", "pdf", "--priority", "high", "--payload", "hello", "--wait"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.out, "hello")
        let stats = try cluster.stats()
        XCTAssertEqual(stats["total_success"] as? Int, 1)
    }
}
