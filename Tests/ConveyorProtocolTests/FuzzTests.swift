import XCTest
import ConveyorCore
@testable import ConveyorProtocol

/// Seeded random and mutated frame sequences: every decoder must either decode
/// (and then re-encode to something that decodes to the same message) or throw
/// a ProtocolError with one of the three §3.4 codes. Never crash.
final class FuzzTests: XCTestCase {
    typealias RNG = SplitMix64

    static let codes: Set<String> = ["bad_request", "unsupported_version", "unknown_command"]

    /// Pieces that reach the interesting branches more often than random bytes do.
    static let dictionary: [[UInt8]] = [
        "CVYC01", "CVYW01", "CVYC02", "CVYW", "", "SUBMIT", "STATUS", "CANCEL", "STATS", "TASKS", "PING", "DEAD", "ACCEPTED",
        "REJECTED", "CANCELLED", "PONG", "ERROR", "PROGRESS", "FINISHED", "READY", "HEARTBEAT", "DONE", "FAIL", "DRAIN",
        "RETURN", "DISCONNECT", "TASK", "list", "retry", "purge", "0190f3c2a1b20001", "0190F3C2A1B20001", "0", "1", "3", "4",
        "100", "101", "10000", "604800000", "9223372036854775807", "9223372036854775808", "007", "-1", "pdf", "a,b", "a,,b",
        "max_attempts=3", "max_attempts=0", "idempotency_key=k", "idempotency_key=", "delay_ms=5", "run_at_ms=1",
        "backoff_ms=9", "backoff_max_ms=1", "retries=1", "=", "succeeded", "queued", "cancelled", "timed_out", "{}",
    ].map { Array($0.utf8) }

    func randomFrame(_ rng: inout RNG) -> [UInt8] {
        switch Int.random(in: 0..<10, using: &rng) {
        case 0..<6: return Self.dictionary.randomElement(using: &rng)!
        case 6..<8: return (0..<Int.random(in: 0...20, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        case 8: return (0..<Int.random(in: 0...70, using: &rng)).map { _ in UInt8.random(in: 48...57, using: &rng) }
        default: return Array(repeating: 0x52, count: Int.random(in: 60...200, using: &rng))
        }
    }

    func mutate(_ frames: [[UInt8]], _ rng: inout RNG) -> [[UInt8]] {
        var f = frames
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            switch Int.random(in: 0..<7, using: &rng) {
            case 0 where !f.isEmpty: f.remove(at: Int.random(in: 0..<f.count, using: &rng))
            case 1: f.insert(randomFrame(&rng), at: Int.random(in: 0...f.count, using: &rng))
            case 2 where !f.isEmpty: f[Int.random(in: 0..<f.count, using: &rng)] = randomFrame(&rng)
            case 3 where !f.isEmpty:
                let i = Int.random(in: 0..<f.count, using: &rng)
                if !f[i].isEmpty { f[i][Int.random(in: 0..<f[i].count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng) }
            case 4 where !f.isEmpty:
                let i = Int.random(in: 0..<f.count, using: &rng)
                f[i] = Array(f[i].prefix(Int.random(in: 0...f[i].count, using: &rng)))
            case 5 where !f.isEmpty: f.append(f[Int.random(in: 0..<f.count, using: &rng)])
            default: f.append(randomFrame(&rng))
            }
        }
        return f
    }

    /// Decodes with every decoder; checks the outcome. Returns how many decoded.
    func exercise(_ frames: [[UInt8]]) -> Int {
        var decoded = 0
        for direction in VectorTests.directions {
            do {
                let (value, encoded) = try decode(direction, frames)
                decoded += 1
                guard let again = try? decode(direction, encoded) else {
                    XCTFail("\(direction): re-encoding of \(frames.map { Value.bytes($0) }) does not decode")
                    continue
                }
                XCTAssertEqual(again.value, value, "\(direction): \(frames.map { Value.bytes($0) })")
            } catch let e as ProtocolError {
                XCTAssertTrue(Self.codes.contains(e.code), "\(direction): code \(e.code)")
                if let rid = e.requestID { XCTAssertLessThanOrEqual(rid.count, 64) }
            } catch {
                XCTFail("\(direction): \(error)")
            }
        }
        return decoded
    }

    func testMutatedVectorsNeverCrash() throws {
        let (valid, invalid) = try VectorFile.load()
        let seeds = (valid + invalid).map(\.frames)
        var rng = RNG(seed: 0xC0FFEE)
        var decoded = 0
        for _ in 0..<6000 {
            decoded += exercise(mutate(seeds.randomElement(using: &rng)!, &rng))
        }
        XCTAssertGreaterThan(decoded, 300, "mutations should often stay valid")
    }

    func testRandomFrameSequencesNeverCrash() {
        var rng = RNG(seed: 42)
        var decoded = 0
        for _ in 0..<6000 {
            var frames: [[UInt8]] = []
            if Bool.random(using: &rng) { frames.append([Array("CVYC01".utf8), Array("CVYW01".utf8)].randomElement(using: &rng)!) }
            for _ in 0..<Int.random(in: 0...9, using: &rng) { frames.append(randomFrame(&rng)) }
            decoded += exercise(frames)
        }
        XCTAssertGreaterThan(decoded, 0)
    }
}
