import Foundation
import Logging
import XCTest
import ZeroMQ
@testable import ConveyorTransport

/// Key files in the zcert format, allowlists, the ZAP decision and the
/// loopback rule — the pure parts of securing a deployment.
final class CurveTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("conveyor-keys-\(getpid())-\(UUID().uuidString.prefix(6))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    private func expect(_ reason: KeyFileError.Reason, _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            XCTAssertEqual((e as? KeyFileError)?.reason, reason, "\(e)", file: file, line: line)
        }
    }

    func testCurveIsAvailable() { XCTAssertTrue(ZMQCurve.isAvailable, "Debian's libzmq5 is built with libsodium") }

    func testWriteThenLoadRoundTripsWithSafePermissions() throws {
        let cert = try CurveCertificate.generate()
        let files = try cert.write(name: "w1", directory: dir)
        XCTAssertEqual(try CurveCertificate.load(files.secretFile, requireSecret: true), cert)
        XCTAssertEqual(try CurveCertificate.load(files.publicFile), CurveCertificate(publicKey: cert.publicKey, secretKey: nil))
        var st = stat()
        XCTAssertEqual(stat(files.secretFile, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        expect(.exists) { _ = try cert.write(name: "w1", directory: dir) }
        expect(.noSecretKey) { _ = try CurveCertificate.load(files.publicFile, requireSecret: true) }
    }

    /// The file pyzmq's `zmq.auth.create_certificates` writes (czmq's format).
    func testReadsAPyzmqCertificate() throws {
        let text = """
            #   ****  Generated on 2024-07-15 09:30:00.000000 by pyzmq  ****
            #   ZeroMQ CURVE **Secret** Certificate
            #   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

            metadata
            curve
                public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
                secret-key = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
            """
        let c = try CurveCertificate.parse(text)
        XCTAssertEqual(c.publicKey, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")
        XCTAssertEqual(c.secretKey, "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6")
    }

    func testRefusesDamagedKeyFiles() throws {
        let good = try CurveCertificate.generate()
        expect(.noPublicKey) { _ = try CurveCertificate.parse("metadata\ncurve\n") }
        expect(.noPublicKey) { _ = try CurveCertificate.parse("") } // truncated to nothing
        expect(.wrongLength("public-key", 39)) { _ = try CurveCertificate.parse("curve\n    public-key = \"\(good.publicKey.dropLast())\"\n") }
        expect(.wrongLength("public-key", 41)) { _ = try CurveCertificate.parse("curve\n    public-key = \"\(good.publicKey)x\"\n") }
        expect(.badZ85("public-key")) { _ = try CurveCertificate.parse("curve\n    public-key = \"\(String(repeating: "\"", count: 40))\"\n") }
        let other = try CurveCertificate.generate()
        expect(.mismatchedPair) {
            _ = try CurveCertificate.parse("curve\n    public-key = \"\(good.publicKey)\"\n    secret-key = \"\(other.secretKey!)\"\n")
        }
        expect(.missing) { _ = try CurveCertificate.load(dir + "/nope.key") }
    }

    func testRefusesASecretFileReadableByOthers() throws {
        let files = try CurveCertificate.generate().write(name: "open", directory: dir)
        chmod(files.secretFile, 0o640)
        expect(.tooOpen(mode: 0o640)) { _ = try CurveCertificate.load(files.secretFile) }
        chmod(files.secretFile, 0o604)
        XCTAssertThrowsError(try CurveCertificate.load(files.secretFile)) { e in
            XCTAssertTrue("\(e)".contains("chmod 600"), "the message says how to fix it: \(e)")
        }
        chmod(files.publicFile, 0o644)
        XCTAssertNoThrow(try CurveCertificate.load(files.publicFile), "a public key may be world-readable")
    }

    // MARK: Allowlists

    private func keyDir() throws -> (CurveDirectory, client: CurveCertificate, worker: CurveCertificate, admin: CurveCertificate, sub: CurveCertificate) {
        _ = try CurveCertificate.generate().write(name: "broker", directory: dir)
        var made: [CurveCertificate] = []
        for (name, role) in [("c1", "clients"), ("w1", "workers"), ("gw", "admins"), ("dash", "subscribers")] {
            let c = try CurveCertificate.generate()
            try c.writePublic(name: name, directory: "\(dir!)/\(role)")
            made.append(c)
        }
        return (try CurveDirectory(path: dir), made[0], made[1], made[2], made[3])
    }

    func testAllowlistsByRole() throws {
        let (d, client, worker, admin, sub) = try keyDir()
        XCTAssertTrue(d.permits(client.publicKey, as: .client))
        XCTAssertFalse(d.permits(client.publicKey, as: .worker), "a client key cannot register as a worker")
        XCTAssertTrue(d.permits(worker.publicKey, as: .worker))
        XCTAssertFalse(d.permits(worker.publicKey, as: .client), "a worker key cannot submit")
        XCTAssertFalse(d.permits(worker.publicKey, as: .subscriber))
        XCTAssertTrue(d.permits(admin.publicKey, as: .client) && d.permits(admin.publicKey, as: .subscriber))
        XCTAssertFalse(d.permits(admin.publicKey, as: .worker))
        XCTAssertTrue(d.isAdmin(admin.publicKey) && !d.isAdmin(client.publicKey))
        XCTAssertTrue(d.permits(sub.publicKey, as: .subscriber) && !d.permits(sub.publicKey, as: .client))
        XCTAssertFalse(d.permits(try CurveCertificate.generate().publicKey, as: .client), "unknown key")
    }

    func testReloadReportsRevocationsAndKeepsOldListsOnABadFile() throws {
        let (d, client, _, _, _) = try keyDir()
        try FileManager.default.removeItem(atPath: "\(dir!)/clients/c1.key")
        let r = d.reload()
        XCTAssertEqual(r.revoked, ["clients/\(client.publicKey)"])
        XCTAssertFalse(d.permits(client.publicKey, as: .client))
        // A damaged file mid-edit: the previous lists stay.
        try "garbage".write(toFile: "\(dir!)/clients/bad.key", atomically: true, encoding: .utf8)
        let bad = d.reload()
        XCTAssertNotNil(bad.error)
        XCTAssertTrue(bad.revoked.isEmpty)
    }

    func testZAPAnswersByDomainAndKey() throws {
        let (d, client, worker, _, _) = try keyDir()
        let zap = ZAPHandler(context: ZMQContext(), directory: d, logger: Logger(label: "test"))
        func request(_ domain: String, _ key: String, mechanism: String = "CURVE") -> [[UInt8]] {
            [Array("1.0".utf8), Array("r1".utf8), Array(domain.utf8), Array("127.0.0.1".utf8), [], Array(mechanism.utf8),
             ZMQCurve.z85Decode(key) ?? []]
        }
        let ok = zap.answer(request("clients", client.publicKey))
        XCTAssertEqual(ok[2], Array("200".utf8))
        XCTAssertEqual(ok[4], Array(client.publicKey.utf8), "User-Id is the key")
        XCTAssertEqual(zap.answer(request("workers", client.publicKey))[2], Array("400".utf8))
        XCTAssertEqual(zap.answer(request("workers", worker.publicKey))[2], Array("200".utf8))
        XCTAssertEqual(zap.answer(request("clients", worker.publicKey, mechanism: "NULL"))[2], Array("400".utf8))
        XCTAssertEqual(zap.answer(request("elsewhere", client.publicKey))[2], Array("400".utf8))
        XCTAssertEqual(zap.answer([Array("2.0".utf8)])[2], Array("500".utf8))
        XCTAssertEqual(zap.authFailures, 4)
    }

    // MARK: The loopback rule

    func testOnlyLoopbackEndpointsAreLocal() {
        for ep in ["tcp://127.0.0.1:5555", "tcp://127.0.0.1:*", "tcp://127.1.2.3:1", "tcp://localhost:5555", "tcp://[::1]:5555",
                   "ipc:///tmp/conveyor.sock", "inproc://broker"] {
            XCTAssertTrue(EndpointRule.isLocal(ep), ep)
        }
        for ep in ["tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://10.0.0.5:5555", "tcp://192.168.1.2:5555", "tcp://eth0:5555",
                   "tcp://[::]:5555", "tcp://example.com:5555", "tcp://127.0.0.1.evil:5555", "tcp://128.0.0.1:1", "udp://127.0.0.1:1"] {
            XCTAssertFalse(EndpointRule.isLocal(ep), ep)
        }
        XCTAssertTrue(EndpointRule.refusal("tcp://*:5555", flag: "--clients").contains("--curve-dir"))
        XCTAssertTrue(EndpointRule.refusal("tcp://*:5555", flag: "--clients").contains("--insecure"))
    }
}
