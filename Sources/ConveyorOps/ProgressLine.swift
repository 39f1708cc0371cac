/// Why: `conveyor submit --wait` on a terminal should show one live line —
/// bar, percent, message, elapsed time — redrawn in place, ending in the final
/// state. Rendering is a pure function of those values so it is unit-tested;
/// the command only decides when to redraw and whether stderr is a TTY.
public enum ProgressLine {
    /// `[██████░░░░]  60% working  0:02`, at most `width` columns.
    public static func render(percent: Int?, message: String, elapsed: Double, width: Int = 80, barWidth: Int = 20) -> String {
        let p = percent.map { min(100, max(0, $0)) }
        let filled = (p ?? 0) * barWidth / 100
        let bar = "[" + String(repeating: "█", count: filled) + String(repeating: "░", count: barWidth - filled) + "]"
        let pct = p.map { pad("\($0)%", 4) } ?? "   …"
        let head = "\(bar) \(pct) "
        let tail = "  \(clock(elapsed))"
        let room = max(0, width - head.count - tail.count)
        return head + clip(oneLine(message), room) + tail
    }

    /// The last line: the final state and the time it took.
    public static func final(state: String, elapsed: Double, detail: String = "") -> String {
        let mark = state == "succeeded" ? "✔" : "✘"
        let d = oneLine(detail)
        return "\(mark) \(state) after \(clock(elapsed))" + (d.isEmpty ? "" : ": \(clip(d, 200))")
    }

    /// `m:ss` (or `h:mm:ss`).
    public static func clock(_ seconds: Double) -> String {
        let s = max(0, Int(seconds))
        let (h, m, r) = (s / 3600, (s / 60) % 60, s % 60)
        let two = { (v: Int) in v < 10 ? "0\(v)" : "\(v)" }
        return h > 0 ? "\(h):\(two(m)):\(two(r))" : "\(m):\(two(r))"
    }

    static func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
    static func clip(_ s: String, _ n: Int) -> String { s.count <= n ? s : (n <= 1 ? String(s.prefix(n)) : String(s.prefix(n - 1)) + "…") }
    static func oneLine(_ s: String) -> String { String(s.map { $0.isNewline || $0 == "\t" ? " " : $0 }) }
}
