import ConveyorOps
import Foundation
import XCTest

/// The TTY renderings as pure functions: the progress line of `submit --wait`
/// and the `stats --watch` screen on a sample STATS/TASKS pair.
final class TerminalRenderingTests: XCTestCase {
    func testProgressLine() {
        XCTAssertEqual(ProgressLine.render(percent: 60, message: "working", elapsed: 2.4, width: 80, barWidth: 10),
                       "[██████░░░░]  60% working  0:02")
        XCTAssertEqual(ProgressLine.render(percent: nil, message: "queued", elapsed: 0, width: 80, barWidth: 4), "[░░░░]    … queued  0:00")
        XCTAssertEqual(ProgressLine.render(percent: 250, message: "", elapsed: 3725, width: 80, barWidth: 2), "[██] 100%   1:02:05")
        let narrow = ProgressLine.render(percent: 5, message: "a very long message\nwith a newline that will not fit", elapsed: 61, width: 40, barWidth: 10)
        XCTAssertEqual(narrow.count, 40)
        XCTAssertTrue(narrow.hasSuffix("…  1:01"), narrow)
        XCTAssertEqual(ProgressLine.final(state: "succeeded", elapsed: 3), "✔ succeeded after 0:03")
        XCTAssertEqual(ProgressLine.final(state: "failed", elapsed: 75, detail: "boom\n"), "✘ failed after 1:15: boom ")
    }

    static var stats: [String: Any] { [
        "version": "0.4.0", "is_running": true, "uptime_s": 3723, "timestamp": "2026-12-01T09:00:00.000Z",
        "queue_by_priority": ["urgent": 2, "high": 0, "normal": 5, "low": 1], "delayed": 3, "queue_size": 8, "max_queue_size": 100,
        "workers_connected": 3, "workers_busy": 2, "current_processing": 2, "max_workers": 3,
        "tasks_submitted": 130, "total_processed": 120, "total_success": 110, "total_failed": 8, "total_timeout": 2,
        "total_cancelled": 1, "dead_letters": 4,
        "dispatch_latency_ms": ["p50": 0.4, "p90": 1.25, "p99": 3.0, "max": 9.1, "count": 120],
        "types": ["youtube": ["queued": 4, "running": 1, "concurrency_limit": 2, "rate_limit": ["limit": 15, "window_s": 60, "in_window": 7],
                              "cost_limit": NSNull(), "held_until": NSNull(), "paused": false, "blocked": "rate_limit"],
                  "pdf": ["queued": 0, "running": 1, "concurrency_limit": NSNull(), "rate_limit": NSNull(), "cost_limit": NSNull(),
                          "held_until": NSNull(), "paused": true, "blocked": NSNull()]],
    ] }
    static var tasks: [String: Any] { [
        "running": [["task_id": "0190f3c2a1b20001", "type": "youtube", "priority": "HIGH", "worker": "worker-youtube-1", "state": "running",
                     "progress": ["percent": 40, "message": "transcribing"], "started_at": NSNull()]],
        "queued": [["task_id": "0190f3c2a1b20002", "type": "pdf", "priority": "URGENT", "queue_position": 0, "waiting_for": "paused"]],
        "queue_size": 8,
    ] }

    func testStatsScreen() {
        var later = Self.stats
        later["tasks_submitted"] = 140
        later["total_processed"] = 125
        later["total_success"] = 114
        later["total_failed"] = 9
        let view = StatsView(title: "tcp://127.0.0.1:5555", width: 120, height: 40)
        let lines = view.render(current: .init(stats: later, at: 12), previous: .init(stats: Self.stats, at: 10), tasks: Self.tasks)
        let screen = lines.joined(separator: "\n")
        XCTAssertEqual(lines.first, "conveyor 0.4.0 — tcp://127.0.0.1:5555 — live — up 1h02m — 2026-12-01T09:00:00.000Z")
        XCTAssertTrue(screen.contains("QUEUE     urgent 2  high 0  normal 5  low 1  delayed 3  total 8/100"), screen)
        XCTAssertTrue(screen.contains("WORKERS   3 connected  2 busy  1 idle    running 2/3"), screen)
        XCTAssertTrue(screen.contains("RATES     submitted 5.0/s  processed 2.5/s  succeeded 2.0/s  failed 0.5/s  timed out 0.0/s"), screen)
        XCTAssertTrue(screen.contains("LATENCY   dispatch p50 0.4 ms  p90 1.2 ms  p99 3.0 ms  max 9.1 ms  (120 dispatches)"), screen)
        XCTAssertTrue(screen.contains("dead letters 4"), screen)
        XCTAssertTrue(lines.contains { $0.hasPrefix("youtube") && $0.contains("7/15 per 60s") && $0.contains("waiting: rate_limit") }, screen)
        XCTAssertTrue(lines.contains { $0.hasPrefix("pdf") && $0.hasSuffix("paused") }, screen)
        XCTAssertTrue(lines.contains { $0.contains("0190f3c2a1b20001") && $0.contains("worker-youtube-1") && $0.contains("40% transcribing") }, screen)
        XCTAssertTrue(lines.contains { $0.contains("#0") && $0.contains("0190f3c2a1b20002") && $0.contains("paused") }, screen)
        XCTAssertEqual(lines.last, "q quit")
        XCTAssertTrue(lines.allSatisfy { $0.count <= 120 })
    }

    func testScreenFitsSmallTerminalsAndNeedsTwoSamplesForRates() {
        let lines = StatsView(title: "b", width: 40, height: 12).render(current: .init(stats: Self.stats, at: 1), previous: nil, tasks: nil)
        XCTAssertLessThanOrEqual(lines.count, 12)
        XCTAssertTrue(lines.allSatisfy { $0.count <= 40 }, "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("RATES     (after the next refresh)") || $0.hasPrefix("RATES") })
        XCTAssertEqual(lines.last, "q quit")
        XCTAssertNil(StatsView.rates(previous: nil, current: .init(stats: Self.stats, at: 1)))
    }
}
