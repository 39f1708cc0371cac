import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why: a full-screen view (`conveyor stats --watch`) borrows the terminal —
/// alternate screen, hidden cursor, keys without Enter or echo — and must give
/// it back exactly as it was however the program ends (q, Ctrl-C, SIGTERM).
/// `restore()` is idempotent and safe from the signal-handling queue.
final class TerminalScreen: @unchecked Sendable {
    private let lock = NSLock()
    private var saved: termios?
    private var active = false
    let inputFD: Int32 = STDIN_FILENO

    /// Enters the alternate screen; puts stdin (if a terminal) in non-canonical, no-echo mode.
    func enter() {
        lock.lock(); defer { lock.unlock() }
        guard !active else { return }
        active = true
        if isatty(inputFD) == 1 {
            var t = termios()
            if tcgetattr(inputFD, &t) == 0 {
                saved = t
                var raw = t
                raw.c_lflag &= ~tcflag_t(ICANON | ECHO)
                withUnsafeMutableBytes(of: &raw.c_cc) { cc in
                    cc[Int(VMIN)] = 0
                    cc[Int(VTIME)] = 0
                }
                _ = tcsetattr(inputFD, TCSANOW, &raw)
            }
        }
        write("\u{1B}[?1049h\u{1B}[?25l\u{1B}[H\u{1B}[2J")
    }

    /// Leaves the alternate screen and restores the saved terminal mode.
    func restore() {
        lock.lock(); defer { lock.unlock() }
        guard active else { return }
        active = false
        if var t = saved { _ = tcsetattr(inputFD, TCSANOW, &t) }
        write("\u{1B}[?25h\u{1B}[?1049l")
    }

    /// Draws a frame in place: cursor home, each line cleared to its end, the rest of the screen cleared.
    func draw(_ lines: [String]) {
        write("\u{1B}[H" + lines.map { $0 + "\u{1B}[K" }.joined(separator: "\r\n") + "\u{1B}[J")
    }

    /// Waits up to `timeoutMs` for a key; returns it, or nil.
    func key(timeoutMs: Int32) -> UInt8? {
        // Keys only come from a terminal; otherwise (stdin /dev/null or closed) just wait.
        guard isatty(inputFD) == 1 else {
            var none = pollfd(fd: -1, events: 0, revents: 0)
            _ = poll(&none, 1, timeoutMs)
            return nil
        }
        var p = pollfd(fd: inputFD, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, timeoutMs) > 0 else { return nil }
        var b: UInt8 = 0
        return read(inputFD, &b, 1) == 1 ? b : nil
    }

    private func write(_ s: String) { FileHandle.standardOutput.write(Data(s.utf8)) }
}

/// Rows and columns of the terminal on `fd`, nil when it is not one.
func terminalSize(_ fd: Int32) -> (rows: Int, columns: Int)? {
    var w = winsize()
    guard ioctl(fd, UInt(TIOCGWINSZ), &w) == 0, w.ws_col > 0 else { return nil }
    return (Int(w.ws_row), Int(w.ws_col))
}
