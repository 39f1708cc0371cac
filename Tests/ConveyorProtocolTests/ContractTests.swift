import Foundation
import XCTest
@testable import ConveyorProtocol

/// The contracts between processes are defined once in ConveyorProtocol; these
/// tests hold them to the spec's tables, so that a code, stats member or
/// status member added to one and not the other fails here.
final class ContractTests: XCTestCase {
    private static let spec: String = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("proto/conveyor-protocol.md")
        return (try? String(contentsOf: url, encoding: .utf8)) ?? ""
    }()

    /// The first-column names (in backticks) of the first table after `heading`.
    private func tableNames(after heading: String) throws -> [String] {
        let text = Self.spec
        let start = try XCTUnwrap(text.range(of: heading), "spec has no '\(heading)'")
        var names: [String] = []
        var inTable = false
        for line in text[start.upperBound...].split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("|") {
                inTable = true
                let first = line.split(separator: "|").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                if first.hasPrefix("`"), first.hasSuffix("`") { names.append(String(first.dropFirst().dropLast())) }
            } else if inTable {
                break
            }
        }
        return names
    }

    func testErrorCodesAreTheSpecsTable() throws {
        XCTAssertEqual(try tableNames(after: "## 10. Error codes"), ErrorCode.allCases.map(\.rawValue))
    }

    func testStatsMembersAreTheSpecsTable() throws {
        XCTAssertEqual(try tableNames(after: "### 7.4 Stats object"), StatsMember.allCases.map(\.rawValue))
    }

    func testStatusMembersAreTheSpecsTable() throws {
        XCTAssertEqual(try tableNames(after: "**Status object.**"), StatusMember.allCases.map(\.rawValue))
    }

    func testLimitsMatchTheCodecs() {
        XCTAssertEqual(ClientRequest.maxRequestIDBytes, Limits.requestIDBytes)
        XCTAssertEqual(WorkerMessage.maxCapacity, Limits.maxCapacity)
        // The codec refuses what §11 refuses, at the bound and just past it.
        let atBound = ["CVYC01", "SUBMIT", String(repeating: "r", count: Limits.requestIDBytes), "t", "1", "", ""].map { Array($0.utf8) }
        XCTAssertNoThrow(try ClientRequest.decode(atBound))
        var past = atBound
        past[2].append(UInt8(ascii: "r"))
        XCTAssertThrowsError(try ClientRequest.decode(past))
        let key = { (n: Int) in ["CVYC01", "SUBMIT", "r", "t", "1", "", "", "idempotency_key=" + String(repeating: "k", count: n)].map { Array($0.utf8) } }
        XCTAssertNoThrow(try ClientRequest.decode(key(Limits.idempotencyKeyBytes)))
        XCTAssertThrowsError(try ClientRequest.decode(key(Limits.idempotencyKeyBytes + 1)))
    }
}
